"""Fuzzing both transports, on SQLite and on PostgreSQL, bounded in time.

- random bytes and mutated valid messages (hypothesis) to every RPC;
- structured junk JSON through the real grpcurl;
- random paths, query strings, headers, methods and bodies to every HTTP route.

Every answer is a status other than INTERNAL and UNKNOWN, or an HTTP code below
500; no refusal carries a traceback or an exception's class name; the store's
revision moves only by the writes that were answered OK; the server is SERVING
at the end and its log has no traceback.

Reproducible: a failing example is saved in hypothesis's example database (EXAMPLES,
under .hypothesis/, which git ignores) and replayed first by the next run; the failure
prints it, and a `@reproduce_failure` line (print_blob). `pytest --hypothesis-seed=N`
replays a whole run's draws. The grpcurl junk, drawn up front, is drawn from
JOBSTATUS_FUZZ_SEED (random when unset), which every failure of it prints.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import grpc
import httpx
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

from jobstatus.v1 import catalog_import_pb2, dataset_pb2, delivery_pb2, map_import_pb2
from tests.conftest import Stubs
from tests.grpc_api.test_hostile import revision
from tests.serverproc import ServerProcess

GRPCURL = Path(sys.executable).parent / "grpcurl"
BAD_CODES = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
# A traceback, or a Python exception's class name, in an answer.
LEAK = re.compile(r"Traceback|File \"|\b[A-Z][A-Za-z]*(?:Error|Exception)\b|<class ")
METHODS: list[MethodDescriptor] = [
    method
    for module, name in (
        (map_import_pb2, "MapImportService"),
        (delivery_pb2, "DeliveryService"),
        (dataset_pb2, "DatasetService"),
        (catalog_import_pb2, "CatalogImportService"),
    )
    for method in module.DESCRIPTOR.services_by_name[name].methods
]
WRITES = ("Create", "Update", "Start")
# Failing examples, kept between runs (see the module's docstring).
EXAMPLES = DirectoryBasedExampleDatabase(
    Path(__file__).resolve().parents[2] / ".hypothesis" / "examples"
)
FUZZ = settings(
    max_examples=600,
    deadline=None,
    database=EXAMPLES,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
JUNK_SEED = int(os.environ.get("JOBSTATUS_FUZZ_SEED") or random.randrange(2**32))


def path_of(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def request_type(method: MethodDescriptor) -> type[Message]:
    made: type[Message] = message_factory.GetMessageClass(method.input_type)
    return made


def filled(descriptor: Descriptor, depth: int = 0) -> dict[str, Any]:
    """A plausible value for every field, as a dict for the message's constructor."""
    values: dict[str, Any] = {}
    for f in descriptor.fields:
        if f.containing_oneof is not None and f.containing_oneof.fields[0] is not f:
            continue
        value: Any
        if f.type == FieldDescriptor.TYPE_MESSAGE:
            inner = f.message_type
            assert inner is not None
            if depth > 2 or inner.GetOptions().map_entry:
                continue
            if inner.full_name.startswith("google.protobuf."):
                continue
            value = filled(inner, depth + 1)
        elif f.type == FieldDescriptor.TYPE_STRING:
            value = "fz-1"
        elif f.type == FieldDescriptor.TYPE_BYTES:
            value = b"fz"
        elif f.type == FieldDescriptor.TYPE_BOOL:
            value = True
        elif f.type == FieldDescriptor.TYPE_ENUM:
            assert f.enum_type is not None
            value = f.enum_type.values[-1].number
        elif f.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            value = 1.5
        else:
            value = 1
        values[f.name] = [value] if f.is_repeated else value
    return values


def sample(method: MethodDescriptor) -> bytes:
    """A well-formed request of the method, as bytes."""
    message = request_type(method)(**filled(method.input_type))
    return message.SerializeToString()


@dataclass
class Tally:
    """What the fuzzing saw: writes answered OK (each may move the revision by one)."""

    ok_writes: int = 0
    codes: dict[str, int] = field(default_factory=dict)

    def saw(self, method: MethodDescriptor, code: grpc.StatusCode) -> None:
        self.codes[code.name] = self.codes.get(code.name, 0) + 1
        if code == grpc.StatusCode.OK and method.name.startswith(WRITES):
            self.ok_writes += 1


@dataclass
class Fuzzed:
    server: ServerProcess
    stubs: Stubs
    start: int
    tally: Tally
    http: httpx.Client


@pytest.fixture(scope="module")
def server(database_url: str) -> Iterator[ServerProcess]:
    """This module's server, with a view wait shorter than the HTTP client's read timeout:
    a fuzzed `X-Min-Revision` ahead of the store waits that long, then answers 504."""
    proc = ServerProcess(database_url, extra_args=["--view-wait", "0.5"]).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def fuzzed(server: ServerProcess, stubs: Stubs) -> Iterator[Fuzzed]:
    """The module's server; at the end of the module, the checks every fuzz test shares."""
    timeout = httpx.Timeout(10, read=2)
    with httpx.Client(base_url=server.http_url, timeout=timeout) as http:
        made = Fuzzed(server, stubs, revision(stubs), Tally(), http)
        yield made
    health = made.stubs.health.Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert made.start <= revision(made.stubs) <= made.start + made.tally.ok_writes
    assert "Traceback" not in server.log(), server.log()


def call(fuzzed: Fuzzed, method: MethodDescriptor, data: bytes) -> None:
    channel = fuzzed.stubs.channel
    code = grpc.StatusCode.OK
    message = ""
    try:
        if method.server_streaming:
            stream = channel.unary_stream(path_of(method), None, None)(data, timeout=1.0)
            try:
                next(iter(stream))
            except StopIteration:
                pass
            finally:
                stream.cancel()  # type: ignore[no-untyped-call]
        else:
            # A read may wait for its min_revision until its deadline: keep that short.
            waits = "min_revision" in method.input_type.fields_by_name
            channel.unary_unary(path_of(method), None, None)(data, timeout=1 if waits else 10)
    except grpc.RpcError as error:
        assert isinstance(error, grpc.Call)
        code, message = error.code(), error.details() or ""
    if code in (grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED):
        waits = "min_revision" in method.input_type.fields_by_name
        assert method.server_streaming or waits, (method.name, code, message)
    assert code not in BAD_CODES, (method.name, data.hex(), code, message)
    assert not LEAK.search(message), (method.name, data.hex(), message)
    fuzzed.tally.saw(method, code)


@FUZZ
@given(method=st.sampled_from(METHODS), data=st.binary(max_size=300))
def test_random_bytes_to_every_rpc(fuzzed: Fuzzed, method: MethodDescriptor, data: bytes) -> None:
    call(fuzzed, method, data)


@st.composite
def mutated(draw: st.DrawFn) -> tuple[MethodDescriptor, bytes]:
    method = draw(st.sampled_from(METHODS))
    data = bytearray(sample(method))
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.integers(0, max(0, len(data))))
        how = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "nest"]))
        if how == "flip" and data:
            data[min(where, len(data) - 1)] ^= 1 << draw(st.integers(0, 7))
        elif how == "insert":
            data[where:where] = draw(st.binary(min_size=1, max_size=8))
        elif how == "delete":
            del data[where : where + draw(st.integers(1, 8))]
        elif how == "truncate":
            del data[where:]
        else:  # groups nested deeper than any parser allows
            data[where:where] = b"\x0b" * 120
    return method, bytes(data)


@FUZZ
@given(case=mutated())
def test_mutated_messages_to_every_rpc(
    fuzzed: Fuzzed, case: tuple[MethodDescriptor, bytes]
) -> None:
    call(fuzzed, *case)


# --- structured junk through grpcurl ---------------------------------------------------------

JUNK_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.text(max_size=40),
    st.sampled_from(["\x00", "\ud7ff\u00b2", "9" * 400, "NaN", "1e999", "-1", "Done", ""]),
)


@st.composite
def junk_json(draw: st.DrawFn) -> tuple[MethodDescriptor, str]:
    method = draw(st.sampled_from([m for m in METHODS if not m.server_streaming]))
    names = [f.json_name for f in method.input_type.fields] + ["noSuchField"]
    value = st.recursive(
        JUNK_SCALARS,
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(st.sampled_from([*names, "status", "id"]), inner, max_size=3)
        ),
        max_leaves=8,
    )
    body = draw(st.dictionaries(st.sampled_from(names), value, max_size=4))
    return method, json.dumps(body)


def grpcurl(server: ServerProcess, method: MethodDescriptor, body: str) -> tuple[int, str]:
    target = f"{method.containing_service.full_name}/{method.name}"
    result = subprocess.run(
        [str(GRPCURL), "-plaintext", "-max-time", "10", "-d", "@", server.address, target],
        input=body,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return result.returncode, result.stdout + result.stderr


def test_junk_json_through_grpcurl(fuzzed: Fuzzed) -> None:
    cases: list[tuple[MethodDescriptor, str]] = []

    @seed(JUNK_SEED)
    @settings(max_examples=24, deadline=None, database=None)
    @given(case=junk_json())
    def collect(case: tuple[MethodDescriptor, str]) -> None:
        cases.append(case)

    collect()
    replay = f"(replay these cases: JOBSTATUS_FUZZ_SEED={JUNK_SEED})"
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda c: grpcurl(fuzzed.server, *c), cases))
    for (method, body), (code, output) in zip(cases, results, strict=True):
        # grpcurl exits 64 + the status code: 66 UNKNOWN, 77 INTERNAL.
        assert code not in (64 + 2, 64 + 13), (replay, method.name, body, output)
        assert "Traceback" not in output and "<class " not in output, (replay, body, output)
        if code == 0 and method.name.startswith(WRITES):
            fuzzed.tally.ok_writes += 1


# --- HTTP ------------------------------------------------------------------------------------

ROUTES = [
    "/api/v1/map/import/status/{}",
    "/api/v2/map/import/status/{}",
    "/api/v1/delivery/preparedDelivery/{}",
    "/datasets/{}/status",
    "/api/v2/import/status/{}",
    "/api/v1/watch/{}",
    "/api/v1/watch/map_import",
    "/api/v1/history/{}/{}",
    "/api/v1/history/map_import/{}",
    "/metrics",
    "/healthz",
    "/openapi.json",
    "/dashboard/kinds.json",
    "/{}",
]
PARAMS = [
    "ids",
    "start_revision",
    "until_settled",
    "heartbeat",
    "envelope",
    "api_key",
    "source",
    "private_key",
    "page_size",
    "page_token",
    "junk",
]
HEADERS = [
    "x-api-key",
    "authorization",
    "api-key",
    "last-event-id",
    "x-min-revision",
    "host",
    "accept",
    "content-type",
    "x-junk",
]
SEGMENT = st.text(max_size=30) | st.sampled_from(
    ["map_import", "prepared_delivery", "dataset", "catalog_import", str(uuid.uuid4()), "1"]
)
VALUE = st.text(max_size=40) | st.sampled_from(["0", "\u00b2", "9" * 4301, "true", "0.5", "\x00"])
HEADER_VALUE = st.binary(max_size=60).map(
    lambda raw: bytes(b for b in raw if b >= 0x20 and b != 0x7F)
) | st.sampled_from([b"0", "\u00b2".encode(), b"9" * 500, b"Bearer x", b"jsk_0_0"])


@st.composite
def http_request(draw: st.DrawFn) -> tuple[str, str, list[tuple[str, Any]], list[Any], bytes]:
    template = draw(st.sampled_from(ROUTES))
    segments = [draw(SEGMENT) for _ in range(template.count("{}"))]
    encode = draw(st.booleans())
    path = template.format(*(quote(s, safe="") if encode else quote(s, safe="/") for s in segments))
    query = draw(st.lists(st.tuples(st.sampled_from(PARAMS), VALUE), max_size=4))
    headers = draw(st.lists(st.tuples(st.sampled_from(HEADERS), HEADER_VALUE), max_size=3))
    method = draw(
        st.sampled_from(["GET", "GET", "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"])
    )
    body = draw(st.binary(max_size=64)) if method in ("POST", "PUT") else b""
    return method, path, query, [(k.encode(), v) for k, v in headers], body


def _asks_min_revision(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether a request names a revision to wait for (X-Min-Revision, a number > 0)."""
    return any(
        name.lower() == b"x-min-revision" and value.strip().isdigit() and int(value) > 0
        for name, value in headers
    )


@settings(FUZZ, max_examples=500)
@given(case=http_request())
def test_random_http_requests_to_every_route(
    fuzzed: Fuzzed, case: tuple[str, str, list[tuple[str, Any]], list[Any], bytes]
) -> None:
    method, path, query, headers, body = case
    client = fuzzed.http
    try:
        request = client.build_request(
            method, path, params=list(query), headers=headers, content=body or None
        )
        response = client.send(request, stream=True)
    except (httpx.LocalProtocolError, httpx.InvalidURL, httpx.UnsupportedProtocol):
        return  # a request the client itself refuses to send: it never reached the server
    try:
        streaming = response.headers.get("content-type", "").startswith("text/event-stream")
        text = "" if streaming else response.read().decode("utf-8", "replace")
    finally:
        response.close()
    if response.status_code == 504 and _asks_min_revision(headers):
        # The documented answer of a read whose X-Min-Revision this server has not
        # reached within --view-wait (README, Configuration): the server is at fault
        # only if it says anything else.
        assert "has not yet seen revision" in text, (method, path, headers, text)
        return
    assert response.status_code < 500, (method, path, query, headers, response.status_code, text)
    if response.status_code >= 400:
        assert not LEAK.search(text), (method, path, query, text)

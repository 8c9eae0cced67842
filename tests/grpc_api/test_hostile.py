"""Hostile input, one regression test per defect of issue 10: undecodable messages,
sizes adding up past int64, SSE resume points a parser must refuse, NUL in SSE ids,
open streams of a revoked key. On SQLite and on PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import field_mask_pb2
from sqlalchemy import update

from jobstatus.v1 import delivery_pb2 as dl
from jobstatus.v1 import map_import_pb2 as mi
from jobstatus.v1 import watch_pb2
from jobstatus_server.access import auth, credentials
from tests.conftest import Databases, Stubs
from tests.restkit import connect, keyed_server, metadata
from tests.rpcerrors import fails, failure_of
from tests.serverproc import ServerProcess

INT64_MAX = 2**63 - 1
GRPCURL = str(Path(sys.executable).parent / "grpcurl")
UNDECODABLE = {
    "truncated": bytes.fromhex("0a056162"),
    "bad UTF-8": b"\x0a\x02\xff\xfe",
    "random": bytes.fromhex("d7f1a0c3ff0e9b22"),
    "101 nested groups": b"\x0b" * 101 + b"\x0c" * 101,
}
LEAKS = ("Traceback", "Error:", "Exception", "DecodeError", "ValueError", "<class")


def revision(stubs: Stubs) -> int:
    """The store's revision: the synced marker of a fresh watch."""
    call = stubs.maps.WatchMapImportStatus(mi.WatchMapImportStatusRequest(), timeout=10)
    try:
        for event in call:
            if event.type == watch_pb2.WATCH_EVENT_TYPE_SYNCED:
                return int(event.revision)
    finally:
        call.cancel()  # type: ignore[no-untyped-call]
    raise AssertionError("the watch ended before its synced marker")


def no_leak(text: str) -> None:
    for word in LEAKS:
        assert word not in text, text


@pytest.mark.parametrize("method", ["GetMapImportStatus", "WatchMapImportStatus"])
@pytest.mark.parametrize("name", sorted(UNDECODABLE))
def test_an_undecodable_message_is_invalid_argument(
    stubs: Stubs, server: ServerProcess, method: str, name: str
) -> None:
    path = f"/jobstatus.v1.MapImportService/{method}"
    before = revision(stubs)
    if method.startswith("Watch"):
        call = stubs.channel.unary_stream(path, None, None)
        failure = fails(lambda: list(call(UNDECODABLE[name], timeout=10)))
    else:
        failure = fails(
            lambda: stubs.channel.unary_unary(path, None, None)(UNDECODABLE[name], timeout=10)
        )
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.message.startswith("invalid request: the request is not a valid jobstatus.v1.")
    assert failure.bad_request is not None and failure.fields
    no_leak(failure.message)
    assert "Traceback" not in server.log()
    assert revision(stubs) == before


def test_artifact_sizes_past_int64_are_invalid_argument(stubs: Stubs, uid: str) -> None:
    artifacts = [
        dl.Artifact(item_key="a", size=INT64_MAX, url="https://x/a"),
        dl.Artifact(item_key="b", size=1, url="https://x/b"),
    ]
    start = dl.PREPARED_DELIVERY_STATUS_START
    before = revision(stubs)
    failure = fails(
        lambda: stubs.deliveries.CreatePreparedDelivery(
            dl.CreatePreparedDeliveryRequest(
                prepared_delivery=dl.PreparedDelivery(
                    catalog_id=uid, status=start, artifacts=artifacts
                )
            )
        )
    )
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.fields == ["prepared_delivery.artifacts[1].size"]
    # The same on an update of an existing delivery.
    stubs.deliveries.CreatePreparedDelivery(
        dl.CreatePreparedDeliveryRequest(
            prepared_delivery=dl.PreparedDelivery(catalog_id=uid, status=start)
        )
    )
    before = revision(stubs)
    try:
        stubs.deliveries.UpdatePreparedDelivery(
            dl.UpdatePreparedDeliveryRequest(
                prepared_delivery=dl.PreparedDelivery(catalog_id=uid, artifacts=artifacts),
                update_mask=field_mask_pb2.FieldMask(paths=["artifacts"]),
            )
        )
        raise AssertionError("the update succeeded")
    except grpc.RpcError as error:
        failure = failure_of(error)
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.fields == ["prepared_delivery.artifacts[1].size"]
    assert revision(stubs) == before


BAD_REVISIONS = {"superscript two": "\u00b2", "4,301 digits": "9" * 4301, "x": "x"}


@pytest.mark.parametrize("name", sorted(BAD_REVISIONS))
@pytest.mark.parametrize("where", ["start_revision", "Last-Event-ID"])
def test_sse_resume_point_that_is_not_a_revision_is_400(
    http: httpx.Client, name: str, where: str
) -> None:
    value = BAD_REVISIONS[name]
    if where == "start_revision":
        answer = http.get("/api/v1/watch/map_import", params={"start_revision": value})
    else:
        raw = value.encode("utf-8")  # as a client may send it: bytes beyond ASCII
        answer = http.get("/api/v1/watch/map_import", headers=[(b"Last-Event-ID", raw)])
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "INVALID_ARGUMENT"
    assert error["message"].startswith(f"invalid request: {where}: ")
    no_leak(answer.text)


@pytest.mark.parametrize(
    "query",
    [
        {"ids": "a\x00b", "until_settled": "true"},
        {"ids": "\x00", "heartbeat": "0.5"},
        {"ids": "ok,\x00"},
    ],
)
def test_sse_ids_with_nul_are_400(http: httpx.Client, stubs: Stubs, query: dict[str, str]) -> None:
    before = revision(stubs)
    answer = http.get("/api/v1/watch/map_import", params=query)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "INVALID_ARGUMENT"
    assert "must not contain NUL characters" in error["message"]
    assert error["message"].startswith("invalid request: ids")
    no_leak(answer.text)
    assert revision(stubs) == before


# --- 5: a revoked key, or one that lost its scope, ends its open streams -----------------


def _opened(stubs: Stubs, key: str) -> Any:
    """A gRPC watch with `key`, read up to its synced marker."""
    call = stubs.maps.WatchMapImportStatus(
        mi.WatchMapImportStatusRequest(), metadata=metadata(key), timeout=60
    )
    for event in call:
        if event.type == watch_pb2.WATCH_EVENT_TYPE_SYNCED:
            return call
    raise AssertionError("the watch ended before its synced marker")


def _sse_lines(client: httpx.Client, key: str) -> Iterator[str]:
    with client.stream(
        "GET", "/api/v1/watch/map_import", params={"heartbeat": "0.5"}, headers={"x-api-key": key}
    ) as response:
        assert response.status_code == 200
        yield from response.iter_lines()


def _sse_error(lines: Iterator[str]) -> dict[str, str]:
    """Read an SSE watch until its error event; the stream must end right after it."""
    seen_error = False
    error: dict[str, str] = {}
    for line in lines:
        if line == "event: error":
            seen_error = True
        elif seen_error and line.startswith("data: "):
            error = json.loads(line.removeprefix("data: "))
    assert error, "the stream ended without an error event"
    return error


@pytest.mark.parametrize("change", ["revoke", "drop the read scope"])
def test_a_revoked_key_ends_its_open_streams(databases: Databases, change: str) -> None:
    url = databases.new("revoke")
    keys = {
        "gone": ("acme", ["read"]),
        "kept": ("acme", ["read"]),
        "writer": ("acme", ["read", "write"]),
    }
    with keyed_server(url, keys, "--key-refresh", "0.5") as keyed:
        stubs = connect(keyed.server.address)
        gone, kept = keyed.keys["gone"], keyed.keys["kept"]
        grpc_streams = [_opened(stubs, gone) for _ in range(2)]
        survivor = _opened(stubs, kept)
        with keyed.http() as client:
            sse = _sse_lines(client, gone)
            assert next(sse).startswith("retry:")
            parsed = credentials.parse_key(gone)
            assert parsed is not None
            if change == "revoke":
                assert auth.revoke_key(url, parsed[0])
                code, reason = grpc.StatusCode.UNAUTHENTICATED, "API_KEY_REVOKED"
            else:
                table = auth.API_KEY
                auth._admin(
                    url,
                    lambda conn: conn.execute(
                        update(table).where(table.c.key_id == parsed[0]).values(scopes="write")
                    ),
                )
                code, reason = grpc.StatusCode.PERMISSION_DENIED, "SCOPE_MISSING"
            for stream in grpc_streams:
                failure = fails(lambda s=stream: list(s))  # type: ignore[misc]
                assert failure.code == code, failure
                assert failure.info is not None and failure.info.reason == reason
            error = _sse_error(sse)
            assert (error["code"], error["reason"]) == (code.name, reason)
        # The other key's stream goes on: it sees the next change.
        stubs.maps.CreateMapImport(
            mi.CreateMapImportRequest(
                map_import=mi.MapImport(
                    import_request_id="after-revoke", status=mi.MAP_IMPORT_STATUS_START
                )
            ),
            metadata=metadata(keyed.keys["writer"]),
        )
        event = next(iter(survivor))
        while event.type == watch_pb2.WATCH_EVENT_TYPE_HEARTBEAT:
            event = next(iter(survivor))
        assert event.map_import.import_request_id == "after-revoke"
        survivor.cancel()
        stubs.channel.close()


# --- arithmetic on caller values: a made-up page token past int64 ------------------------


def _token(prefix: bytes, body: dict[str, Any]) -> str:
    """A page token as the server makes them (its check is a digest, not a secret)."""
    raw = json.dumps(body, separators=(",", ":")).encode()
    check = hashlib.sha256(prefix + raw).digest()[:12]
    return base64.urlsafe_b64encode(check + raw).decode().rstrip("=")


@pytest.mark.parametrize("after", [2**63, 2**70, -1])
def test_a_page_token_past_int64_is_invalid_argument(
    stubs: Stubs, http: httpx.Client, after: int
) -> None:
    token = _token(b"jobstatus.v1 page token\0", {"k": "map_import", "s": [], "a": after})
    failure = fails(
        lambda: stubs.maps.ListMapImports(mi.ListMapImportsRequest(page_token=token), timeout=10)
    )
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.fields == ["page_token"]
    job_tag = hashlib.sha256(b"j").hexdigest()[:16]
    token = _token(b"jobstatus.v1 history token\0", {"k": "map_import", "j": job_tag, "a": after})
    answer = http.get("/api/v1/history/map_import/j", params={"page_token": token})
    assert answer.status_code in (400, 404), answer.text
    no_leak(answer.text)


def test_fields_the_contract_does_not_know_are_not_stored(
    server: ServerProcess, stubs: Stubs, uid: str
) -> None:
    """A create whose job carries field 1 (import_request_id) a second time as a varint,
    and an unknown field 99: the job is stored without them, so grpcurl, whose parser
    refuses a known field in another wire type, can still read it back and list it."""
    job = mi.MapImport(import_request_id=uid).SerializeToString()
    junk = job + b"\x08\x05" + b"\x98\x06\x01"  # field 1 as varint 5; field 99 = 1
    request = b"\x12" + bytes([len(junk)]) + junk  # CreateMapImportRequest.map_import (2)
    path = "/jobstatus.v1.MapImportService/CreateMapImport"
    answer = stubs.channel.unary_unary(path, None, None)(request, timeout=10)
    created = mi.CreateMapImportResponse.FromString(answer).map_import
    assert created.import_request_id == uid
    clean = mi.MapImport()
    clean.CopyFrom(created)
    clean.DiscardUnknownFields()
    assert created.SerializeToString() == clean.SerializeToString(), (
        "a job was stored with fields the contract does not know: they come back in answers"
    )
    get = "jobstatus.v1.MapImportService/GetMapImportStatus"
    body = json.dumps({"import_request_id": uid})
    result = subprocess.run(
        [GRPCURL, "-plaintext", "-max-time", "10", "-d", body, server.address, get],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, (
        "grpcurl could not read back a job created with unknown fields: " + result.stderr
    )
    assert json.loads(result.stdout)["map_import"]["import_request_id"] == uid, result.stdout

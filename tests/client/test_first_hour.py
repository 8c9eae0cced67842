"""A newcomer's first hour, through the programs they run: the `jobstatus` CLI (its
errors read on a pseudo-terminal where a person reads them), `jobstatus-server keys`,
grpcurl and plain HTTP, against a real server on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pexpect
import pytest

from jobstatus.v1 import map_import_pb2 as mi
from jobstatus.v1 import map_import_pb2_grpc
from tests.conftest import Databases, Stubs
from tests.serverproc import ServerProcess, free_port

BIN = Path(sys.executable).parent
JOBSTATUS = BIN / "jobstatus"
GRPCURL = BIN / "grpcurl"


def run(*argv: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("JOBSTATUS_")}
    return subprocess.run(
        [str(a) for a in argv],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **(env or {})},
        check=False,
    )


def cli(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return run(JOBSTATUS, *args, env={"JOBSTATUS_GRPC_ADDR": server.address})


def keys_create(url: str, tenant: str) -> tuple[str, str]:
    """`jobstatus-server keys create`: the key it prints, and what it says on stderr."""
    done = run(
        sys.executable, "-m", "jobstatus_server", "--database-url", url,
        "keys", "create", "--tenant", tenant, "--scope", "read,write",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip(), " ".join(done.stderr.split())


def keys_revoke(url: str, key: str) -> str:
    """`jobstatus-server keys revoke` of a key (`jsk_<id>_<secret>`): what it says."""
    key_id = key.split("_")[1]
    done = run(sys.executable, "-m", "jobstatus_server", "--database-url", url,
               "keys", "revoke", key_id)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return " ".join((done.stdout + done.stderr).split())


def until(what: str, check: Callable[[], Any], within: float = 20.0) -> Any:
    """`check()` once it is truthy, within `within` seconds, else fail with its last value."""
    deadline = time.monotonic() + within
    while True:
        seen = check()
        if seen:
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within:g} s; last saw {seen!r}")
        time.sleep(0.05)


def one_line(text: str) -> str:
    return " ".join(text.split())


# --- 2. the first API key, and what it hides -------------------------------------------


def test_the_first_key_warns_of_the_jobs_it_hides_and_a_get_names_its_tenant(
    databases: Databases,
) -> None:
    url = databases.new("firstkey")
    server = ServerProcess(url).start()
    try:
        created = run(
            GRPCURL, "-plaintext", "-d", '{"map_import": {"import_request_id": "catalog-42"}}',
            server.address, "jobstatus.v1.MapImportService/CreateMapImport",
        )  # fmt: skip
        assert created.returncode == 0, created.stderr

        key, said = keys_create(url, "acme")
        assert "this is the first active key" in said
        assert (
            "1 job(s) of tenant default (made while the server was open) are out of sight of "
            "every caller; to reach them, make a key for that tenant: "
            "jobstatus-server keys create --tenant default --scope read,write"
        ) in said

        def refused() -> subprocess.CompletedProcess[str] | None:
            done = cli(server, "get", "map-import", "catalog-42", "--api-key", key)
            return done if done.returncode == 3 else None  # NOT_FOUND once the key is read

        got = until("a Get with tenant acme's key finds nothing", refused)
        assert "no map import with import_request_id 'catalog-42' in tenant 'acme'" in one_line(
            got.stderr
        )
        listed = cli(server, "list", "map-import", "--api-key", key)
        assert listed.returncode == 0, listed.stderr
        assert "an API key sees only its own tenant's jobs" in one_line(listed.stderr)
        assert "tenant default" in one_line(listed.stderr)

        default_key, said = keys_create(url, "default")
        assert "out of sight" not in said and "first active key" not in said
        found = until(
            "a Get with tenant default's key finds the job",
            lambda: cli(
                server, "get", "map-import", "catalog-42", "--api-key", default_key
            ).stdout.count("catalog-42"),
        )
        assert found

        # 7. a call without a key is told how to pass one, on every transport
        missing = cli(server, "list", "map-import")
        assert missing.returncode == 1
        for way in ("--api-key", "JOBSTATUS_API_KEY", "x-api-key metadata", "X-Api-Key or"):
            assert way in one_line(missing.stderr), missing.stderr
        bare = run(
            GRPCURL, "-plaintext", server.address, "jobstatus.v1.MapImportService/ListMapImports"
        )
        assert "Unauthenticated" in bare.stderr and "x-api-key metadata" in bare.stderr
        answer = httpx.get(f"{server.http_url}/api/v2/map/import/status/catalog-42", timeout=10)
        assert answer.status_code == 401
        assert "X-Api-Key or Authorization: Bearer header" in answer.json()["message"]

        # revoking: acme's key leaves nothing out of sight; the last key opens the server
        acme_revoked = keys_revoke(url, key)
        assert "warning" not in acme_revoked
        last_revoked = keys_revoke(url, default_key)
        assert "no active key is left, so the server is open again" in last_revoked
    finally:
        server.stop()


# --- 6. status names in either spelling -------------------------------------------------


@pytest.fixture(scope="module")
def server(database_url: str) -> Iterator[ServerProcess]:
    proc = ServerProcess(database_url).start()
    yield proc
    proc.stop()


@pytest.mark.parametrize(
    "spelled",
    ["InProgress", "inprogress", "in_progress", "IN_PROGRESS", "MAP_IMPORT_STATUS_IN_PROGRESS",
     "map_import_status_in_progress"],
)  # fmt: skip
def test_the_cli_takes_a_status_in_either_spelling(
    server: ServerProcess, stubs: Stubs, uid: str, spelled: str
) -> None:
    stubs.maps.CreateMapImport(
        mi.CreateMapImportRequest(map_import=mi.MapImport(import_request_id=uid))
    )
    running = mi.MapImport(import_request_id=uid, status=mi.MAP_IMPORT_STATUS_IN_PROGRESS)
    stubs.maps.UpdateMapImport(mi.UpdateMapImportRequest(map_import=running))
    listed = cli(server, "list", "map-import", "--status", spelled, "--json")
    assert listed.returncode == 0, listed.stderr
    jobs = json.loads(listed.stdout)
    assert uid in [job["importRequestId"] for job in jobs]
    assert {job["status"] for job in jobs} == {"MAP_IMPORT_STATUS_IN_PROGRESS"}


def test_an_unknown_status_lists_both_spellings(server: ServerProcess) -> None:
    done = cli(server, "list", "map-import", "--status", "running")
    assert done.returncode == 2
    assert "InProgress (MAP_IMPORT_STATUS_IN_PROGRESS)" in one_line(done.stderr)
    assert "Done (MAP_IMPORT_STATUS_DONE)" in one_line(done.stderr)


# --- 7. the wrong address, or nothing there ---------------------------------------------


def on_a_terminal(*args: str) -> tuple[int, str]:
    """The CLI on a pseudo-terminal, as a person runs it: its exit status and screen."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("JOBSTATUS_")}
    child = pexpect.spawn(
        str(JOBSTATUS), list(args), env={**clean, "COLUMNS": "400"}, timeout=60,
        dimensions=(24, 400),
    )  # fmt: skip
    child.expect(pexpect.EOF)
    assert isinstance(child.before, bytes)
    screen = one_line(child.before.decode())
    status = child.wait()
    assert child.signalstatus is None, f"ended by signal {child.signalstatus}: {screen}"
    return int(status), screen


def test_nothing_answering_names_the_flag_and_variable_of_the_address() -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    status, screen = on_a_terminal("get", "map-import", "m-1", "--addr", nowhere)
    assert status == 1, screen
    assert f"nothing answers at {nowhere}: is the server running?" in screen
    assert "--addr or JOBSTATUS_GRPC_ADDR sets the address" in screen


def test_a_grpc_client_on_the_http_port_is_told_where_grpc_is(
    server: ServerProcess,
) -> None:
    http_address = server.http_url.removeprefix("http://")
    told = "this is jobstatus's HTTP port (--http-addr, JOBSTATUS_HTTP_ADDR"
    where = f"gRPC is served on {server.address} (--grpc-addr, JOBSTATUS_GRPC_ADDR"

    status, screen = on_a_terminal("get", "map-import", "m-1", "--addr", http_address)
    assert status == 1, screen
    assert told in screen and where in screen

    listed = run(GRPCURL, "-plaintext", "-max-time", "20", http_address, "list")
    assert listed.returncode != 0
    assert told in listed.stderr and where in listed.stderr

    with grpc.insecure_channel(http_address) as channel:
        stub = map_import_pb2_grpc.MapImportServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetMapImportStatus(mi.GetMapImportStatusRequest(import_request_id="m"), timeout=20)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert told in (caught.value.details() or "")

    # the HTTP listener serves HTTP as before
    assert httpx.get(f"{server.http_url}/healthz", timeout=10).json() == {"status": "SERVING"}

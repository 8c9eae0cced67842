"""examples/node, the Node.js client (@grpc/grpc-js on proto/), against a real server.

The example runs as users run it (`node watch_job.js`), from the node_modules that
`make install` puts into examples/node with `npm ci`. Its output is one JSON line per step.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from jobstatus import Client
from jobstatus.v1 import map_import_pb2 as mi
from tests.serverproc import ROOT, ServerProcess

EXAMPLE = ROOT / "examples" / "node"


def node() -> str:
    binary = shutil.which("node")
    if binary is None:
        pytest.fail("node is not on the PATH (the README's prerequisites)", pytrace=False)
    if not (EXAMPLE / "node_modules" / "@grpc" / "grpc-js").is_dir():
        pytest.fail("examples/node is not installed: run `make install`", pytrace=False)
    return binary


def example(address: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [node(), str(EXAMPLE / "watch_job.js"), *args],
        cwd=EXAMPLE,
        env={**os.environ, "JOBSTATUS_GRPC_ADDR": address},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def steps(stdout: str) -> list[dict[str, Any]]:
    """The printed steps, less heartbeats (an idle stream's, whenever they come)."""
    out = [json.loads(line) for line in stdout.splitlines()]
    return [s for s in out if s.get("type") != "HEARTBEAT"]


def test_example_creates_watches_resumes_and_decodes_a_refusal(
    server: ServerProcess, uid: str
) -> None:
    with example(server.address, uid) as process:
        stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stdout + stderr
    out = steps(stdout)
    assert [s["step"] for s in out if s["step"] != "event"] == [
        "created",
        "dropped",
        "settled",
        "refused",
    ]
    created = out[0]
    assert (created["id"], created["status"]) == (uid, "MAP_IMPORT_STATUS_START")

    # Before the drop: the state, SYNCED, then the change to 30%.
    dropped_at = next(i for i, s in enumerate(out) if s["step"] == "dropped")
    before = [(s["type"], s.get("progress")) for s in out[1:dropped_at]]
    assert before == [("STATE", 0), ("SYNCED", None), ("CHANGE", 30)]
    resume_from = int(out[dropped_at]["resume_from"])
    assert resume_from == int(out[dropped_at - 1]["revision"])

    # After it: exactly the changes after the resume point, each once, in order.
    after = [s for s in out[dropped_at + 1 :] if s["step"] == "event"]
    assert [(s["type"], s["progress"], s["status"]) for s in after] == [
        ("CHANGE", 60, "MAP_IMPORT_STATUS_IN_PROGRESS"),
        ("CHANGE", 100, "MAP_IMPORT_STATUS_DONE"),
    ]
    revisions = [int(s["revision"]) for s in after]
    assert resume_from < revisions[0] < revisions[1]

    # until_settled ended the stream by itself once the job was Done.
    settled = next(s for s in out if s["step"] == "settled")
    assert settled == {
        "step": "settled",
        "status": "MAP_IMPORT_STATUS_DONE",
        "revision": after[-1]["revision"],
    }

    # Done -> InProgress: FAILED_PRECONDITION, google.rpc.Status decoded from the trailer.
    refused = out[-1]
    assert refused["code"] == "FAILED_PRECONDITION"
    status = refused["status"]
    assert status["code"] == 9  # FAILED_PRECONDITION
    assert (
        "allowed next statuses: Archived (MAP_IMPORT_STATUS_ARCHIVED), "
        "Expired (MAP_IMPORT_STATUS_EXPIRED)" in status["message"]
    )
    info, failure = status["details"]
    assert info["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
    assert info["reason"] == "TRANSITION_NOT_ALLOWED"
    assert info["metadata"] == {"allowed": "Archived,Expired", "from": "Done", "to": "InProgress"}
    assert failure["@type"] == "type.googleapis.com/google.rpc.PreconditionFailure"
    assert failure["violations"][0]["subject"] == "status:Done->InProgress"

    with Client(server.address) as client:
        assert client.map_imports.get(uid).status == mi.MAP_IMPORT_STATUS_DONE


@pytest.fixture
def own_server(database_url: str) -> Iterator[ServerProcess]:
    """A server of this test's own, which it kills and restarts."""
    proc = ServerProcess(database_url).start()
    yield proc
    proc.stop()


def test_example_watch_resumes_across_a_server_restart(own_server: ServerProcess, uid: str) -> None:
    with Client(own_server.address) as client:
        client.map_imports.create(mi.MapImport(import_request_id=uid))
    process = example(own_server.address, "--watch", uid)
    try:
        assert process.stdout is not None
        seen = steps(process.stdout.readline() + process.stdout.readline())
        assert [s["type"] for s in seen] == ["STATE", "SYNCED"]

        own_server.kill()  # the connection drops with the server
        own_server.start()  # the same port, the same database
        with Client(own_server.address) as client:
            progress = mi.MapImportMetaData(progress=50)
            job = mi.MapImport(
                import_request_id=uid, status=mi.MAP_IMPORT_STATUS_IN_PROGRESS, meta_data=progress
            )
            moved = client.map_imports.update(job, update_mask=["status", "meta_data.progress"])
            cancelled = client.map_imports.update(
                mi.MapImport(import_request_id=uid, status=mi.MAP_IMPORT_STATUS_CANCEL),
                update_mask=["status"],
            )
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stdout + stderr
    rest = steps(stdout)
    assert {s["step"] for s in rest} <= {"dropped", "event", "settled"}
    assert rest[0]["step"] == "dropped" and rest[0]["resume_from"] == seen[-1]["revision"]
    events = [(s["type"], int(s["revision"])) for s in rest if s["step"] == "event"]
    assert events == [("CHANGE", moved.revision), ("CHANGE", cancelled.revision)]
    assert rest[-1] == {
        "step": "settled",
        "status": "MAP_IMPORT_STATUS_CANCEL",
        "revision": str(cancelled.revision),
    }

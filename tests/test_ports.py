"""Two servers never share a port, and two test processes never pick the same one.

A second server started on a taken port refuses to start, so no caller's connection
reaches a server (and a database) it did not mean. gRPC's default SO_REUSEPORT let a
second server bind a taken gRPC port silently, the kernel splitting connections
between the two; a test worker's servers could collide so with another worker's.
The server binds both ports before it opens its database, so the refusal has nothing
to close and exits at once (a refusal that came after the database opened once hung
on PostgreSQL until it was killed).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from grpc_health.v1 import health_pb2

from tests.conftest import Databases, Stubs
from tests.serverproc import PORT_LOCKS, ServerProcess, free_port, port_candidates


@pytest.mark.parametrize("listener", ["gRPC", "HTTP"])
def test_a_second_server_on_a_taken_port_refuses_to_start(
    server: ServerProcess, stubs: Stubs, databases: Databases, listener: str
) -> None:
    if listener == "gRPC":
        second = ServerProcess(databases.new("second"), port=server.port)
        why = f"gRPC on {server.address}: the port is taken (another server?)"
        fix = "choose another with --grpc-addr"
    else:
        second = ServerProcess(databases.new("second"), http_port=server.http_port)
        why = f"HTTP on 127.0.0.1:{server.http_port}: Address already in use"
        fix = "choose another with --http-addr"
    with pytest.raises(RuntimeError) as refused:
        second.start()
    assert second.process is not None and second.process.returncode == 2, second.log()
    said = str(refused.value)
    assert f"jobstatus: refusing to start: cannot listen for {why}" in said, second.log()
    assert fix in said and "Traceback" not in said, second.log()
    answer = stubs.health.Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING, "the first one serves on"


def test_a_port_handed_to_one_test_process_is_never_another_ones() -> None:
    mine = [free_port() for _ in range(20)]
    assert len(set(mine)) == 20, f"one process was handed a port twice: {mine}"
    assert all(port in port_candidates() for port in mine), "a port in the kernel's ephemeral range"
    probe = (
        "import fcntl, os, sys\n"
        f"fd = os.open({str(PORT_LOCKS)!r}, os.O_RDWR)\n"
        "held = []\n"
        "for port in map(int, sys.argv[1:]):\n"
        "    try:\n"
        "        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, port)\n"
        "    except OSError:\n"
        "        held.append(port)\n"
        "print(len(held))\n"
    )
    other = subprocess.run(
        [sys.executable, "-c", probe, *map(str, mine)], capture_output=True, text=True, check=True
    )
    assert other.stdout.split() == ["20"], f"another process could take them: {other.stdout}"

"""The README's SSE example, run as written with bash and curl: it sets $KEY itself, then
watches catalog-42 until it settles. On SQLite and PostgreSQL, against a real server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from jobstatus.v1 import map_import_pb2 as mi
from tests.conftest import Databases, Stubs
from tests.serverproc import ROOT, ServerProcess

README = (ROOT / "README.md").read_text()
SH_BLOCK = re.compile(r"```sh\n(.*?)```", re.DOTALL)


def sse_example() -> str:
    blocks = [b for b in SH_BLOCK.findall(README) if "curl -N" in b and "/api/v1/watch/" in b]
    assert len(blocks) == 1, blocks
    return str(blocks[0])


def test_the_sse_example_sets_its_key_and_ends_when_the_job_settles(
    databases: Databases,
) -> None:
    script = sse_example()
    assert re.search(r"^KEY=", script, re.MULTILINE), "the example must set $KEY itself"
    url = databases.new("sse_example")
    server = ServerProcess(url).start()
    try:
        stubs = Stubs.connect(server.address)
        stubs.maps.CreateMapImport(
            mi.CreateMapImportRequest(map_import=mi.MapImport(import_request_id="catalog-42"))
        )
        package = mi.MapImportMetaData(package_url="https://p.example/c.gpkg", footprint="P")
        done = mi.MapImport(
            import_request_id="catalog-42", status=mi.MAP_IMPORT_STATUS_DONE, meta_data=package
        )
        stubs.maps.UpdateMapImport(mi.UpdateMapImportRequest(map_import=done))
        stubs.channel.close()
        venv = Path(sys.executable).parent.parent
        work = script.replace(".venv/", f"{venv}/").replace(
            "localhost:8080", server.http_url.removeprefix("http://")
        )
        clean = {k: v for k, v in os.environ.items() if not k.startswith("JOBSTATUS_")}
        ran = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", work],
            capture_output=True,
            text=True,
            timeout=60,
            env={**clean, "JOBSTATUS_DATABASE_URL": url},
            check=False,
        )
        assert ran.returncode == 0, ran.stderr
        assert "event: state" in ran.stdout and "event: settled" in ran.stdout, ran.stdout
        assert '"importRequestId":"catalog-42"' in ran.stdout.replace(" ", "")
    finally:
        server.stop()

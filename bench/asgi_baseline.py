"""The REST baseline: a bare ASGI app answering every GET with the same bytes.

It returns the body and headers that jobstatus answered for the map import in the same
run, so the bytes on the wire are the same. It is a plain ASGI callable (no framework,
no routing, no middleware, no store), served by the same server software with the same
options as jobstatus's HTTP listener: `jobstatus_server.http_api.app.http_server` builds both
(uvicorn, httptools, no access log, lifespan off), on the same event loop
(`jobstatus_server.composition.loop`: uvloop). What is left between the two is what jobstatus
adds: routing, metrics, auth, the read from the view, and the gRPC server sharing
its event loop.

Run: python -m bench.asgi_baseline --port PORT --answer FILE, where FILE is JSON
{"headers": [[name, value], ...], "body_hex": "..."}, read on the first request (so
that the baseline can start before jobstatus made the job: bench/servers.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from pathlib import Path
from typing import Any, cast

from starlette.applications import Starlette

from bench import READY
from jobstatus_server.composition.loop import run
from jobstatus_server.http_api.app import http_server

Scope = dict[str, Any]


def _answer(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ASGI messages of the answer in `path`."""
    answer = json.loads(path.read_text())
    body = bytes.fromhex(answer["body_hex"])
    start = {
        "type": "http.response.start",
        "status": 200,
        "headers": [
            (b"content-length", str(len(body)).encode()),
            *((name.lower().encode(), value.encode()) for name, value in answer["headers"]),
        ],
    }
    return start, {"type": "http.response.body", "body": body}


def bare_app(path: Path) -> Any:
    """An ASGI app that answers any HTTP request with 200 and the answer in `path`."""
    messages: list[tuple[dict[str, Any], dict[str, Any]]] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if not messages:
            messages.append(_answer(path))
        start, body = messages[0]
        await send(start)
        await send(body)

    return app


async def serve(port: int, answer: Path) -> None:
    # http_server is typed for the Starlette app jobstatus passes; uvicorn takes any ASGI app.
    server = http_server(cast(Starlette, bare_app(answer)), f"127.0.0.1:{port}")
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("uvicorn did not start")
        await asyncio.sleep(0.01)
    print(f"{READY} 127.0.0.1:{port}", flush=True)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    await task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--answer", type=Path, required=True)
    args = parser.parse_args()
    run(serve(args.port, args.answer))


if __name__ == "__main__":
    main()

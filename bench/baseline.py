"""The baseline: a bare grpc.aio server speaking the same MapImportService contract.

It does the least a server of that contract can do, so that the ratio of jobstatus to
it says what jobstatus adds:

- GetMapImportStatus answers a constant message (the job that jobstatus answers in the
  same run, so the bytes on the wire are the same size);
- UpdateMapImport stores nothing: it counts a revision, and hands one message of the
  same size to every stream watching that job (or every job): the bare broadcaster;
- WatchMapImportStatus sends its headers and a SYNCED event at once, then writes what
  the broadcaster hands it, from a plain asyncio queue per stream.

No interceptor, no validation, no storage. It runs with the same gRPC server options
as jobstatus, on the same event loop (`jobstatus_server.composition.loop`: uvloop).
Run: python -m bench.baseline --port PORT --answer FILE, where FILE
holds a serialized jobstatus.v1.MapImport; it is read on the first request (so that
the baseline can start before jobstatus made that job: bench/servers.py).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections import defaultdict
from pathlib import Path
from typing import Any

import grpc

from bench import READY
from jobstatus.v1 import map_import_pb2 as mi
from jobstatus.v1 import map_import_pb2_grpc as mi_grpc
from jobstatus.v1 import watch_pb2
from jobstatus_server.composition.config import Settings
from jobstatus_server.composition.loop import run
from jobstatus_server.composition.server import grpc_options

Context = grpc.aio.ServicerContext[Any, Any]
Queue = asyncio.Queue[mi.WatchMapImportStatusResponse]


class BareMapImports(mi_grpc.MapImportServiceServicer):
    def __init__(self, answer: Path) -> None:
        self.answer = answer
        self._template: mi.MapImport | None = None
        self._get_response: mi.GetMapImportStatusResponse | None = None
        self.revision = 0
        self.by_id: defaultdict[str, set[Queue]] = defaultdict(set)
        self.everyone: set[Queue] = set()

    async def CreateMapImport(
        self, request: mi.CreateMapImportRequest, context: Context
    ) -> mi.CreateMapImportResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "the baseline creates nothing")

    async def ListMapImports(
        self, request: mi.ListMapImportsRequest, context: Context
    ) -> mi.ListMapImportsResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "the baseline lists nothing")

    async def GetMapImportHistory(
        self, request: mi.GetMapImportHistoryRequest, context: Context
    ) -> mi.GetMapImportHistoryResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "the baseline keeps no history")

    @property
    def template(self) -> mi.MapImport:
        if self._template is None:
            self._template = mi.MapImport.FromString(self.answer.read_bytes())
        return self._template

    async def GetMapImportStatus(
        self, request: mi.GetMapImportStatusRequest, context: Context
    ) -> mi.GetMapImportStatusResponse:
        response = self._get_response
        if response is None:
            response = self._get_response = mi.GetMapImportStatusResponse(map_import=self.template)
        return response

    async def UpdateMapImport(
        self, request: mi.UpdateMapImportRequest, context: Context
    ) -> mi.UpdateMapImportResponse:
        self.revision += 1
        job = mi.MapImport()
        job.CopyFrom(self.template)
        job.revision = self.revision
        event = mi.WatchMapImportStatusResponse(
            type=watch_pb2.WATCH_EVENT_TYPE_CHANGE, revision=self.revision, map_import=job
        )
        for queue in self.by_id.get(request.map_import.import_request_id, ()):
            queue.put_nowait(event)
        for queue in self.everyone:
            queue.put_nowait(event)
        return mi.UpdateMapImportResponse(map_import=job)

    async def WatchMapImportStatus(  # type: ignore[override]
        self, request: mi.WatchMapImportStatusRequest, context: Context
    ) -> None:
        await context.send_initial_metadata(())
        queue: Queue = asyncio.Queue()
        ids = list(request.import_request_ids)
        for job_id in ids:
            self.by_id[job_id].add(queue)
        if not ids:
            self.everyone.add(queue)
        try:
            await context.write(
                mi.WatchMapImportStatusResponse(
                    type=watch_pb2.WATCH_EVENT_TYPE_SYNCED, revision=self.revision
                )
            )
            while True:
                await context.write(await queue.get())
        finally:
            for job_id in ids:
                self.by_id[job_id].discard(queue)
                if not self.by_id[job_id]:
                    del self.by_id[job_id]
            self.everyone.discard(queue)


async def serve(port: int, answer: Path) -> None:
    server = grpc.aio.server(options=grpc_options(Settings()))
    mi_grpc.add_MapImportServiceServicer_to_server(BareMapImports(answer), server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"{READY} 127.0.0.1:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--answer", type=Path, required=True)
    args = parser.parse_args()
    run(serve(args.port, args.answer))


if __name__ == "__main__":
    main()

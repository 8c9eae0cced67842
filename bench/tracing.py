"""What tracing costs when it is on: unary GetMapImportStatus on jobstatus with tracing
on against the same jobstatus with tracing off (the default), at the highest unary
concurrency, the same load from the same workers in ABBA rounds.

Tracing on is the costly end of what a user would switch on: OTEL_TRACES_EXPORTER=otlp,
every call sampled (the callers send no trace context, so each call starts a trace), and
the spans batched, encoded and sent over OTLP/HTTP to a receiver in the bench process
(tests/otlp.py), as they would be to a collector. Off, the server runs none of it
(server/jobstatus_server/observability/tracing.py): that is the baseline.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import partial
from pathlib import Path

from bench import jobs, workers
from bench.harness import Bench
from bench.results import Row
from bench.scenarios import Endpoint, alternate, unary_once, unary_rows
from bench.servers import create_jobs, get, running_subject, subject_pid
from jobstatus.v1 import map_import_pb2 as mi
from tests.otlp import Receiver, receiver
from tests.serverproc import ServerProcess

OFF = "jobstatus, tracing off"


@contextlib.contextmanager
def _traced(workdir: Path, sink: Receiver) -> Iterator[ServerProcess]:
    directory = workdir / "traced-on"
    directory.mkdir(parents=True, exist_ok=True)
    server = ServerProcess(
        f"sqlite:///{directory / 'jobstatus.db'}",
        extra_args=["--log-level", "WARNING"],
        extra_env=sink.env(),
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def unary_get_traced(bench: Bench) -> list[Row]:
    """GetMapImportStatus with tracing on (OTLP export) vs the same server with it off."""
    concurrency = max(bench.sizes.unary_concurrency)
    with (
        receiver(keep=False) as sink,
        _traced(bench.workdir, sink) as on,
        running_subject(bench.workdir, "traced-off") as off,
    ):
        endpoints = [
            Endpoint(name, s.address, subject_pid(s)) for name, s in (("on", on), ("off", off))
        ]
        [job_id] = jobs.job_ids("traced", 1)
        for endpoint in endpoints:
            create_jobs(endpoint.address, [job_id])
            get(endpoint.address, job_id)  # warm both
        raw = mi.GetMapImportStatusRequest(import_request_id=job_id).SerializeToString()
        slots = [[raw]] * concurrency
        seconds = bench.sizes.unary_seconds
        traced, plain = alternate(
            bench.sizes.rounds,
            partial(unary_once, bench, endpoints[0], workers.GET, slots, seconds),
            partial(unary_once, bench, endpoints[1], workers.GET, slots, seconds),
        )
        case = f"concurrency {concurrency}"
        rows = unary_rows("unary_get_traced", case, traced, plain, "GetMapImportStatus", None, None)
        exported = sink.count
    for row in rows:
        row.baseline_name = OFF
    rows[0].extra["tracing"] = "OTLP/HTTP export, every call sampled"
    rows[0].extra["spans exported (warm-ups included)"] = exported
    if exported == 0:
        raise RuntimeError("tracing was on but no span reached the receiver")
    return rows

"""The large-store scenario's load: worker commands (bench/workers.py runs them in its
load processes) for cold Gets, a watch over every job timed, and another caller's Gets
while it starts."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import grpc

from bench.procstat import own_cpu_seconds
from bench.workers import CHANNEL_OPTIONS, GET, WATCH, State
from jobstatus.v1 import map_import_pb2 as mi
from jobstatus.v1 import watch_pb2

STATE = watch_pb2.WATCH_EVENT_TYPE_STATE
SYNCED = watch_pb2.WATCH_EVENT_TYPE_SYNCED


def get_request(job_id: str) -> bytes:
    return mi.GetMapImportStatusRequest(import_request_id=job_id).SerializeToString()


async def cold_gets(state: State, address: str, job_ids: list[str]) -> dict[str, Any]:
    """One GetMapImportStatus of each job, one at a time (jobs not read before: the
    server reads each from its database); the latency of each in ms."""
    channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
    try:
        await channel.channel_ready()
        get = channel.unary_unary(GET, None, None)
        latencies: list[float] = []
        for job_id in job_ids:
            request = get_request(job_id)
            sent = time.monotonic_ns()
            await get(request, timeout=60)
            latencies.append((time.monotonic_ns() - sent) / 1e6)
    finally:
        await channel.close(None)
    return {"latencies": latencies}


async def read_each(state: State, address: str, job_ids: list[str], concurrency: int) -> int:
    """One GetMapImportStatus of each job, `concurrency` at a time; how many answered."""
    channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
    try:
        await channel.channel_ready()
        get = channel.unary_unary(GET, None, None)

        async def loop(part: list[str]) -> int:
            for job_id in part:
                await get(get_request(job_id), timeout=60)
            return len(part)

        done = await asyncio.gather(*(loop(job_ids[i::concurrency]) for i in range(concurrency)))
    finally:
        await channel.close(None)
    return sum(done)


async def watch_all_timed(
    state: State, address: str, done_file: str, patience: float
) -> dict[str, Any]:
    """One WatchMapImportStatus of every map import, read until SYNCED: when it opened,
    its first event and SYNCED arrived (monotonic), how many STATE events and bytes came.
    `done_file` is created when it ends, so another process's load can stop."""
    channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
    watch = channel.unary_stream(WATCH, None, None)  # raw bytes: no parse on the way
    request = mi.WatchMapImportStatusRequest()
    request.heartbeat_interval.FromSeconds(300)
    cpu = own_cpu_seconds()
    opened = time.monotonic()
    first = synced = 0.0
    states = received = 0
    error = ""
    try:
        call = watch(request.SerializeToString(), timeout=patience)
        async for raw in call:
            if not first:
                first = time.monotonic()
            received += len(raw)
            # A job's event carries the job (hundreds of bytes); a marker only its type
            # and revision: only the short ones are parsed.
            if len(raw) > 64:
                states += 1
                continue
            event = mi.WatchMapImportStatusResponse.FromString(raw)
            if event.type == STATE:
                states += 1
            elif event.type == SYNCED:
                synced = time.monotonic()
                break
        call.cancel()
    except grpc.aio.AioRpcError as failed:
        error = f"{failed.code().name}: {failed.details()}"
    finally:
        os.close(os.open(done_file, os.O_CREAT | os.O_WRONLY))
        await channel.close(None)
    return {
        "opened": opened,
        "first": first,
        "synced": synced,
        "states": states,
        "bytes": received,
        "error": error,
        "cpu": own_cpu_seconds() - cpu,
    }


async def gets_until(
    state: State, address: str, job_ids: list[str], rate: float, done_file: str, patience: float
) -> dict[str, Any]:
    """Open loop: a GetMapImportStatus every 1/rate seconds (the jobs in turn, each on a
    task of its own, 30 s deadline) until `done_file` exists; (sent, ms) of each, a Get
    past its deadline counted at the deadline."""
    channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
    try:
        await channel.channel_ready()
        get = channel.unary_unary(GET, None, None)
        samples: list[tuple[float, float]] = []
        errors = 0

        async def call(request: bytes) -> None:
            nonlocal errors
            sent = time.monotonic()
            try:
                await get(request, timeout=30)
            except grpc.aio.AioRpcError:
                errors += 1
            samples.append((sent, (time.monotonic() - sent) * 1e3))

        started = time.monotonic()
        pending: set[asyncio.Task[None]] = set()
        index = 0
        while time.monotonic() - started < patience:
            if index % 5 == 0 and await asyncio.to_thread(os.path.exists, done_file):
                break
            task = asyncio.create_task(call(get_request(job_ids[index % len(job_ids)])))
            pending.add(task)
            task.add_done_callback(pending.discard)
            index += 1
            await asyncio.sleep(max(0.0, started + index / rate - time.monotonic()))
        await asyncio.gather(*pending)
    finally:
        await channel.close(None)
    return {"samples": samples, "errors": errors}

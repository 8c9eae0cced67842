"""Load generators: worker processes driven over a pipe.

The machine has two cores, so load must come from processes of its own, never from
threads beside the server. A `Worker` is a spawned process running an asyncio loop;
the bench sends it commands (module-level `async def command(state, **kwargs)`) one at
a time and gets each one's result back. A command may leave tasks running in the
worker's `State` (open watch streams, for instance) that later commands read.

Every command that measures reports the worker's CPU seconds over its window, so the
results can show when a load generator, not the server, was the limit. Times are
`time.monotonic()` / `monotonic_ns()`: CLOCK_MONOTONIC is one clock for every process
on a Linux machine, so a receipt in one process and a commit in another compare.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import random
import sqlite3
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from bench import jobs
from bench.procstat import own_cpu_seconds
from jobstatus.v1 import map_import_pb2 as mi
from jobstatus.v1 import watch_pb2

Command = Callable[..., Awaitable[Any]]
GET = "/jobstatus.v1.MapImportService/GetMapImportStatus"
UPDATE = "/jobstatus.v1.MapImportService/UpdateMapImport"
WATCH = "/jobstatus.v1.MapImportService/WatchMapImportStatus"
CHANNEL_OPTIONS = [
    # A connection of its own per channel: streams spread over several connections.
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
]


class WorkerError(RuntimeError):
    pass


@dataclass
class Worker:
    """One load-generating process."""

    index: int
    process: multiprocessing.process.BaseProcess
    conn: multiprocessing.connection.Connection

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def send(self, command: Command, **kwargs: Any) -> None:
        self.conn.send((command, kwargs))

    def recv(self, timeout: float = 600.0) -> Any:
        if not self.conn.poll(timeout):
            raise WorkerError(f"worker {self.index} did not answer within {timeout:.0f} s")
        status, value = self.conn.recv()
        if status != "ok":
            raise WorkerError(f"worker {self.index} failed:\n{value}")
        return value

    def call(self, command: Command, timeout: float = 600.0, **kwargs: Any) -> Any:
        self.send(command, **kwargs)
        return self.recv(timeout)

    def close(self) -> None:
        with contextlib.suppress(OSError, BrokenPipeError):
            self.conn.send(None)
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        self.conn.close()


@dataclass
class Pool:
    workers: list[Worker]

    @classmethod
    def start(cls, count: int) -> Pool:
        context = multiprocessing.get_context("spawn")
        workers = []
        for index in range(count):
            parent, child = context.Pipe()
            process = context.Process(
                target=_main, args=(child,), name=f"bench-worker-{index}", daemon=True
            )
            process.start()
            child.close()
            workers.append(Worker(index, process, parent))
        pool = cls(workers)
        pool.map(ping, [{}] * count, timeout=60)
        return pool

    def map(
        self, command: Command, kwargs: Sequence[dict[str, Any]], timeout: float = 600.0
    ) -> list[Any]:
        """Run `command` on the first len(kwargs) workers at once, one kwargs each."""
        used = self.workers[: len(kwargs)]
        assert len(used) == len(kwargs), "more tasks than workers"
        for worker, each in zip(used, kwargs, strict=True):
            worker.send(command, **each)
        return [worker.recv(timeout) for worker in used]

    def close(self) -> None:
        for worker in self.workers:
            worker.close()


def _main(conn: multiprocessing.connection.Connection) -> None:
    asyncio.run(_serve(conn))


async def _serve(conn: multiprocessing.connection.Connection) -> None:
    state = State()
    loop = asyncio.get_running_loop()
    try:
        while True:
            try:
                message = await loop.run_in_executor(None, conn.recv)
            except EOFError:
                return
            if message is None:
                return
            command, kwargs = message
            try:
                value = await command(state, **kwargs)
            except Exception:
                conn.send(("error", traceback.format_exc()))
            else:
                conn.send(("ok", value))
    finally:
        await state.close()


@dataclass
class Receipts:
    times: list[tuple[int, int]] = field(default_factory=list)  # (revision, monotonic ns)
    arrivals: Counter[int] = field(default_factory=Counter)  # revision -> streams it reached
    arrived: asyncio.Event = field(default_factory=asyncio.Event)  # set on each receipt


@dataclass
class State:
    """What a worker keeps between commands."""

    channels: list[grpc.aio.Channel] = field(default_factory=list)
    streams: dict[str, list[asyncio.Task[None]]] = field(default_factory=dict)
    # The CHANGE events each named set of streams received (revisions are per server).
    receipts: defaultdict[str, Receipts] = field(default_factory=lambda: defaultdict(Receipts))
    progress: dict[str, int] = field(default_factory=dict)  # job id -> last progress written

    async def close(self) -> None:
        for tasks in self.streams.values():
            for task in tasks:
                task.cancel()
        for tasks in self.streams.values():
            await asyncio.gather(*tasks, return_exceptions=True)
        self.streams.clear()
        for channel in self.channels:
            await channel.close(None)
        self.channels.clear()


def _channel(state: State, address: str) -> grpc.aio.Channel:
    channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
    state.channels.append(channel)
    return channel


async def _sleep_until(deadline: float) -> None:
    await asyncio.sleep(max(0.0, deadline - time.monotonic()))


class _CpuWindow:
    """This process's CPU seconds between two monotonic instants."""

    def __init__(self, start_at: float, stop_at: float) -> None:
        self.cpu = 0.0
        self.task = asyncio.create_task(self._run(start_at, stop_at))

    async def _run(self, start_at: float, stop_at: float) -> None:
        await _sleep_until(start_at)
        before = own_cpu_seconds()
        await _sleep_until(stop_at)
        self.cpu = own_cpu_seconds() - before

    async def result(self) -> float:
        await self.task
        return self.cpu


# --- commands ----------------------------------------------------------------------


async def ping(state: State) -> float:
    return own_cpu_seconds()


async def cpu_now(state: State) -> tuple[float, float]:
    """(CPU seconds so far, monotonic now): two of them bound a window."""
    return own_cpu_seconds(), time.monotonic()


async def unary_load(
    state: State,
    address: str,
    method: str,
    slots: list[list[bytes]],
    start_at: float,
    stop_at: float,
) -> dict[str, float]:
    """One closed loop per slot, each calling `method` with its requests in turn (raw
    bytes: the client spends nothing on protobuf), from now until `stop_at`; counts the
    calls that complete within [start_at, stop_at]."""
    channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
    try:
        await channel.channel_ready()
        call = channel.unary_unary(method, None, None)
        counted = errors = 0

        async def loop(requests: list[bytes]) -> None:
            nonlocal counted, errors
            index = 0
            while time.monotonic() < stop_at:
                try:
                    await call(requests[index % len(requests)])
                except grpc.aio.AioRpcError:
                    errors += 1
                index += 1
                if start_at <= time.monotonic() <= stop_at:
                    counted += 1

        window = _CpuWindow(start_at, stop_at)
        await asyncio.gather(*(loop(requests) for requests in slots))
        cpu = await window.result()
    finally:
        await channel.close(None)
    return {"calls": counted, "errors": errors, "cpu": cpu, "seconds": stop_at - start_at}


async def open_streams(
    state: State,
    name: str,
    address: str,
    job_ids: list[str],
    batch: int,
    per_channel: int,
    patience: float = 120.0,
) -> dict[str, float]:
    """Open one WatchMapImportStatus stream per job id (ids may repeat), in batches:
    each batch is open (its SYNCED event received) before the next starts."""
    watch = None
    tasks = state.streams.setdefault(name, [])
    started = time.monotonic()
    for offset in range(0, len(job_ids), batch):
        opened: list[asyncio.Future[None]] = []
        for job_id in job_ids[offset : offset + batch]:
            if watch is None or len(tasks) % per_channel == 0:
                watch = _channel(state, address).unary_stream(
                    WATCH,
                    request_serializer=mi.WatchMapImportStatusRequest.SerializeToString,
                    response_deserializer=mi.WatchMapImportStatusResponse.FromString,
                )
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            opened.append(future)
            request = mi.WatchMapImportStatusRequest(import_request_ids=[job_id])
            request.heartbeat_interval.FromSeconds(300)
            tasks.append(asyncio.create_task(_watch(state.receipts[name], watch, request, future)))
        await asyncio.wait_for(asyncio.gather(*opened), patience)
    return {"streams": len(tasks), "seconds": time.monotonic() - started}


async def _watch(
    receipts: Receipts,
    watch: Any,
    request: mi.WatchMapImportStatusRequest,
    opened: asyncio.Future[None],
) -> None:
    try:
        call = watch(request)
        async for event in call:
            now = time.monotonic_ns()
            if event.type == watch_pb2.WATCH_EVENT_TYPE_CHANGE:
                receipts.times.append((event.revision, now))
                receipts.arrivals[event.revision] += 1
                receipts.arrived.set()
            elif event.type == watch_pb2.WATCH_EVENT_TYPE_SYNCED and not opened.done():
                opened.set_result(None)
        if not opened.done():
            opened.set_exception(RuntimeError("watch stream ended before SYNCED"))
    except grpc.aio.AioRpcError as error:
        if not opened.done():
            opened.set_exception(RuntimeError(f"watch failed: {error.code()} {error.details()}"))


async def close_streams(state: State, name: str) -> int:
    """Cancel the streams `name` and forget what they received."""
    state.receipts.pop(name, None)
    tasks = state.streams.pop(name, [])
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return len(tasks)


async def wait_revision(
    state: State, name: str, revision: int, expected: int, patience: float = 60.0
) -> dict[str, float]:
    """Wait until `expected` of the streams `name` have received `revision` (or
    `patience` seconds passed); the first and last receipt times of the ones that did."""
    receipts = state.receipts[name]
    deadline = time.monotonic() + patience
    while receipts.arrivals[revision] < expected and time.monotonic() < deadline:
        receipts.arrived.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(receipts.arrived.wait(), max(0.0, deadline - time.monotonic()))
    times = [t for r, t in receipts.times if r == revision]
    return {
        "received": len(times),
        "first_ns": min(times, default=0),
        "last_ns": max(times, default=0),
    }


async def take_receipts(state: State, name: str) -> list[tuple[int, int]]:
    """The (revision, receipt ns) of every CHANGE the streams `name` got since last asked."""
    receipts = state.receipts[name]
    times, receipts.times = receipts.times, []
    receipts.arrivals.clear()
    return times


async def paced_updates(
    state: State,
    address: str,
    job_ids: list[str],
    rate: float,
    start_at: float,
    stop_at: float,
    seed: int = 1,
) -> dict[str, Any]:
    """Open loop: an UpdateMapImport of a random job every 1/rate seconds from
    `start_at` to `stop_at`, each on its own task so a slow answer delays no other.
    Returns (revision, sent ns, answered ns) per write and the CPU spent."""
    channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
    try:
        await channel.channel_ready()
        update = channel.unary_unary(UPDATE, None, mi.UpdateMapImportResponse.FromString)
        rng = random.Random(seed)
        samples: list[tuple[int, int, int]] = []
        errors = 0

        async def write(request: bytes) -> None:
            nonlocal errors
            sent = time.monotonic_ns()
            try:
                response = await update(request)
            except grpc.aio.AioRpcError:
                errors += 1
                return
            samples.append((response.map_import.revision, sent, time.monotonic_ns()))

        window = _CpuWindow(start_at, stop_at)
        pending: list[asyncio.Task[None]] = []
        count = int((stop_at - start_at) * rate)
        for index in range(count):
            job_id = rng.choice(job_ids)
            # A job is at progress 1 after create_jobs; every write moves it on, so every
            # write is a change (the progress is kept across commands).
            progress = state.progress[job_id] = (state.progress.get(job_id, 1) + 1) % 100
            request = jobs.update_request(job_id, progress).SerializeToString()
            await _sleep_until(start_at + index / rate)
            pending.append(asyncio.create_task(write(request)))
        await asyncio.gather(*pending)
        cpu = await window.result()
    finally:
        await channel.close(None)
    return {"samples": samples, "errors": errors, "cpu": cpu, "seconds": stop_at - start_at}


async def poll_status(
    state: State,
    address: str,
    job_id: str,
    interval: float,
    start_at: float,
    stop_at: float,
    seed: int = 2,
) -> dict[str, Any]:
    """GetMapImportStatus every `interval` seconds (from a random phase): (answered ns,
    revision) per poll."""
    channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
    try:
        await channel.channel_ready()
        get = channel.unary_unary(GET, None, mi.GetMapImportStatusResponse.FromString)
        request = mi.GetMapImportStatusRequest(import_request_id=job_id).SerializeToString()
        polls: list[tuple[int, int]] = []
        window = _CpuWindow(start_at, stop_at)
        at = start_at + random.Random(seed).uniform(0, interval)
        while at < stop_at + interval:
            await _sleep_until(at)
            response = await get(request)
            polls.append((time.monotonic_ns(), response.map_import.revision))
            at += interval
        cpu = await window.result()
    finally:
        await channel.close(None)
    return {"polls": polls, "cpu": cpu, "seconds": stop_at - start_at}


# --- in-process writes (the core alone, raw sqlite3, raw psycopg) --------------------


async def core_updates(
    state: State, database_url: str, synchronous: str, writers: int, warmup: float, seconds: float
) -> dict[str, float]:
    """`writers` asyncio tasks calling Core.update on a Store in this process, each on a
    job of its own, for `warmup` + `seconds`; counts the updates of the last `seconds`."""
    from jobstatus_server.contract.kinds import MAP_IMPORT
    from jobstatus_server.contract.tenants import DEFAULT_TENANT
    from jobstatus_server.state.store import Store
    from jobstatus_server.usecases.jobs import Core

    store = Store(database_url, synchronous)
    await store.start()
    try:
        core = Core(store)
        ids = [f"core-{index:04d}" for index in range(writers)]
        for job_id in ids:
            with contextlib.suppress(Exception):
                await core.create(MAP_IMPORT, DEFAULT_TENANT, "", jobs.map_import(job_id, 0))
        loop = asyncio.get_running_loop()
        start_at = loop.time() + warmup
        stop_at = start_at + seconds
        counted = 0

        async def writer(job_id: str) -> None:
            nonlocal counted
            progress = 0
            while loop.time() < stop_at:
                progress = (progress + 1) % 100
                request = jobs.update_request(job_id, progress)
                await core.update(
                    MAP_IMPORT, DEFAULT_TENANT, request.map_import, request.update_mask, 0
                )
                if start_at <= loop.time() <= stop_at:
                    counted += 1

        window = _CpuWindow(start_at, stop_at)
        await asyncio.gather(*(writer(job_id) for job_id in ids))
        cpu = await window.result()
    finally:
        await store.close()
    return {"updates": counted, "cpu": cpu, "seconds": seconds}


async def raw_updates(
    state: State, path: str, synchronous: str, warmup: float, seconds: float
) -> dict[str, float]:
    """The same row update and event insert with plain sqlite3: one writer, one
    transaction per update, on the jobstatus schema (migrated by the Store)."""
    return await asyncio.to_thread(_raw_updates, path, synchronous, warmup, seconds)


def _raw_updates(path: str, synchronous: str, warmup: float, seconds: float) -> dict[str, float]:
    from jobstatus_server.state.migrations import upgrade

    upgrade(f"sqlite:///{path}")
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        job_id = "raw-0000"
        data = jobs.map_import(job_id, 0).SerializeToString()
        revision = int(conn.execute("SELECT max(revision) FROM event").fetchone()[0] or 0)
        conn.execute(
            "INSERT OR IGNORE INTO job (tenant, kind, job_id, status, revision,"
            " create_revision, request_id, due_at, data)"
            " VALUES ('default', 'map_import', ?, 4, ?, ?, NULL, NULL, ?)",
            (job_id, revision, revision, data),
        )
        start_at = time.monotonic() + warmup
        stop_at = start_at + seconds
        counted = 0
        cpu_before = 0.0
        measuring = False
        while (now := time.monotonic()) < stop_at:
            if not measuring and now >= start_at:
                measuring, cpu_before = True, own_cpu_seconds()
            revision += 1
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "UPDATE job SET status = ?, revision = ?, due_at = NULL, data = ?"
                " WHERE tenant = 'default' AND kind = 'map_import' AND job_id = ?",
                (4, revision, data, job_id),
            )
            conn.execute(
                "INSERT INTO event (revision, tenant, kind, job_id, status, created_at, data)"
                " VALUES (?, 'default', 'map_import', ?, 4, ?, ?)",
                (revision, job_id, time.time(), data),
            )
            conn.execute("COMMIT")
            if measuring:
                counted += 1
        cpu = own_cpu_seconds() - cpu_before
    finally:
        conn.close()
    return {"updates": counted, "cpu": cpu, "seconds": seconds}


async def raw_pg_updates(
    state: State, database_url: str, warmup: float, seconds: float
) -> dict[str, float]:
    """The same row update and event insert with plain psycopg: one writer, one
    transaction per update, on the jobstatus schema (migrated as the Store does)."""
    return await asyncio.to_thread(_raw_pg_updates, database_url, warmup, seconds)


def _raw_pg_updates(database_url: str, warmup: float, seconds: float) -> dict[str, float]:
    import psycopg

    from jobstatus_server.state.migrations import upgrade
    from jobstatus_server.state.notify import conninfo

    upgrade(database_url)
    job_id = "raw-0000"
    data = jobs.map_import(job_id, 0).SerializeToString()
    # psycopg prepares a statement on the server after its fifth execution.
    with psycopg.connect(conninfo(database_url)) as conn:
        row = conn.execute("SELECT coalesce(max(revision), 0) FROM event").fetchone()
        revision = int(row[0]) if row is not None else 0
        conn.execute(
            "INSERT INTO job (tenant, kind, job_id, status, revision, create_revision,"
            " request_id, due_at, data) VALUES ('default', 'map_import', %s, 4, %s, %s,"
            " NULL, NULL, %s) ON CONFLICT DO NOTHING",
            (job_id, revision, revision, data),
        )
        conn.commit()
        start_at = time.monotonic() + warmup
        stop_at = start_at + seconds
        counted = 0
        cpu_before = 0.0
        measuring = False
        while (now := time.monotonic()) < stop_at:
            if not measuring and now >= start_at:
                measuring, cpu_before = True, own_cpu_seconds()
            revision += 1
            conn.execute(
                "UPDATE job SET status = %s, revision = %s, due_at = NULL, data = %s"
                " WHERE tenant = 'default' AND kind = 'map_import' AND job_id = %s",
                (4, revision, data, job_id),
            )
            conn.execute(
                "INSERT INTO event (revision, tenant, kind, job_id, status, created_at, data)"
                " VALUES (%s, 'default', 'map_import', %s, 4, %s, %s)",
                (revision, job_id, time.time(), data),
            )
            conn.commit()
            if measuring:
                counted += 1
        cpu = own_cpu_seconds() - cpu_before
    return {"updates": counted, "cpu": cpu, "seconds": seconds}


# --- the production-like mix ----------------------------------------------------------


async def paced_writers(
    state: State,
    address: str,
    job_ids: list[str],
    writers: int,
    rate: float,
    start_at: float,
    stop_at: float,
    seed: int = 3,
) -> dict[str, Any]:
    """`writers` clients sharing one connection, each writing a random job of its own
    share at rate/writers per second on its own schedule (a write that is late goes at
    once; a writer has one write outstanding). Returns (revision, sent ns, answered ns)
    per write, the latencies in ms, and the CPU spent."""
    channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
    try:
        await channel.channel_ready()
        update = channel.unary_unary(UPDATE, None, mi.UpdateMapImportResponse.FromString)
        samples: list[tuple[int, int, int]] = []
        errors = 0
        interval = writers / rate

        async def writer(index: int, mine: list[str]) -> None:
            nonlocal errors
            rng = random.Random(seed * 1000 + index)
            at = start_at + rng.uniform(0, interval)
            while at < stop_at:
                await _sleep_until(at)
                job_id = rng.choice(mine)
                progress = state.progress[job_id] = (state.progress.get(job_id, 1) + 1) % 100
                request = jobs.update_request(job_id, progress).SerializeToString()
                sent = time.monotonic_ns()
                try:
                    response = await update(request)
                except grpc.aio.AioRpcError:
                    errors += 1
                else:
                    samples.append((response.map_import.revision, sent, time.monotonic_ns()))
                at += interval

        window = _CpuWindow(start_at, stop_at)
        shares = [job_ids[index::writers] or job_ids for index in range(writers)]
        await asyncio.gather(*(writer(index, mine) for index, mine in enumerate(shares)))
        cpu = await window.result()
    finally:
        await channel.close(None)
    return {"samples": samples, "errors": errors, "cpu": cpu, "seconds": stop_at - start_at}


async def paced_gets(
    state: State,
    address: str,
    job_ids: list[str],
    rate: float,
    start_at: float,
    stop_at: float,
    seed: int = 4,
) -> dict[str, Any]:
    """Open loop: a GetMapImportStatus of a random job every 1/rate seconds, each on its
    own task; the latency of each in ms."""
    channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
    try:
        await channel.channel_ready()
        get = channel.unary_unary(GET, None, None)
        rng = random.Random(seed)
        requests = {
            job_id: mi.GetMapImportStatusRequest(import_request_id=job_id).SerializeToString()
            for job_id in job_ids
        }
        latencies: list[float] = []
        errors = 0

        async def call(request: bytes) -> None:
            nonlocal errors
            sent = time.monotonic_ns()
            try:
                await get(request)
            except grpc.aio.AioRpcError:
                errors += 1
                return
            latencies.append((time.monotonic_ns() - sent) / 1e6)

        window = _CpuWindow(start_at, stop_at)
        pending: set[asyncio.Task[None]] = set()
        count = int((stop_at - start_at) * rate)
        for index in range(count):
            request = requests[rng.choice(job_ids)]
            await _sleep_until(start_at + index / rate)
            task = asyncio.create_task(call(request))
            pending.add(task)
            task.add_done_callback(pending.discard)
        await asyncio.gather(*pending)
        cpu = await window.result()
    finally:
        await channel.close(None)
    return {"latencies": latencies, "errors": errors, "cpu": cpu, "seconds": stop_at - start_at}


# --- the dashboard's SSE streams ------------------------------------------------------

DASHBOARD_KINDS = ("map_import", "prepared_delivery", "dataset", "catalog_import")


async def open_pages(
    state: State,
    name: str,
    host: str,
    port: int,
    pages: int,
    batch: int,
    heartbeat: float = 5.0,
    patience: float = 120.0,
) -> dict[str, float]:
    """Open `pages` dashboards' streams: each page follows every kind's SSE watch as
    the dashboard does (`envelope=true`, from the current state), so 4 streams a page;
    each stream is open once its `synced` event arrived. CHANGE receipts are recorded
    as for gRPC streams (take_receipts)."""
    tasks = state.streams.setdefault(name, [])
    receipts = state.receipts[name]
    started = time.monotonic()
    streams = [kind for _ in range(pages) for kind in DASHBOARD_KINDS]
    for offset in range(0, len(streams), batch):
        opened: list[asyncio.Future[None]] = []
        for kind in streams[offset : offset + batch]:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            opened.append(future)
            path = f"/api/v1/watch/{kind}?envelope=true&heartbeat={heartbeat:g}"
            tasks.append(asyncio.create_task(_sse(receipts, host, port, path, future)))
        await asyncio.wait_for(asyncio.gather(*opened), patience)
    return {"streams": len(tasks), "seconds": time.monotonic() - started}


async def _sse(
    receipts: Receipts, host: str, port: int, path: str, opened: asyncio.Future[None]
) -> None:
    """One text/event-stream over HTTP/1.1 (chunked), read on asyncio streams: a client
    as lean as the page's fetch() reader, so the load side stays cheap."""
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as error:
        if not opened.done():
            opened.set_exception(RuntimeError(f"SSE connect failed: {error}"))
        return
    try:
        request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n\r\n"
        writer.write(request.encode())
        await writer.drain()
        status = await reader.readline()
        if b" 200 " not in status:
            raise RuntimeError(f"SSE answered {status!r}")
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        buffer = b""
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                break
            chunk = await reader.readexactly(size + 2)
            now = time.monotonic_ns()
            buffer += chunk[:-2]
            *frames, buffer = buffer.split(b"\n\n")
            for frame in frames:
                event, revision = b"", -1
                for line in frame.split(b"\n"):
                    if line.startswith(b"event: "):
                        event = line[7:]
                    elif line.startswith(b"id: "):
                        revision = int(line[4:])
                if event == b"change":
                    receipts.times.append((revision, now))
                    receipts.arrivals[revision] += 1
                    receipts.arrived.set()
                elif event == b"synced" and not opened.done():
                    opened.set_result(None)
        if not opened.done():
            opened.set_exception(RuntimeError("SSE stream ended before synced"))
    except (OSError, RuntimeError, ValueError, asyncio.IncompleteReadError) as error:
        if not opened.done():
            opened.set_exception(RuntimeError(f"SSE stream failed: {error}"))
    finally:
        writer.close()


async def open_watch_all(state: State, name: str, address: str) -> dict[str, float]:
    """One gRPC WatchMapImportStatus of every map import: the cheapest follower."""
    started = time.monotonic()
    watch = _channel(state, address).unary_stream(
        WATCH,
        request_serializer=mi.WatchMapImportStatusRequest.SerializeToString,
        response_deserializer=mi.WatchMapImportStatusResponse.FromString,
    )
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    request = mi.WatchMapImportStatusRequest()
    request.heartbeat_interval.FromSeconds(300)
    tasks = state.streams.setdefault(name, [])
    tasks.append(asyncio.create_task(_watch(state.receipts[name], watch, request, future)))
    await asyncio.wait_for(future, 120)
    return {"streams": len(tasks), "seconds": time.monotonic() - started}

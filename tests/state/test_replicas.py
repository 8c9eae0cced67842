"""Three server processes on one PostgreSQL database, with writers and watchers on each.

Every watcher must receive every change once, in revision order, whichever
replica the change was written on: in steady state, when a replica dies by
SIGKILL (its clients resume on another replica from their last revision),
and when PostgreSQL restarts under load (no acknowledged write is lost,
health goes NOT_SERVING and back, watchers carry on).

And one replica that does not hear of another's commit (its NOTIFY lost: made by
a Store that notifies elsewhere, or straight in SQL): its poll still publishes it
to watchers and reads; its own next commit waits behind it (never past a gap);
its reads still see its own writes; min_revision / X-Min-Revision wait for it.

PostgreSQL only: replicas share one database server, which SQLite (one machine's file) is not.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial

import grpc
import httpx
import psycopg
import pytest
from google.protobuf import duration_pb2, field_mask_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.engine import make_url

from jobstatus.v1 import map_import_pb2 as mi
from jobstatus.v1 import map_import_pb2_grpc as mi_grpc
from jobstatus.v1 import watch_pb2
from tests.pg import PgCluster
from tests.serverproc import ROOT, ServerProcess

CHANGE = watch_pb2.WATCH_EVENT_TYPE_CHANGE
HEARTBEAT = watch_pb2.WATCH_EVENT_TYPE_HEARTBEAT
IN_PROGRESS = mi.MAP_IMPORT_STATUS_IN_PROGRESS
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# Worth retrying on another replica: the replica or the database is away.
TRANSIENT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
JOBS, UPDATES = 16, 4  # per writer: 16 creates and 64 updates
REPLICAS = 3


@dataclass
class Cluster:
    pg: PgCluster
    url: str
    replicas: list[ServerProcess]

    @property
    def addresses(self) -> list[str]:
        return [replica.address for replica in self.replicas]

    def events(self, after: int, upto: int) -> list[tuple[int, str]]:
        """(revision, job id) of the map import events in (after, upto], from the table."""
        with psycopg.connect(self.pg.conninfo(make_url(self.url).database or "")) as conn:
            rows = conn.execute(
                "SELECT revision, job_id FROM event WHERE kind = 'map_import' "
                "AND revision > %s AND revision <= %s ORDER BY revision",
                (after, upto),
            ).fetchall()
        return [(int(r), str(j)) for r, j in rows]


@pytest.fixture(scope="module")
def cluster(pg_cluster: PgCluster) -> Iterator[Cluster]:
    url = pg_cluster.database("replicas")
    replicas = [ServerProcess(url, ["--grace", "1"]) for _ in range(REPLICAS)]
    # All three at once: each migrates at start, under the advisory lock.
    with ThreadPoolExecutor(REPLICAS) as pool:
        started = list(pool.map(lambda replica: replica.start(), replicas))
    yield Cluster(pg_cluster, url, started)
    with ThreadPoolExecutor(REPLICAS) as pool:
        list(pool.map(lambda replica: replica.stop(), replicas))


def _stub(address: str) -> tuple[grpc.Channel, mi_grpc.MapImportServiceStub]:
    channel = grpc.insecure_channel(address)
    return channel, mi_grpc.MapImportServiceStub(channel)


def _create(stub: mi_grpc.MapImportServiceStub, job_id: str) -> int:
    request = mi.CreateMapImportRequest(
        request_id=f"req-{job_id}", map_import=mi.MapImport(import_request_id=job_id)
    )
    return int(stub.CreateMapImport(request, timeout=10).map_import.revision)


@dataclass
class Writer:
    """Creates and updates its jobs, starting on one replica and moving on to the next
    when a call fails transiently; retries are idempotent (request_id, same values)."""

    addresses: list[str]
    index: int
    prefix: str
    acked: list[tuple[int, str]] = field(default_factory=list)
    failures: int = 0
    error: BaseException | None = None

    def job_ids(self) -> list[str]:
        return [f"{self.prefix}-{n}" for n in range(JOBS)]

    def run(self) -> None:
        try:
            for job_id in self.job_ids():
                self._call(job_id, partial(_create, job_id=job_id))
                for size in range(1, UPDATES + 1):
                    self._call(job_id, partial(self._update, job_id=job_id, size=size))
        except BaseException as error:
            self.error = error

    @staticmethod
    def _update(stub: mi_grpc.MapImportServiceStub, job_id: str, size: int) -> int:
        request = mi.UpdateMapImportRequest(
            map_import=mi.MapImport(
                import_request_id=job_id,
                status=IN_PROGRESS,
                meta_data=mi.MapImportMetaData(size=size),
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["status", "meta_data.size"]),
        )
        return int(stub.UpdateMapImport(request, timeout=10).map_import.revision)

    def _call(self, job_id: str, call: Callable[[mi_grpc.MapImportServiceStub], int]) -> None:
        deadline = time.monotonic() + 60
        while True:
            channel, stub = _stub(self.addresses[self.index])
            try:
                self.acked.append((call(stub), job_id))
                return
            except grpc.RpcError as error:
                assert isinstance(error, grpc.Call)
                if error.code() not in TRANSIENT or time.monotonic() > deadline:
                    raise
                self.failures += 1
                self.index = (self.index + 1) % len(self.addresses)
                time.sleep(0.1)
            finally:
                channel.close()


@dataclass
class Watcher:
    """Watches map imports from `start` on one replica; on any failure resumes from its
    last revision on the next replica; stops once it has reached `fence`."""

    addresses: list[str]
    index: int
    start: int
    ids: list[str] = field(default_factory=list)
    received: list[tuple[int, str]] = field(default_factory=list)
    last: int = 0
    resumes: int = 0
    fence: int | None = None
    error: BaseException | None = None
    _call: Iterator[mi.WatchMapImportStatusResponse] | None = None

    def done(self) -> bool:
        return self.fence is not None and self.last >= self.fence

    def run(self) -> None:
        self.last = self.start
        try:
            while not self.done():
                self._stream()
        except BaseException as error:
            self.error = error

    def _stream(self) -> None:
        channel, stub = _stub(self.addresses[self.index])
        request = mi.WatchMapImportStatusRequest(
            import_request_ids=self.ids,
            start_revision=self.last,
            heartbeat_interval=duration_pb2.Duration(seconds=1),
        )
        try:
            call = stub.WatchMapImportStatus(request)
            for event in call:
                if event.type == CHANGE:
                    job = event.map_import
                    assert event.revision > self.last, (event.revision, self.last)
                    assert job.revision == event.revision
                    self.received.append((event.revision, job.import_request_id))
                    self.last = event.revision
                elif event.type == HEARTBEAT:
                    self.last = max(self.last, event.revision)
                if self.done():
                    call.cancel()  # type: ignore[no-untyped-call]
                    return
        except grpc.RpcError as error:
            assert isinstance(error, grpc.Call)
            if error.code() == grpc.StatusCode.CANCELLED and self.done():
                return
            if error.code() not in TRANSIENT | {grpc.StatusCode.CANCELLED}:
                raise
            self.resumes += 1
            self.index = (self.index + 1) % len(self.addresses)
            time.sleep(0.1)
        finally:
            channel.close()


@dataclass
class Run:
    """Writers and watchers on every replica, from a fresh start revision."""

    cluster: Cluster
    tag: str
    start: int = 0
    writers: list[Writer] = field(default_factory=list)
    watchers: list[Watcher] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def begin(self) -> Run:
        addresses = self.cluster.addresses
        channel, stub = _stub(addresses[0])
        self.start = _create(stub, f"{self.tag}-start")
        channel.close()
        self.writers = [Writer(addresses, i, f"{self.tag}-w{i}") for i in range(REPLICAS)]
        for i in range(REPLICAS):
            self.watchers.append(Watcher(addresses, i, self.start))
            # Only writer 0's jobs, by id: the per-job fan-out on every replica.
            self.watchers.append(Watcher(addresses, i, self.start, self.writers[0].job_ids()))
        runs: list[Callable[[], None]] = [w.run for w in self.watchers]
        runs += [w.run for w in self.writers]
        for run in runs:
            thread = threading.Thread(target=run, daemon=True)
            thread.start()
            self.threads.append(thread)
        return self

    def acked(self) -> int:
        return sum(len(writer.acked) for writer in self.writers)

    def wait_until_each_writer_acked(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while min(len(writer.acked) for writer in self.writers) < count:
            assert time.monotonic() < deadline, [len(writer.acked) for writer in self.writers]
            assert all(writer.error is None for writer in self.writers), self.writers
            time.sleep(0.01)

    def finish(self) -> list[tuple[int, str]]:
        """Wait for the writers, write a fence, wait for the watchers to reach it, check
        them against the event table; return the events of the run."""
        for thread in self.threads[len(self.watchers) :]:
            thread.join(120)
        for writer in self.writers:
            assert writer.error is None, writer.error
        assert self.acked() == REPLICAS * JOBS * (1 + UPDATES)
        live = [r for r in self.cluster.replicas if r.process and r.process.poll() is None]
        channel, stub = _stub(live[0].address)
        fence = _create(stub, f"{self.tag}-fence")
        channel.close()
        for watcher in self.watchers:
            watcher.fence = fence
        for thread in self.threads[: len(self.watchers)]:
            thread.join(60)
        events = self.cluster.events(self.start, fence)
        for watcher in self.watchers:
            assert watcher.error is None, watcher.error
            assert watcher.done(), (watcher.last, fence)
            wanted = [e for e in events if not watcher.ids or e[1] in watcher.ids]
            assert watcher.received == wanted, _difference(watcher.received, wanted)
        # Every acknowledged write is in the log that every watcher received.
        assert {revision for writer in self.writers for revision, _ in writer.acked} <= {
            revision for revision, _ in events
        }
        return events


def _difference(got: list[tuple[int, str]], wanted: list[tuple[int, str]]) -> str:
    missing = sorted(set(wanted) - set(got))[:10]
    extra = sorted(set(got) - set(wanted))[:10]
    return f"{len(got)} received, {len(wanted)} wanted; missing {missing}; unexpected {extra}"


def test_every_watcher_on_every_replica_sees_every_change_once_in_order(
    cluster: Cluster,
) -> None:
    events = Run(cluster, "steady").begin().finish()
    assert len(events) == REPLICAS * JOBS * (1 + UPDATES) + 1


def test_clients_of_a_killed_replica_resume_on_another_without_a_gap(cluster: Cluster) -> None:
    run = Run(cluster, "sigkill").begin()
    run.wait_until_each_writer_acked(JOBS * (1 + UPDATES) // 4)
    victim = cluster.replicas[0]
    victim.kill()
    try:
        run.finish()
    finally:
        victim.start()
    moved = [w for w in run.watchers if w.resumes]
    assert moved, "no watcher was on the killed replica"
    assert run.writers[0].failures > 0


def _health(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            return int(stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status)
        except grpc.RpcError:
            return -1


def _wait_for_health(cluster: Cluster, status: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        seen = [_health(address) for address in cluster.addresses]
        if all(value == status for value in seen):
            return
        assert time.monotonic() < deadline, f"health is {seen}, not {status}"
        time.sleep(0.1)


def test_postgresql_restart_loses_no_acknowledged_write_and_watchers_resume(
    cluster: Cluster,
) -> None:
    run = Run(cluster, "pgrestart").begin()
    run.wait_until_each_writer_acked(JOBS * (1 + UPDATES) // 4)
    with cluster.pg.down():
        _wait_for_health(cluster, NOT_SERVING)
        time.sleep(0.5)  # writes keep failing meanwhile
    _wait_for_health(cluster, SERVING)
    events = run.finish()
    assert sum(writer.failures for writer in run.writers) > 0, "no write met the outage"
    # No acknowledged write is lost: each job is at least at its last acknowledged revision.
    channel, stub = _stub(cluster.addresses[0])
    try:
        for writer in run.writers:
            newest: dict[str, int] = {}
            for revision, job_id in writer.acked:
                newest[job_id] = max(newest.get(job_id, 0), revision)
            for job_id, revision in newest.items():
                got = stub.GetMapImportStatus(
                    mi.GetMapImportStatusRequest(import_request_id=job_id), timeout=10
                ).map_import
                assert got.revision >= revision
                assert got.meta_data.size == UPDATES
    finally:
        channel.close()
    assert events


# --- a lost NOTIFY ----------------------------------------------------------------------


@dataclass
class Lone:
    """One replica on a database of its own."""

    url: str
    conninfo: str
    server: ServerProcess


@pytest.fixture(scope="module")
def lone(pg_cluster: PgCluster) -> Iterator[Lone]:
    url = pg_cluster.database("lost_notify")
    server = ServerProcess(url, ["--grace", "1"]).start()
    yield Lone(url, pg_cluster.conninfo(make_url(url).database or ""), server)
    server.stop()


def _commit_unheard(conninfo: str, job_id: str, progress: int) -> int:
    """Commit a change of map import `job_id` (created when missing: START, else
    IN_PROGRESS) with `progress`, straight into the database as another replica would,
    but with no NOTIFY: the replica learns of it only from its poll of the event log
    (once a second), or when its own next commit finds a gap before it. Its revision."""
    with psycopg.connect(conninfo) as conn:  # one transaction, committed on leaving
        row = conn.execute(
            "SELECT value FROM counter WHERE name = 'revision' FOR UPDATE"
        ).fetchone()
        assert row is not None
        revision = int(str(row[0])) + 1
        found = conn.execute(
            "SELECT data FROM job WHERE tenant = 'default' AND kind = 'map_import' AND job_id = %s",
            (job_id,),
        ).fetchone()
        if found is None:
            job = mi.MapImport(import_request_id=job_id, status=mi.MAP_IMPORT_STATUS_START)
        else:
            job = mi.MapImport.FromString(bytes(found[0]))
            job.status = IN_PROGRESS
        job.meta_data.progress = progress
        job.revision = revision
        data = job.SerializeToString()
        if found is None:
            conn.execute(
                "INSERT INTO job (tenant, kind, job_id, status, revision, create_revision,"
                " data) VALUES ('default', 'map_import', %s, %s, %s, %s, %s)",
                (job_id, job.status, revision, revision, data),
            )
        else:
            conn.execute(
                "UPDATE job SET status = %s, revision = %s, data = %s"
                " WHERE tenant = 'default' AND kind = 'map_import' AND job_id = %s",
                (job.status, revision, data, job_id),
            )
        conn.execute(
            "INSERT INTO event (revision, tenant, kind, job_id, status, created_at, data)"
            " VALUES (%s, 'default', 'map_import', %s, %s, %s, %s)",
            (revision, job_id, job.status, time.time(), data),
        )
        conn.execute("UPDATE counter SET value = %s WHERE name = 'revision'", (revision,))
    return revision


def _progress(stub: mi_grpc.MapImportServiceStub, job_id: str, progress: int) -> int:
    """Set the job's progress on this replica; the revision of the write."""
    request = mi.UpdateMapImportRequest(
        map_import=mi.MapImport(
            import_request_id=job_id,
            status=IN_PROGRESS,
            meta_data=mi.MapImportMetaData(progress=progress),
        ),
        update_mask=field_mask_pb2.FieldMask(paths=["status", "meta_data.progress"]),
    )
    return int(stub.UpdateMapImport(request, timeout=10).map_import.revision)


def _get(stub: mi_grpc.MapImportServiceStub, job_id: str, min_revision: int = 0) -> mi.MapImport:
    """Get the job; a failure is an assertion naming what the read waited for."""
    request = mi.GetMapImportStatusRequest(import_request_id=job_id, min_revision=min_revision)
    try:
        return stub.GetMapImportStatus(request, timeout=10).map_import
    except grpc.RpcError as error:
        assert isinstance(error, grpc.Call)
        raise AssertionError(
            f"Get of {job_id} with min_revision {min_revision} failed with "
            f"{error.code().name} ({error.details()}): the replica's view never reached it"
        ) from None


def _unheard_commit(url: str) -> tuple[int, str]:
    """Commit one map import through another Store whose NOTIFY goes to a channel no
    replica listens on (a lost NOTIFY); its revision and job id."""
    writer = subprocess.Popen(
        [sys.executable, "-m", "tests.storewriter", url, "1", "1", "--unheard"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output, _ = writer.communicate(timeout=60)
    found = re.search(r"wrote 1 revisions (\d+)\.\.\d+", output)
    assert writer.returncode == 0 and found, output
    return int(found.group(1)), f"w{writer.pid}-0"


def test_a_commit_whose_notify_is_lost_reaches_watch_and_get_by_the_poll(
    lone: Lone,
) -> None:
    """NOTIFY is only a wake-up: a replica that never hears of another's commit still
    publishes it within a few poll intervals (the hub polls the event log every
    second), to its watchers and to its view (Get with min_revision)."""
    url, server = lone.url, lone.server
    channel, stub = _stub(server.address)
    try:
        # The replica's own commit first: it is at that revision, with a watch open.
        start = _create(stub, "heard")
        request = mi.WatchMapImportStatusRequest(
            start_revision=start, heartbeat_interval=duration_pb2.Duration(seconds=1)
        )
        stream = stub.WatchMapImportStatus(request, timeout=15)
        revision, job_id = _unheard_commit(url)
        assert revision == start + 1
        seen: list[tuple[int, int]] = []
        try:
            for event in stream:
                seen.append((event.type, event.revision))
                if event.type == CHANGE:
                    assert (event.revision, event.map_import.import_request_id) == (
                        revision,
                        job_id,
                    ), f"the watch received {seen}, not the unheard commit {revision}"
                    break
        except grpc.RpcError as error:
            assert isinstance(error, grpc.Call)
            raise AssertionError(
                f"a commit whose NOTIFY was lost (revision {revision}) never reached the "
                f"watch: the hub did not poll the event log; the watch saw (type, revision) "
                f"{seen}, then {error.code().name}"
            ) from None
        finally:
            stream.cancel()  # type: ignore[no-untyped-call]
        try:
            got = stub.GetMapImportStatus(
                mi.GetMapImportStatusRequest(import_request_id=job_id, min_revision=revision),
                timeout=15,
            ).map_import
        except grpc.RpcError as error:
            assert isinstance(error, grpc.Call)
            raise AssertionError(
                f"Get with min_revision {revision} (a commit whose NOTIFY was lost) failed "
                f"with {error.code().name}: the replica's view never reached it"
            ) from None
        assert got.revision == revision, got
    finally:
        channel.close()


def test_a_read_on_the_writing_replica_sees_its_write_while_its_hub_is_behind(
    lone: Lone,
) -> None:
    """Read-your-writes: another replica's commit is not heard of (no NOTIFY), then this
    replica writes: its commit waits behind the unheard one in the hub, and a Get sent
    right after the answer must show the write, not the state before it."""
    channel, stub = _stub(lone.server.address)
    try:
        _create(stub, "ryw")
        for round in range(1, 21):
            _commit_unheard(lone.conninfo, f"ryw-other-{round}", 0)
            written = _progress(stub, "ryw", round)
            got = _get(stub, "ryw")
            assert (got.revision, got.meta_data.progress) == (written, round), (
                f"read-your-writes broken: a Get right after the write of revision {written} "
                f"(progress {round}) answered revision {got.revision} "
                f"(progress {got.meta_data.progress})"
            )
    finally:
        channel.close()


def test_the_hub_publishes_an_unheard_commit_before_the_replicas_own_next_one(
    lone: Lone,
) -> None:
    """Never past a gap: when this replica's commit comes right after another replica's
    commit it has not heard of, its watchers get the other's change first, then its own;
    none is skipped."""
    channel, stub = _stub(lone.server.address)
    try:
        start = _create(stub, "gap")
        request = mi.WatchMapImportStatusRequest(
            start_revision=start, heartbeat_interval=duration_pb2.Duration(seconds=1)
        )
        stream = stub.WatchMapImportStatus(request, timeout=30)
        expected: list[tuple[int, str]] = []
        for round in range(1, 6):
            other = f"gap-other-{round}"
            expected.append((_commit_unheard(lone.conninfo, other, 0), other))
            expected.append((_progress(stub, "gap", round), "gap"))
        received: list[tuple[int, str]] = []
        try:
            for event in stream:
                if event.type == CHANGE:
                    received.append((event.revision, event.map_import.import_request_id))
                # A heartbeat names the hub's revision: everything up to it was sent.
                if len(received) >= len(expected) or (
                    event.type == HEARTBEAT and event.revision >= expected[-1][0]
                ):
                    break
        except grpc.RpcError as error:
            assert isinstance(error, grpc.Call)
            raise AssertionError(
                f"the watch ended with {error.code().name} after {received}; expected {expected}"
            ) from None
        finally:
            stream.cancel()  # type: ignore[no-untyped-call]
        assert received == expected, (
            "the hub published this replica's commit past another replica's unheard one "
            f"(a gap): the watch got {received}, expected {expected}"
        )
    finally:
        channel.close()


def test_min_revision_waits_for_a_commit_the_replica_has_not_heard_of(lone: Lone) -> None:
    """A read with min_revision (gRPC) or X-Min-Revision (REST) of a change committed
    elsewhere, not yet heard of here, waits until the replica has it (its poll), and
    never answers the older state its view holds."""
    channel, stub = _stub(lone.server.address)
    try:
        _create(stub, "minrev")
        assert _get(stub, "minrev").meta_data.progress == 0  # the view holds the job
        for progress in (7, 8):
            revision = _commit_unheard(lone.conninfo, "minrev", progress)
            got = _get(stub, "minrev", min_revision=revision)
            assert (got.revision, got.meta_data.progress) == (revision, progress), (
                f"Get with min_revision {revision} answered revision {got.revision} "
                f"(progress {got.meta_data.progress}): older than the revision asked for"
            )
        for progress in (9, 10):
            revision = _commit_unheard(lone.conninfo, "minrev", progress)
            answer = httpx.get(
                f"{lone.server.http_url}/api/v2/map/import/status/minrev",
                headers={"X-Min-Revision": str(revision)},
                timeout=10,
            )
            assert answer.status_code == 200, answer.text
            shown = answer.json()["metaData"]["progress"]
            assert shown == progress, (
                f"GET with X-Min-Revision {revision} answered progress {shown}, the state "
                f"before that revision (progress {progress})"
            )
    finally:
        channel.close()

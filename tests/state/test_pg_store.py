"""The store on PostgreSQL: what several replicas on one database rely on.

The crux: revisions become visible in commit order even when writers in
several processes commit at once, so a reader tailing the event log never
sees revision N+1 before N (it would skip N for good). The detector is
checked first against the trap it must catch: ids from a sequence, which
commit out of order (see k3s-io/kine).
"""

from __future__ import annotations

import asyncio
import random
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import psycopg
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from prometheus_client import REGISTRY
from sqlalchemy.engine import make_url

from jobstatus.v1 import map_import_pb2 as mi
from jobstatus_server.contract.errors import Unavailable
from jobstatus_server.contract.kinds import MAP_IMPORT
from jobstatus_server.state.store import KnownState, Store, Tx
from jobstatus_server.usecases.jobs import Core
from tests.pg import PgCluster
from tests.serverproc import ROOT

T = TypeVar("T")
WRITERS = 3
WRITES = 400  # per writer process


def _conninfo(cluster: PgCluster, url: str) -> str:
    return cluster.conninfo(make_url(url).database or "")


@dataclass
class GapDetector:
    """Tails `table` by `column` as the watch hub does, and records every time the next
    visible row is not the next number: a reader that trusted it would skip one."""

    conninfo: str
    table: str
    column: str
    stop: threading.Event = field(default_factory=threading.Event)
    gaps: list[tuple[int, int]] = field(default_factory=list)
    seen: int = 0
    polls: int = 0

    def run(self) -> None:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            while not self.stop.is_set():
                self.poll(conn)
            self.poll(conn)

    def poll(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        rows = conn.execute(
            f"SELECT {self.column} FROM {self.table} WHERE {self.column} > %s "
            f"ORDER BY {self.column} LIMIT 1000",
            (self.seen,),
        ).fetchall()
        self.polls += 1
        for (value,) in rows:
            number = int(str(value))
            if number != self.seen + 1:
                self.gaps.append((self.seen, number))
                return  # like the hub: never read past a gap; look again
            self.seen = number


def _tail(detector: GapDetector) -> threading.Thread:
    thread = threading.Thread(target=detector.run, daemon=True)
    thread.start()
    return thread


def test_the_detector_catches_sequence_ids_committing_out_of_order(
    pg_cluster: PgCluster,
) -> None:
    url = pg_cluster.database("kine_trap")
    conninfo = _conninfo(pg_cluster, url)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("CREATE TABLE trap (id bigserial PRIMARY KEY)")
    detector = GapDetector(conninfo, "trap", "id")
    done = threading.Event()

    def writer() -> None:
        with psycopg.connect(conninfo) as conn:
            while not done.is_set():
                conn.execute("INSERT INTO trap DEFAULT VALUES")
                time.sleep(random.random() / 500)
                conn.commit()

    tail = _tail(detector)
    writers = [threading.Thread(target=writer, daemon=True) for _ in range(4)]
    for thread in writers:
        thread.start()
    deadline = time.monotonic() + 20
    while not detector.gaps and time.monotonic() < deadline:
        time.sleep(0.05)
    done.set()
    detector.stop.set()
    for thread in [*writers, tail]:
        thread.join(10)
    assert detector.gaps, "sequence ids never showed a gap: the detector would prove nothing"


async def test_revisions_become_visible_in_commit_order_across_processes(
    pg_cluster: PgCluster,
) -> None:
    url = pg_cluster.database("visibility")
    store = Store(url)
    await store.start()  # migrates
    detector = GapDetector(_conninfo(pg_cluster, url), "event", "revision")
    tail = _tail(detector)
    writers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.storewriter",
            url,
            str(WRITES),
            "16",
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        for _ in range(WRITERS)
    ]
    snapshots = 0
    try:
        # Meanwhile, a snapshot (several statements) is one consistent read.
        while any(writer.returncode is None for writer in writers):
            # A page large enough for every job: one read transaction.
            page = await store.initial_state(MAP_IMPORT.name, "default", [], page=10**6).first()
            assert all(job.revision <= page.at.revision for job in page.jobs)
            assert len(page.jobs) == page.at.revision  # each write created one job
            snapshots += 1
            await asyncio.sleep(0.02)
        outputs = [(await writer.communicate())[0].decode() for writer in writers]
    finally:
        for writer in writers:
            if writer.returncode is None:
                writer.kill()
                await writer.wait()
        detector.stop.set()
        await asyncio.to_thread(tail.join, 30)
        await store.close()
    assert all(writer.returncode == 0 for writer in writers), outputs
    total = WRITERS * WRITES
    assert detector.gaps == [], f"a reader saw a revision before an earlier one: {detector.gaps}"
    assert detector.seen == total, (detector.seen, outputs)
    assert detector.polls > 20 and snapshots > 5, (detector.polls, snapshots)


@pytest.fixture
async def two_replicas(pg_cluster: PgCluster) -> AsyncIterator[tuple[Store, Store]]:
    url = pg_cluster.database("notify")
    first, second = Store(url), Store(url)
    await first.start()
    await second.start()
    yield first, second
    await first.close()
    await second.close()


def _create(job_id: str) -> Callable[[Tx], int]:
    def put(tx: Tx) -> int:
        job = mi.MapImport(import_request_id=job_id, status=mi.MAP_IMPORT_STATUS_START)
        return int(tx.put(MAP_IMPORT, "default", job, created=True).revision)

    return put


async def _heard(heard: asyncio.Queue[int], revision: int, within: float) -> None:
    """Wait (at most `within` s) for the NOTIFY of `revision`; fail with what came."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    got: list[int] = []
    while True:
        remaining = deadline - loop.time()
        try:
            got.append(await asyncio.wait_for(heard.get(), max(remaining, 0.01)))
        except TimeoutError:
            raise AssertionError(
                f"the other replica was never woken for commit {revision} (its NOTIFY); "
                f"it heard {got}"
            ) from None
        if got[-1] == revision:
            return


async def test_a_commit_wakes_the_other_replica_also_after_a_database_restart(
    pg_cluster: PgCluster, two_replicas: tuple[Store, Store]
) -> None:
    first, second = two_replicas
    heard: asyncio.Queue[int] = asyncio.Queue()
    first.on_commit(heard.put_nowait)
    assert first._listener is not None
    assert await asyncio.to_thread(first._listener.connected.wait, 10)

    revision = await second.transact(_create("notify-1"))
    # The store itself never polls: only the NOTIFY can have told `first`.
    await _heard(heard, revision, within=5)

    with pg_cluster.down():
        deadline = time.monotonic() + 10
        while first._listener.connected.is_set():  # it notices the connection is gone
            assert time.monotonic() < deadline, "the listener never noticed the database go"
            await asyncio.sleep(0.05)
        with pytest.raises(Unavailable):
            await second.transact(_create("during-outage"))
        with pytest.raises(Unavailable):
            await first.ping()
    await first.ping()
    assert await asyncio.to_thread(first._listener.connected.wait, 15)
    revision = await second.transact(_create("notify-2"))
    await _heard(heard, revision, within=5)

    # Nothing half-written: the failed write left no job and no event.
    assert await first.get(MAP_IMPORT, "default", "during-outage") is None
    page = await first.initial_state(MAP_IMPORT.name, "default", []).first()
    events = await first.events_after(0, 100)
    assert [e.revision for e in events] == list(range(1, page.at.revision + 1))
    assert sorted(job.job_id for job in page.jobs) == ["notify-1", "notify-2"]


async def test_a_write_on_a_connection_the_database_ended_runs_again_on_a_new_one(
    pg_cluster: PgCluster,
) -> None:
    """The writer keeps its connection from group to group. When the database ends it
    in between (a restart, a failover, an administrator), the next write is not refused:
    it never reached a COMMIT, so it runs again on a new connection."""
    url = pg_cluster.database("held")
    store = Store(url)
    await store.start()
    try:
        first = await store.transact(_create("held-1"))  # the writer now holds a connection
        with psycopg.connect(_conninfo(pg_cluster, url), autocommit=True) as admin:
            ended = admin.execute(
                "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchall()
            assert ended and all(done for _, done in ended)
            gone = [pid for pid, _ in ended]
            for _ in range(2000):  # until those backends have exited
                left = admin.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (gone,)
                ).fetchone()
                if left == (0,):
                    break
                await asyncio.sleep(0.005)
        second = await store.transact(_create("held-2"))
        assert second == first + 1
        assert await store.get(MAP_IMPORT, "default", "held-2") is not None
    finally:
        await store.close()


async def test_compaction_neither_blocks_writers_nor_runs_twice_at_once(
    pg_cluster: PgCluster, two_replicas: tuple[Store, Store]
) -> None:
    first, second = two_replicas
    for n in range(10):
        await first.transact(_create(f"compact-{n}"))
    conninfo = _conninfo(pg_cluster, first.url)
    with psycopg.connect(conninfo) as other:
        # Another replica is mid-compaction: it holds the compaction lock, has deleted
        # old events and moved the compaction point, and has not committed yet.
        other.execute("SELECT pg_advisory_xact_lock(%s)", (0x6A6F6273_00000002,))
        other.execute("DELETE FROM event WHERE revision <= 3")
        other.execute("UPDATE counter SET value = 3 WHERE name = 'compacted'")

        # Both finish while the other's compaction is still open (uncommitted): had
        # either waited for its locks, it would wait for good (the commit comes after).
        revision = await _while_open(other, second.transact(_create("while-compacting")), "a write")
        assert revision == 11
        # This replica skips its own compaction instead of waiting or racing.
        skipped = await _while_open(
            other, second.compact(keep_count=2, keep_age=3600), "a second compaction"
        )
        assert skipped == 0, "a replica compacted while another replica's compaction ran"
        assert await second.compacted() == 0, "an uncommitted compaction point was seen"
        other.commit()
    assert await second.compact(keep_count=2, keep_age=3600) == 9
    # The compaction point never moves back, whoever writes it last.
    assert await first.compact(keep_count=5, keep_age=3600) == 9
    assert [e.revision for e in await first.events_after(0, 100)] == [10, 11]


async def _while_open(
    other: psycopg.Connection[tuple[object, ...]], work: Awaitable[T], what: str
) -> T:
    """`work`'s result, which must come while `other`'s transaction stays open (it is
    committed only afterwards, so waiting for it would never end: bounded at 30 s)."""
    try:
        result = await asyncio.wait_for(work, 30)
    except TimeoutError:
        raise AssertionError(
            f"{what} waited for another replica's uncommitted compaction"
        ) from None
    assert other.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS, (
        "the other replica's compaction is no longer open: the test proves nothing"
    )
    return result


def _guesses(outcome: str) -> float:
    value = REGISTRY.get_sample_value("jobstatus_write_group_guesses_total", {"outcome": outcome})
    return value or 0.0


def _progress(job_id: str, progress: int, zoom: int = 0) -> tuple[mi.MapImport, FieldMask]:
    paths = ["status", "meta_data.progress"] + (["meta_data.zoom_level"] if zoom else [])
    job = mi.MapImport(
        import_request_id=job_id,
        status=mi.MAP_IMPORT_STATUS_IN_PROGRESS,
        meta_data=mi.MapImportMetaData(progress=progress, zoom_level=zoom),
    )
    return job, FieldMask(paths=paths)


async def test_a_guessed_group_commits_alone_and_yields_to_another_replicas_commit(
    two_replicas: tuple[Store, Store],
) -> None:
    """A group whose jobs the process knows (Store.known: the view) runs from that state
    and is sent whole, in one round trip, bumping the counter only from the revision that
    state is current at. When another replica has committed since, the guess writes
    nothing and the group runs again on the database's state: the other replica's
    change is kept, and the log has each revision once."""
    first, second = two_replicas
    core_first, core_second = Core(first), Core(second)
    job_id = "guess-1"
    created = await first.transact(_create(job_id))
    stored = await first.get(MAP_IMPORT, "default", job_id)
    assert stored is not None
    key = ("default", MAP_IMPORT.name, job_id)
    known: KnownState = (created, {key: stored.SerializeToString()})
    second.known = lambda keys: known if list(keys) == [key] else None

    committed, conflicts = _guesses("committed"), _guesses("conflict")
    job = await core_second.update(MAP_IMPORT, "default", *_progress(job_id, 10), 0)
    assert job.revision == created + 1 and job.meta_data.progress == 10
    assert _guesses("committed") == committed + 1 and _guesses("conflict") == conflicts

    # `second` goes on guessing from a state that is now old: `first` commits meanwhile.
    known = (job.revision, {key: job.SerializeToString()})
    theirs = await core_first.update(MAP_IMPORT, "default", *_progress(job_id, 20, zoom=7), 0)
    ours = await core_second.update(MAP_IMPORT, "default", *_progress(job_id, 30), 0)
    assert _guesses("conflict") == conflicts + 1 and _guesses("committed") == committed + 1
    assert ours.revision == theirs.revision + 1
    assert (ours.meta_data.progress, ours.meta_data.zoom_level) == (30, 7)  # read, not guessed
    assert await first.get(MAP_IMPORT, "default", job_id) == ours

    # After a conflict it guesses again only once a group found the counter where the
    # known state is.
    known = (ours.revision, {key: ours.SerializeToString()})
    again = await core_second.update(MAP_IMPORT, "default", *_progress(job_id, 40), 0)
    assert _guesses("committed") == committed + 1
    known = (again.revision, {key: again.SerializeToString()})
    last = await core_second.update(MAP_IMPORT, "default", *_progress(job_id, 50), 0)
    assert _guesses("committed") == committed + 2
    assert last.revision == again.revision + 1 == created + 5

    events = await first.events_after(0, 100)
    assert [e.revision for e in events] == list(range(1, last.revision + 1))
    progress = [MAP_IMPORT.message.FromString(e.data).meta_data.progress for e in events]
    assert progress == [0, 10, 20, 30, 40, 50]
    assert await first.get(MAP_IMPORT, "default", job_id) == last


async def test_a_write_whose_commit_fails_is_not_acknowledged(pg_cluster: PgCluster) -> None:
    """A write is answered only once its COMMIT succeeded: here PostgreSQL refuses the
    COMMIT (a deferred constraint trigger, checked at COMMIT, refuses jobs named
    `doomed-*`); the write fails, no listener (the hub, the view) hears of it, and the
    next write takes the revision it would have had."""
    url = pg_cluster.database("doomed")
    store = Store(url)
    await store.start()  # migrates
    with psycopg.connect(_conninfo(pg_cluster, url), autocommit=True) as admin:
        admin.execute(
            "CREATE FUNCTION doom() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN RAISE EXCEPTION 'refused at COMMIT'; END $$"
        )
        admin.execute(
            "CREATE CONSTRAINT TRIGGER doom AFTER INSERT ON event"
            " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW"
            " WHEN (NEW.job_id LIKE 'doomed-%') EXECUTE FUNCTION doom()"
        )
    heard: list[int] = []
    store.on_changes(lambda changes: heard.extend(c.revision for c in changes))
    try:
        before = await store.transact(_create("fine-1"))
        try:
            revision = await store.transact(_create("doomed-1"))
        except Exception as error:  # what PostgreSQL said at COMMIT
            assert "refused at COMMIT" in str(error), error
        else:
            raise AssertionError(
                f"a write whose COMMIT failed was acknowledged with revision {revision}"
            )
        assert heard == [before], f"listeners heard of an uncommitted change: {heard}"
        assert await store.get(MAP_IMPORT, "default", "doomed-1") is None
        after = await store.transact(_create("fine-2"))
        assert after == before + 1, (before, after)
        assert [e.revision for e in await store.events_after(0, 100)] == [before, after]
    finally:
        await store.close()

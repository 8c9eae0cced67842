"""The in-memory view behind Get and the documented REST paths (state/view.py).

- read-your-writes on one process, under concurrent writers, over gRPC and REST;
- with replicas on PostgreSQL: a read carrying the revision a write returned on
  replica A (`min_revision`, `X-Min-Revision`) shows that write on replica B; a
  revision the server does not reach in time answers DEADLINE_EXCEEDED (REST: 504
  in the path's error style); no replica ever answers an older revision of a job
  than one it already answered;
- a tiny memory budget (evictions, misses) answers exactly what the database holds;
- the view's hits, misses and evictions show in /metrics.
"""

from __future__ import annotations

import queue
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import pytest
from google.protobuf import field_mask_pb2
from sqlalchemy import create_engine, text

from jobstatus.v1 import catalog_import_pb2 as cat
from jobstatus.v1 import delivery_pb2 as dl
from jobstatus.v1 import map_import_pb2 as mi
from jobstatus_server.contract.kinds import MAP_IMPORT
from jobstatus_server.state.store import Store, Tx
from jobstatus_server.state.view import View
from tests.conftest import Databases, Stubs
from tests.pg import PgCluster
from tests.serverproc import ServerProcess

START = mi.MAP_IMPORT_STATUS_START
IN_PROGRESS = mi.MAP_IMPORT_STATUS_IN_PROGRESS
PROGRESS_MASK = field_mask_pb2.FieldMask(paths=["status", "meta_data.progress"])


def _create(stubs: Stubs, job_id: str) -> int:
    created = stubs.maps.CreateMapImport(
        mi.CreateMapImportRequest(map_import=mi.MapImport(import_request_id=job_id, status=START))
    )
    return created.map_import.revision


def _progress(stubs: Stubs, job_id: str, progress: int) -> int:
    """Set the job's progress; the revision of the write."""
    updated = stubs.maps.UpdateMapImport(
        mi.UpdateMapImportRequest(
            map_import=mi.MapImport(
                import_request_id=job_id,
                status=IN_PROGRESS,
                meta_data=mi.MapImportMetaData(progress=progress),
            ),
            update_mask=PROGRESS_MASK,
        )
    )
    return updated.map_import.revision


def _get(stubs: Stubs, job_id: str, min_revision: int = 0, timeout: float = 30) -> mi.MapImport:
    return stubs.maps.GetMapImportStatus(
        mi.GetMapImportStatusRequest(import_request_id=job_id, min_revision=min_revision),
        timeout=timeout,
    ).map_import


def _metric(http: httpx.Client, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", http.get("/metrics").text, re.MULTILINE)
    assert found is not None, name
    return float(found.group(1))


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.http_url, timeout=30) as client:
        yield client


# --- one process ----------------------------------------------------------------------


def test_every_acknowledged_write_is_read_back_under_concurrent_writers(
    stubs: Stubs, http: httpx.Client, uid: str
) -> None:
    """Each writer reads its own writes at once; readers read a shared job right after
    another client's write was acknowledged, and see it (or a later one)."""
    writers, rounds = 6, 15
    shared = f"{uid}-shared"
    _create(stubs, shared)
    acknowledged: queue.Queue[tuple[int, int] | None] = queue.Queue()
    problems: list[str] = []

    def own(n: int) -> None:
        job_id = f"{uid}-{n}"
        _create(stubs, job_id)
        for progress in range(1, rounds + 1):
            revision = _progress(stubs, job_id, progress)
            job = _get(stubs, job_id)
            if (job.revision, job.meta_data.progress) != (revision, progress):
                problems.append(f"gRPC {job_id}: wrote {revision}, read {job.revision}")
            body = http.get(f"/api/v2/map/import/status/{job_id}").json()
            if body["metaData"]["progress"] != progress:
                problems.append(f"REST {job_id}: wrote {progress}, read {body['metaData']}")

    def shared_writer() -> None:
        for progress in range(1, rounds * 2 + 1):
            acknowledged.put((_progress(stubs, shared, progress), progress))
        for _ in range(2):
            acknowledged.put(None)

    def shared_reader() -> None:
        while (item := acknowledged.get()) is not None:
            revision, progress = item
            job = _get(stubs, shared)
            if job.revision < revision or job.meta_data.progress < progress:
                problems.append(f"shared: acknowledged {revision}, read {job.revision}")

    with ThreadPoolExecutor(writers + 3) as pool:
        futures = [pool.submit(own, n) for n in range(writers)]
        futures += [pool.submit(shared_writer), pool.submit(shared_reader)]
        futures += [pool.submit(shared_reader)]
        for future in futures:
            future.result()
    assert problems == []


def test_a_revision_not_reached_in_time_is_deadline_exceeded(
    stubs: Stubs, http: httpx.Client, uid: str
) -> None:
    revision = _create(stubs, uid)
    assert _get(stubs, uid, min_revision=revision).revision == revision
    with pytest.raises(grpc.RpcError) as caught:
        _get(stubs, uid, min_revision=revision + 1_000_000, timeout=0.3)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The server is not stuck: the next read answers.
    assert _get(stubs, uid).revision == revision
    # A negative minimum is bad input.
    with pytest.raises(grpc.RpcError) as caught:
        _get(stubs, uid, min_revision=-1)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_rest_min_revision_header(stubs: Stubs, http: httpx.Client, uid: str) -> None:
    revision = _create(stubs, uid)
    path = f"/api/v2/map/import/status/{uid}"
    answer = http.get(path, headers={"X-Min-Revision": str(revision)})
    assert answer.status_code == 200
    assert answer.json()["importRequestId"] == uid
    bad = http.get(path, headers={"X-Min-Revision": "soon"})
    assert (bad.status_code, bad.json()["statusCode"]) == (400, 400)
    assert "X-Min-Revision" in bad.json()["message"]
    bad = http.get("/api/v2/import/status/42", headers={"X-Min-Revision": "-3"})
    assert bad.status_code == 400 and set(bad.json()) == {"message"}


def test_view_metrics(stubs: Stubs, http: httpx.Client, uid: str) -> None:
    _create(stubs, uid)
    hits = _metric(http, "jobstatus_view_hits_total")
    for _ in range(3):
        _get(stubs, uid)
    assert _metric(http, "jobstatus_view_hits_total") >= hits + 3
    misses = _metric(http, "jobstatus_view_misses_total")
    with pytest.raises(grpc.RpcError):
        _get(stubs, f"{uid}-never-made")
    assert _metric(http, "jobstatus_view_misses_total") >= misses + 1
    assert _metric(http, "jobstatus_view_evictions_total") >= 0
    assert _metric(http, "jobstatus_view_jobs") >= 1
    assert _metric(http, "jobstatus_view_bytes") > 0


# --- a tiny budget ----------------------------------------------------------------------


def test_a_tiny_budget_answers_what_the_database_holds(databases: Databases) -> None:
    url = databases.new("tiny")
    server = ServerProcess(url, ["--view-budget", "3000"]).start()
    try:
        stubs = Stubs.connect(server.address)
        ids = [f"tiny-{n}" for n in range(24)]
        for n, job_id in enumerate(ids):
            _create(stubs, job_id)
            for progress in range(n % 4):
                _progress(stubs, job_id, progress + 1)
        catalog = stubs.catalog.CreateImport(
            cat.CreateImportRequest(
                catalog_import=cat.CatalogImport(type=cat.CATALOG_IMPORT_TYPE_PRODUCTS)
            )
        ).catalog_import
        engine = create_engine(url)
        with engine.connect() as conn:
            stored = {
                str(job_id): mi.MapImport.FromString(bytes(data))
                for job_id, data in conn.execute(
                    text("SELECT job_id, data FROM job WHERE kind = 'map_import'")
                )
            }
        engine.dispose()
        assert sorted(stored) == sorted(ids)
        with httpx.Client(base_url=server.http_url, timeout=30) as http:
            for _ in range(2):  # the second round reads what the first one filled (or not)
                for job_id in reversed(ids):
                    assert _get(stubs, job_id) == stored[job_id]
                    body = http.get(f"/api/v2/map/import/status/{job_id}").json()
                    assert body["importRequestId"] == job_id
                    assert body["metaData"]["progress"] == stored[job_id].meta_data.progress
            answer = http.get(f"/api/v2/import/status/{catalog.id}").json()
            assert answer == {"id": catalog.id, "status": "WAITING", "type": "PRODUCTS"}
            assert _metric(http, "jobstatus_view_evictions_total") > 0
            assert _metric(http, "jobstatus_view_misses_total") > 0
            assert _metric(http, "jobstatus_view_bytes") <= 3000
        stubs.channel.close()
    finally:
        server.stop()


# --- replicas on PostgreSQL -----------------------------------------------------------


@pytest.fixture(scope="module")
def pair(pg_cluster: PgCluster) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Replica A (writes) and replica B (reads; a small budget, so it misses too)."""
    url = pg_cluster.database("view_pair")
    a = ServerProcess(url, ["--grace", "1"]).start()
    b = ServerProcess(url, ["--grace", "1", "--view-budget", "4000", "--view-wait", "0.5"])
    b.start()
    yield a, b
    a.stop()
    b.stop()


def test_min_revision_of_a_write_on_a_shows_it_on_b(
    pair: tuple[ServerProcess, ServerProcess], uid: str
) -> None:
    a, b = (Stubs.connect(server.address) for server in pair)
    try:
        _create(a, uid)
        with httpx.Client(base_url=pair[1].http_url, timeout=30) as http:
            for progress in range(1, 41):
                revision = _progress(a, uid, progress)
                job = _get(b, uid, min_revision=revision)
                assert job.revision >= revision and job.meta_data.progress >= progress
                body = http.get(
                    f"/api/v2/map/import/status/{uid}", headers={"X-Min-Revision": str(revision)}
                ).json()
                assert body["metaData"]["progress"] >= progress
            far = http.get(
                f"/api/v2/map/import/status/{uid}", headers={"X-Min-Revision": "999999999"}
            )
            assert far.status_code == 504 and far.json()["statusCode"] == 504
            far = http.get("/api/v2/import/status/7", headers={"X-Min-Revision": "999999999"})
            assert far.status_code == 504 and set(far.json()) == {"message"}
        with pytest.raises(grpc.RpcError) as caught:
            _get(b, uid, min_revision=999_999_999, timeout=5)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        a.channel.close()
        b.channel.close()


def test_no_replica_answers_an_older_revision_than_it_already_did(
    pair: tuple[ServerProcess, ServerProcess], uid: str
) -> None:
    """Writers on A, readers on B over gRPC and REST: per job, per reader and across all
    readers of B, the revisions answered never go back."""
    a, b = (Stubs.connect(server.address) for server in pair)
    jobs = [f"{uid}-{n}" for n in range(8)]
    for job_id in jobs:
        _create(a, job_id)
    done = threading.Event()
    problems: list[str] = []
    # gRPC: the highest revision B answered per job (anything answered after must be
    # at least as new).
    answered: dict[str, int] = dict.fromkeys(jobs, 0)
    lock = threading.Lock()

    def write(job_id: str) -> None:
        for progress in range(1, 26):
            _progress(a, job_id, progress)

    def read(reader: int) -> None:
        shown: dict[str, int] = {}  # REST: the progress this reader saw last, per job
        with httpx.Client(base_url=pair[1].http_url, timeout=30) as http:
            n = 0
            while not done.is_set():
                job_id = jobs[n % len(jobs)]
                n += 1
                if reader % 2:
                    with lock:
                        floor = answered[job_id]  # answered before this read was sent
                    revision = _get(b, job_id).revision
                    if revision < floor:
                        problems.append(f"{job_id}: answered {floor} before, then {revision}")
                    with lock:
                        answered[job_id] = max(answered[job_id], revision)
                    continue
                answer = http.get(f"/api/v2/map/import/status/{job_id}")
                assert answer.status_code == 200
                # The REST body has no revision: its progress only grows with it.
                progress = answer.json()["metaData"]["progress"]
                if progress < shown.get(job_id, 0):
                    problems.append(f"{job_id}: progress {shown[job_id]}, then {progress}")
                shown[job_id] = progress

    try:
        with ThreadPoolExecutor(len(jobs) + 4) as pool:
            readers = [pool.submit(read, n) for n in range(4)]
            writers = [pool.submit(write, job_id) for job_id in jobs]
            for future in writers:
                future.result()
            time.sleep(0.2)
            done.set()
            for future in readers:
                future.result()
        assert problems == []
        final = {job_id: _get(a, job_id).revision for job_id in jobs}
        for job_id in jobs:
            assert _get(b, job_id, min_revision=final[job_id]).revision == final[job_id]
    finally:
        a.channel.close()
        b.channel.close()


def test_replicas_writing_one_job_by_turns_keep_each_others_changes(
    pair: tuple[ServerProcess, ServerProcess], uid: str
) -> None:
    """A writes the job's progress, B its zoom level, by turns, each right after the
    other's write was acknowledged: every answer carries both latest values, so no write
    was made from an old state of the job, whether its group was guessed from the view
    (one round trip) or read from the database. Then A writes alone, and its groups are
    guessed."""
    a, b = (Stubs.connect(server.address) for server in pair)
    mask = {
        "progress": field_mask_pb2.FieldMask(paths=["status", "meta_data.progress"]),
        "zoom_level": field_mask_pb2.FieldMask(paths=["status", "meta_data.zoom_level"]),
    }
    with httpx.Client(base_url=pair[0].http_url, timeout=30) as http:
        try:
            revision = _create(a, uid)
            _get(b, uid, min_revision=revision)  # B's view holds the job too
            latest = {"progress": 0, "zoom_level": 1}  # the map rule's default zoom level
            for turn in range(1, 41):
                stubs, name = (a, "progress") if turn % 2 else (b, "zoom_level")
                latest[name] = value = turn if turn % 2 else turn % 29 + 2  # zoom: 2 to 30
                job = stubs.maps.UpdateMapImport(
                    mi.UpdateMapImportRequest(
                        map_import=mi.MapImport(
                            import_request_id=uid,
                            status=IN_PROGRESS,
                            meta_data=mi.MapImportMetaData(
                                progress=value if name == "progress" else 0,
                                zoom_level=value if name == "zoom_level" else 0,
                            ),
                        ),
                        update_mask=mask[name],
                    )
                ).map_import
                assert job.revision == revision + 1, (turn, job.revision, revision)
                revision = job.revision
                shown = {"progress": job.meta_data.progress, "zoom_level": job.meta_data.zoom_level}
                assert shown == latest, turn
            for stubs in (a, b):
                job = _get(stubs, uid, min_revision=revision)
                assert (job.revision, job.meta_data.progress, job.meta_data.zoom_level) == (
                    revision,
                    39,
                    40 % 29 + 2,
                )
            # A writing alone: its view is current, and its groups are guessed.
            guessed = _labelled(http, "jobstatus_write_group_guesses_total", 'outcome="committed"')
            for progress in range(41, 51):
                assert _progress(a, uid, progress) == revision + 1
                revision += 1
            assert (
                _labelled(http, "jobstatus_write_group_guesses_total", 'outcome="committed"')
                >= guessed + 8
            )
        finally:
            a.channel.close()
            b.channel.close()


async def test_a_job_read_ahead_of_the_feed_is_not_evicted_back_in_time(tmp_path: Path) -> None:
    """A replica's view reads jobs from the database ahead of its change feed, under a
    budget that holds one job. The feed's older change of an evicted job must not take
    its place: the next read answers the newer revision again, not the older one."""
    url = f"sqlite:///{tmp_path / 'ahead.db'}"
    writer, replica = Store(url), Store(url)
    await writer.start()
    await replica.start()  # started before the writes: its feed lags behind them

    async def write(job_id: str, progress: int) -> int:
        def put(tx: Tx) -> int:
            job = mi.MapImport(
                import_request_id=job_id,
                status=mi.MAP_IMPORT_STATUS_START,
                meta_data=mi.MapImportMetaData(progress=progress),
            )
            return int(tx.put(MAP_IMPORT, "default", job, created=progress == 0).revision)

        return await writer.transact(put)

    try:
        for progress in range(3):
            newest = await write("ahead", progress)
        await write("other", 0)
        view = View(replica, budget=1 << 30)
        view.start(0)
        first = await view.get(MAP_IMPORT, "default", "ahead")
        assert first is not None and first.revision == newest
        # From now on, room for one job (the view's exact count of it), not for two.
        view.budget = view.size + view.size // 4
        assert await view.get(MAP_IMPORT, "default", "other") is not None
        view.apply(await replica.events_after(0, 1))  # the feed's first, older change
        again = await view.get(MAP_IMPORT, "default", "ahead")
        assert again is not None and again.revision == newest
        view.apply(await replica.events_after(1, 100))  # caught up: eviction resumes
        assert view.size <= view.budget
        latest = await view.get(MAP_IMPORT, "default", "ahead")
        assert latest is not None and latest.revision == newest
    finally:
        await replica.close()
        await writer.close()


async def test_the_feed_never_moves_a_job_back_to_an_older_revision(tmp_path: Path) -> None:
    """Monotonic reads: a replica's view read a job from the database ahead of its
    change feed; when the feed's older changes of that job arrive, the view keeps the
    newer state it already answered (no budget pressure here: nothing is evicted)."""
    url = f"sqlite:///{tmp_path / 'monotonic.db'}"
    writer, replica = Store(url), Store(url)
    await writer.start()
    await replica.start()

    async def write(progress: int) -> int:
        def put(tx: Tx) -> int:
            job = mi.MapImport(
                import_request_id="mono",
                status=mi.MAP_IMPORT_STATUS_START,
                meta_data=mi.MapImportMetaData(progress=progress),
            )
            return int(tx.put(MAP_IMPORT, "default", job, created=progress == 0).revision)

        return await writer.transact(put)

    try:
        for progress in range(4):
            newest = await write(progress)
        view = View(replica)
        view.start(0)
        first = await view.get(MAP_IMPORT, "default", "mono")
        assert first is not None and first.revision == newest
        for revision in range(1, newest + 1):
            view.apply(await replica.events_after(revision - 1, 1))
            again = await view.get(MAP_IMPORT, "default", "mono")
            assert again is not None and again.revision == newest, (
                f"the view answered revision {newest} of the job, then revision "
                f"{again and again.revision} after the feed's older change {revision}: "
                "a read went back in time"
            )
    finally:
        await replica.close()
        await writer.close()


def _labelled(http: httpx.Client, name: str, labels: str) -> float:
    found = re.search(
        rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$",
        http.get("/metrics").text,
        re.MULTILINE,
    )
    return 0.0 if found is None else float(found.group(1))


def test_ready_answers_match_the_handlers_and_are_counted(
    stubs: Stubs, http: httpx.Client, uid: str
) -> None:
    """A GET that the view answers at once (http_api/fast_path.py sends the view's
    ready messages) answers the bytes and headers the handler does, and counts in
    /metrics as one request, one latency and one view hit, once per request."""
    revision = _create(stubs, uid)
    _progress(stubs, uid, 40)
    stubs.deliveries.CreatePreparedDelivery(
        dl.CreatePreparedDeliveryRequest(
            prepared_delivery=dl.PreparedDelivery(
                catalog_id=uid, status=dl.PREPARED_DELIVERY_STATUS_START
            )
        )
    )
    catalog = stubs.catalog.CreateImport(
        cat.CreateImportRequest(
            catalog_import=cat.CatalogImport(type=cat.CATALOG_IMPORT_TYPE_PRODUCTS)
        )
    ).catalog_import
    # Each path, and a header it does not read that takes the handler's way.
    for template, job_id, unread in (
        ("/api/v1/map/import/status/{importRequestId}", uid, "api-key"),
        ("/api/v2/map/import/status/{importRequestId}", uid, "api-key"),
        ("/api/v1/delivery/preparedDelivery/{catalogId}", uid, "api-key"),
        ("/api/v2/import/status/{id}", catalog.id, "x-api-key"),
    ):
        path = re.sub(r"\{\w+\}", job_id, template)
        route = f'method="GET",route="{template}"'
        requests = _labelled(http, "jobstatus_http_requests_total", f'code="200",{route}')
        seconds = _labelled(http, "jobstatus_http_seconds_count", route)
        hits = _metric(http, "jobstatus_view_hits_total")
        ready = [http.get(path) for _ in range(4)]
        ready.append(http.get(path, headers={"X-Min-Revision": str(revision)}))
        handled = http.get(path, headers={unread: "not read here"})
        assert handled.status_code == 200, handled.text
        for answer in ready:
            assert answer.status_code == 200
            assert answer.content == handled.content
            assert [(k, v) for k, v in answer.headers.items() if k != "date"] == [
                (k, v) for k, v in handled.headers.items() if k != "date"
            ]
        after = _labelled(http, "jobstatus_http_requests_total", f'code="200",{route}')
        assert after == requests + 6, template
        assert _labelled(http, "jobstatus_http_seconds_count", route) == seconds + 6
        assert _metric(http, "jobstatus_view_hits_total") >= hits + 6


def test_each_grpc_answer_is_counted_once(stubs: Stubs, http: httpx.Client, uid: str) -> None:
    """The OK answers of a unary method are tallied on the loop and added at each
    scrape: /metrics shows each call once in the call count, in the latency histogram
    (count, +Inf bucket, a sum that grew) and, for a read, as one view hit."""
    _create(stubs, uid)
    method = 'method="GetMapImportStatus"'
    calls = _labelled(http, "jobstatus_rpcs_total", f'code="OK",{method}')
    count = _labelled(http, "jobstatus_rpc_seconds_count", method)
    total = _labelled(http, "jobstatus_rpc_seconds_sum", method)
    hits = _metric(http, "jobstatus_view_hits_total")
    for _ in range(7):
        _get(stubs, uid)
    assert _labelled(http, "jobstatus_rpcs_total", f'code="OK",{method}') == calls + 7
    assert _labelled(http, "jobstatus_rpc_seconds_count", method) == count + 7
    everything = _labelled(http, "jobstatus_rpc_seconds_bucket", f'le="+Inf",{method}')
    assert everything == count + 7
    assert _labelled(http, "jobstatus_rpc_seconds_sum", method) > total
    # A scrape with no call between adds nothing (a tally is added once).
    assert _labelled(http, "jobstatus_rpcs_total", f'code="OK",{method}') == calls + 7
    assert _metric(http, "jobstatus_view_hits_total") == hits + 7

"""Get*History and GET /api/v1/history/{kind}/{id}: a job's changes, oldest first.

Every change of a job in revision order, with its time and the job as of it; paging;
the caller's tenant only (the scope matrix is test_tenants.py); honest compaction.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC

import grpc
import httpx
import pytest
from google.protobuf import field_mask_pb2

from jobstatus import AsyncClient, Client
from jobstatus.v1 import catalog_import_pb2 as cat
from jobstatus.v1 import dataset_pb2 as ds
from jobstatus.v1 import delivery_pb2 as dl
from jobstatus.v1 import map_import_pb2 as mi
from tests.conftest import Databases, Stubs
from tests.restkit import DATETIME, keyed_server, metadata
from tests.rpcerrors import fails
from tests.serverproc import ServerProcess

IN_PROGRESS = mi.MAP_IMPORT_STATUS_IN_PROGRESS


def _map_job(stubs: Stubs, job_id: str, steps: int) -> list[mi.MapImport]:
    """A map import created, started and moved `steps` times; every version written."""
    written = [
        stubs.maps.CreateMapImport(
            mi.CreateMapImportRequest(map_import=mi.MapImport(import_request_id=job_id))
        ).map_import
    ]
    written.append(
        stubs.maps.UpdateMapImport(
            mi.UpdateMapImportRequest(
                map_import=mi.MapImport(import_request_id=job_id, status=IN_PROGRESS)
            )
        ).map_import
    )
    for progress in range(1, steps + 1):
        written.append(
            stubs.maps.UpdateMapImport(
                mi.UpdateMapImportRequest(
                    map_import=mi.MapImport(
                        import_request_id=job_id,
                        meta_data=mi.MapImportMetaData(progress=progress),
                    )
                )
            ).map_import
        )
    return written


def test_every_change_in_order_with_its_time_and_the_job_as_of_it(stubs: Stubs, uid: str) -> None:
    written = _map_job(stubs, uid, 3)
    # Another job's changes in between are not this job's history.
    _map_job(stubs, uid + "-other", 1)
    page = stubs.maps.GetMapImportHistory(mi.GetMapImportHistoryRequest(import_request_id=uid))
    assert [c.map_import for c in page.changes] == written
    assert [c.revision for c in page.changes] == [j.revision for j in written]
    assert [c.time for c in page.changes] == [j.update_time for j in written]
    assert page.next_page_token == ""
    assert page.oldest_revision >= 1
    assert not page.truncated


def test_pages_follow_each_other_without_gap_or_repeat(stubs: Stubs, uid: str) -> None:
    written = _map_job(stubs, uid, 9)  # 11 changes
    seen: list[int] = []
    token = ""
    pages = 0
    while True:
        page = stubs.maps.GetMapImportHistory(
            mi.GetMapImportHistoryRequest(import_request_id=uid, page_size=4, page_token=token)
        )
        pages += 1
        assert len(page.changes) <= 4
        seen.extend(c.revision for c in page.changes)
        token = page.next_page_token
        if not token:
            break
    assert pages == 3
    assert seen == [j.revision for j in written]


def test_a_token_of_another_job_or_a_made_up_one_is_invalid(stubs: Stubs, uid: str) -> None:
    _map_job(stubs, uid, 3)
    _map_job(stubs, uid + "-b", 3)
    token = stubs.maps.GetMapImportHistory(
        mi.GetMapImportHistoryRequest(import_request_id=uid, page_size=1)
    ).next_page_token
    assert token
    for bad_request in (
        mi.GetMapImportHistoryRequest(import_request_id=uid + "-b", page_token=token),
        mi.GetMapImportHistoryRequest(import_request_id=uid, page_token=token[:-3] + "AAA"),
        mi.GetMapImportHistoryRequest(import_request_id=uid, page_token="nonsense"),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            stubs.maps.GetMapImportHistory(bad_request)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_an_unknown_job_is_not_found(stubs: Stubs, uid: str) -> None:
    failure = fails(
        lambda: stubs.maps.GetMapImportHistory(mi.GetMapImportHistoryRequest(import_request_id=uid))
    )
    assert failure.code == grpc.StatusCode.NOT_FOUND
    assert failure.info is not None and failure.info.reason == "MAP.notFound"
    with pytest.raises(grpc.RpcError) as caught:
        stubs.maps.GetMapImportHistory(mi.GetMapImportHistoryRequest())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_every_kind_has_its_history(stubs: Stubs, uid: str) -> None:
    delivery = stubs.deliveries.CreatePreparedDelivery(
        dl.CreatePreparedDeliveryRequest(prepared_delivery=dl.PreparedDelivery(catalog_id=uid))
    ).prepared_delivery
    moved = stubs.deliveries.UpdatePreparedDelivery(
        dl.UpdatePreparedDeliveryRequest(
            prepared_delivery=dl.PreparedDelivery(catalog_id=uid, progress=40),
            update_mask=field_mask_pb2.FieldMask(paths=["progress"]),
        )
    ).prepared_delivery
    got = stubs.deliveries.GetPreparedDeliveryHistory(
        dl.GetPreparedDeliveryHistoryRequest(catalog_id=uid)
    )
    assert [c.prepared_delivery for c in got.changes] == [delivery, moved]

    created = stubs.datasets.CreateDataset(ds.CreateDatasetRequest(dataset=ds.Dataset())).dataset
    started = stubs.datasets.StartDatasetImport(
        ds.StartDatasetImportRequest(dataset_id=created.dataset_id)
    ).dataset
    fetched = stubs.datasets.UpdateDatasetImport(
        ds.UpdateDatasetImportRequest(
            dataset_id=created.dataset_id,
            step=ds.DATASET_IMPORT_STEP_NAME_FETCH,
            step_status=ds.DATASET_IMPORT_STATUS_SUCCESS,
        )
    ).dataset
    history = stubs.datasets.GetDatasetHistory(
        ds.GetDatasetHistoryRequest(dataset_id=created.dataset_id)
    )
    assert [c.dataset for c in history.changes] == [created, started, fetched]

    imported = stubs.catalog.CreateImport(
        cat.CreateImportRequest(catalog_import=cat.CatalogImport(type=cat.CATALOG_IMPORT_TYPE_ADS))
    ).catalog_import
    catalog = stubs.catalog.GetImportHistory(cat.GetImportHistoryRequest(id=imported.id))
    assert [c.catalog_import for c in catalog.changes] == [imported]


def test_http_history_renders_the_documented_json(
    stubs: Stubs, http: httpx.Client, uid: str
) -> None:
    written = _map_job(stubs, uid, 2)
    answer = http.get(f"/api/v1/history/map_import/{uid}")
    assert answer.status_code == 200
    body = answer.json()
    assert body["kind"] == "map_import"
    assert body["id"] == uid
    assert body["truncated"] is False
    assert body["nextPageToken"] == ""
    assert [c["revision"] for c in body["changes"]] == [j.revision for j in written]
    assert all(c["time"] == DATETIME for c in body["changes"])
    assert [c["job"]["status"] for c in body["changes"]] == ["Start", "InProgress"] + [
        "InProgress"
    ] * 2
    assert body["changes"][-1]["job"]["metaData"]["progress"] == 2
    assert body["changes"][0]["job"]["importRequestId"] == uid
    # The same as the documented path renders the job now.
    now = http.get(f"/api/v2/map/import/status/{uid}").json()
    assert body["changes"][-1]["job"] == now

    first = http.get(f"/api/v1/history/map_import/{uid}", params={"page_size": 3}).json()
    assert len(first["changes"]) == 3
    rest = http.get(
        f"/api/v1/history/map_import/{uid}", params={"page_token": first["nextPageToken"]}
    ).json()
    assert [c["revision"] for c in first["changes"] + rest["changes"]] == [
        j.revision for j in written
    ]


def test_http_history_errors(stubs: Stubs, http: httpx.Client, uid: str) -> None:
    known = uid + "-known"
    _map_job(stubs, known, 0)
    missing = http.get(f"/api/v1/history/map_import/{uid}")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "NOT_FOUND"
    assert http.get(f"/api/v1/history/nothing/{uid}").status_code == 404
    assert http.get(f"/api/v1/history/map_import/{uid}?page_size=x").status_code == 400
    assert http.get(f"/api/v1/history/map_import/{uid}?page_size=-1").status_code == 400
    # An id no job can have (NUL, too long) is simply not found, on both databases.
    assert http.get("/api/v1/history/map_import/a%00b").status_code == 404
    assert http.get("/api/v1/history/map_import/" + "x" * 2000).status_code == 404
    huge = http.get(f"/api/v1/history/map_import/{known}", params={"page_size": "9" * 18})
    assert huge.status_code == 200  # capped at the largest page, as /openapi.json says
    assert http.get(f"/api/v1/history/map_import/{uid}?page_token=zzz").status_code == 404
    # A bad token on a known job is the token's fault; an unknown job is 404 whatever the token.
    assert http.get(f"/api/v1/history/map_import/{known}?page_token=zzz").status_code == 400


def test_history_is_the_tenant_s_own(databases: Databases) -> None:
    keys = {"alpha": ("alpha", ["read", "write"]), "beta": ("beta", ["read"])}
    keys["alpha-write"] = ("alpha", ["write"])
    with keyed_server(databases.new("keyed"), keys) as keyed:
        stubs = Stubs.connect(keyed.server.address)
        try:
            job_id = f"h-{uuid.uuid4().hex[:8]}"
            alpha = metadata(keyed.keys["alpha"])
            stubs.maps.CreateMapImport(
                mi.CreateMapImportRequest(map_import=mi.MapImport(import_request_id=job_id)),
                metadata=alpha,
            )
            request = mi.GetMapImportHistoryRequest(import_request_id=job_id)
            assert len(stubs.maps.GetMapImportHistory(request, metadata=alpha).changes) == 1
            for key, code in (
                ("beta", grpc.StatusCode.NOT_FOUND),
                ("alpha-write", grpc.StatusCode.PERMISSION_DENIED),
            ):
                with pytest.raises(grpc.RpcError) as caught:
                    stubs.maps.GetMapImportHistory(request, metadata=metadata(keyed.keys[key]))
                assert caught.value.code() == code
            with pytest.raises(grpc.RpcError) as caught:
                stubs.maps.GetMapImportHistory(request)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with keyed.http() as http:
                path = f"/api/v1/history/map_import/{job_id}"
                assert http.get(path, headers={"x-api-key": keyed.keys["alpha"]}).is_success
                assert http.get(path, headers={"x-api-key": keyed.keys["beta"]}).status_code == 404
                denied = http.get(path, headers={"x-api-key": keyed.keys["alpha-write"]})
                assert denied.status_code == 403
                assert http.get(path).status_code == 401
        finally:
            stubs.channel.close()


def test_compaction_is_told_not_hidden(databases: Databases) -> None:
    server = ServerProcess(
        databases.new("compact"), ["--history-count", "4", "--compact-interval", "0.2"]
    ).start()
    stubs = Stubs.connect(server.address)
    try:
        old = f"old-{uuid.uuid4().hex[:8]}"
        _map_job(stubs, old, 1)  # revisions 1..3
        token = stubs.maps.GetMapImportHistory(
            mi.GetMapImportHistoryRequest(import_request_id=old, page_size=1)
        ).next_page_token
        new = f"new-{uuid.uuid4().hex[:8]}"
        written = _map_job(stubs, new, 8)  # 10 more changes: only the last 4 are kept
        request = mi.GetMapImportHistoryRequest(import_request_id=new)
        page = stubs.maps.GetMapImportHistory(request)
        deadline = time.monotonic() + 20  # compaction runs every 0.2 s
        settled = written[-1].revision - 4 + 1  # the oldest of the 4 changes kept at last
        while page.oldest_revision < settled:  # compaction runs in the background, in steps
            assert time.monotonic() < deadline, (
                f"--history-count 4 kept more than 4 changes: the history still starts at "
                f"{page.oldest_revision}, not {settled}"
            )
            time.sleep(0.1)
            page = stubs.maps.GetMapImportHistory(request)
        assert page.oldest_revision == settled, (
            f"--history-count 4 kept {written[-1].revision - page.oldest_revision + 1} "
            f"changes, not 4"
        )
        assert page.truncated
        kept = [j.revision for j in written if j.revision >= page.oldest_revision]
        assert [c.revision for c in page.changes] == kept
        assert [c.map_import for c in page.changes] == written[-len(kept) :]
        assert page.oldest_revision > written[0].revision
        # The old job's history is gone entirely, and says so.
        gone = stubs.maps.GetMapImportHistory(mi.GetMapImportHistoryRequest(import_request_id=old))
        assert gone.truncated
        assert list(gone.changes) == []
        # A page token from before the compaction: OUT_OF_RANGE, naming where history starts.
        failure = fails(
            lambda: stubs.maps.GetMapImportHistory(
                mi.GetMapImportHistoryRequest(import_request_id=old, page_token=token)
            )
        )
        assert failure.code == grpc.StatusCode.OUT_OF_RANGE
        assert failure.info is not None and failure.info.reason == "REVISION_COMPACTED"
        assert failure.metadata["oldest_revision"] == str(page.oldest_revision)
        with httpx.Client(base_url=server.http_url, timeout=10) as http:
            body = http.get(f"/api/v1/history/map_import/{new}").json()
            assert body["truncated"] is True
            assert body["oldestRevision"] == page.oldest_revision
            stale = http.get(f"/api/v1/history/map_import/{old}", params={"page_token": token})
            assert stale.status_code == 410
            assert stale.json()["error"]["metadata"]["oldest_revision"] == str(page.oldest_revision)
    finally:
        stubs.channel.close()
        server.stop()


def test_the_client_reads_the_history_sync_and_async(server: ServerProcess, uid: str) -> None:
    with Client(server.address) as client:
        created = client.map_imports.create(mi.MapImport(import_request_id=uid))
        versions = [created]
        for progress in (10, 20, 30):
            versions.append(
                client.map_imports.update(
                    mi.MapImport(
                        import_request_id=uid,
                        status=IN_PROGRESS,
                        meta_data=mi.MapImportMetaData(progress=progress),
                    )
                )
            )
        history = client.map_imports.history(uid, page_size=2)
        assert [c.job for c in history.changes] == versions
        assert [c.revision for c in history.changes] == [v.revision for v in versions]
        assert [c.time for c in history.changes] == [
            v.update_time.ToDatetime(UTC) for v in versions
        ]
        assert not history.truncated
        first = client.map_imports.history_page(uid, page_size=3)
        assert len(first.changes) == 3 and first.next_page_token

    async def read() -> list[int]:
        async with AsyncClient(server.address) as client:
            got = await client.map_imports.history(uid, page_size=3)
            return [c.revision for c in got.changes]

    assert asyncio.run(read()) == [v.revision for v in versions]


AGE = 4.0  # --history-age of the compaction-by-age test: seconds of changes kept


def test_compaction_by_age_drops_old_changes_and_keeps_recent_ones(databases: Databases) -> None:
    # A count far beyond what the test writes: only --history-age can compact anything.
    server = ServerProcess(
        databases.new("compact-age"),
        ["--history-count", "100000", "--history-age", str(AGE), "--compact-interval", "0.2"],
    ).start()
    stubs = Stubs.connect(server.address)
    try:
        old = f"old-{uuid.uuid4().hex[:8]}"
        written = _map_job(stubs, old, 1)  # the database's first three changes
        last_old = written[-1]
        request = mi.GetMapImportHistoryRequest(import_request_id=old)
        # Compaction runs every 0.2 s; each old change is due to go AGE s after it was made.
        deadline = time.monotonic() + AGE + 15
        page = stubs.maps.GetMapImportHistory(request)
        while page.oldest_revision <= last_old.revision:
            assert time.monotonic() < deadline, (
                f"changes older than --history-age {AGE} s were never compacted "
                f"(history still starts at revision {page.oldest_revision})"
            )
            time.sleep(0.1)
            page = stubs.maps.GetMapImportHistory(request)
        # The server's own clock, now: a write made after the compaction was seen.
        probe = stubs.maps.CreateMapImport(
            mi.CreateMapImportRequest(
                map_import=mi.MapImport(import_request_id=f"probe-{uuid.uuid4().hex[:8]}")
            )
        ).map_import
        age = probe.update_time.ToDatetime(UTC) - last_old.update_time.ToDatetime(UTC)
        assert age.total_seconds() >= AGE, (
            f"a change {age.total_seconds():.2f} s old was compacted, though --history-age "
            f"keeps {AGE} s of changes"
        )
        assert page.truncated, "a compacted job's history does not say it was truncated"
        assert list(page.changes) == [], "a compacted job's history still lists its changes"
        assert page.oldest_revision == last_old.revision + 1, (
            f"compaction by age cut the history at {page.oldest_revision - 1}, not at the "
            f"last change older than --history-age ({last_old.revision})"
        )
        # A watch from a compacted revision: OUT_OF_RANGE, naming where the history starts.
        watch = stubs.maps.WatchMapImportStatus(
            mi.WatchMapImportStatusRequest(start_revision=written[0].revision), timeout=10
        )
        failure = fails(lambda: next(iter(watch)))
        assert failure.code == grpc.StatusCode.OUT_OF_RANGE, (
            f"a watch from compacted revision {written[0].revision} was not refused: {failure}"
        )
        assert failure.metadata["oldest_revision"] == str(last_old.revision + 1)
        # Recent changes stay: several compactions later the probe's history is whole.
        time.sleep(1.0)
        kept = stubs.maps.GetMapImportHistory(
            mi.GetMapImportHistoryRequest(import_request_id=probe.import_request_id)
        )
        assert [c.map_import for c in kept.changes] == [probe], (
            "a change younger than --history-age was compacted"
        )
        assert not kept.truncated, "a change younger than --history-age was compacted"
        assert kept.oldest_revision == last_old.revision + 1
    finally:
        stubs.channel.close()
        server.stop()

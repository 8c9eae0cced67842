"""Paging through lists: every job exactly once, in creation order, with status filters."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from google.protobuf import field_mask_pb2

from jobstatus.v1 import delivery_pb2 as dl
from jobstatus.v1 import map_import_pb2 as mi
from tests.conftest import Databases, Stubs
from tests.rpcerrors import fails
from tests.serverproc import ServerProcess

JOBS = 250
START = mi.MAP_IMPORT_STATUS_START
RUNNING = mi.MAP_IMPORT_STATUS_IN_PROGRESS


@pytest.fixture(scope="module")
def server(databases: Databases) -> Iterator[ServerProcess]:
    """This module's own server and database (on each backend), so the lists hold only
    this module's jobs. Paging is not about durability: SQLite skips the fsync per commit.
    """
    proc = ServerProcess(databases.new("paging"), ["--sqlite-synchronous", "NORMAL"]).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def created(stubs: Stubs) -> list[str]:
    """250 map imports on this module's own server, created one after another; every third runs."""
    ids = [f"page-{n:03d}" for n in range(JOBS)]
    for job_id in ids:
        stubs.maps.CreateMapImport(
            mi.CreateMapImportRequest(map_import=mi.MapImport(import_request_id=job_id))
        )
    # Change some after creation: the order stays the creation order, not the update order.
    for job_id in reversed(ids[::3]):
        stubs.maps.UpdateMapImport(
            mi.UpdateMapImportRequest(
                map_import=mi.MapImport(import_request_id=job_id, status=RUNNING),
                update_mask=field_mask_pb2.FieldMask(paths=["status"]),
            )
        )
    return ids


def _walk(
    stubs: Stubs, page_size: int, statuses: list[mi.MapImportStatus.ValueType] | None = None
) -> tuple[list[str], list[int]]:
    """Every page of the list: the ids in order, and the size of each page."""
    ids: list[str] = []
    sizes: list[int] = []
    token = ""
    while True:
        page = stubs.maps.ListMapImports(
            mi.ListMapImportsRequest(page_size=page_size, page_token=token, statuses=statuses)
        )
        ids.extend(job.import_request_id for job in page.map_imports)
        sizes.append(len(page.map_imports))
        token = page.next_page_token
        if not token:
            return ids, sizes
        assert len(sizes) <= JOBS + 1, "the list does not end"


@pytest.mark.parametrize(("page_size", "effective"), [(7, 7), (100, 100), (0, 50), (5000, 1000)])
def test_every_job_once_in_creation_order(
    stubs: Stubs, created: list[str], page_size: int, effective: int
) -> None:
    ids, sizes = _walk(stubs, page_size)

    assert ids == created
    full, rest = divmod(JOBS, effective)
    assert sizes[:full] == [effective] * full
    assert sizes[full:] in ([rest], [] if rest == 0 else [rest], [0])


def test_status_filter(stubs: Stubs, created: list[str]) -> None:
    running, _ = _walk(stubs, 7, [RUNNING])
    waiting, _ = _walk(stubs, 7, [START])
    both, _ = _walk(stubs, 7, [RUNNING, START])
    done, sizes = _walk(stubs, 7, [mi.MAP_IMPORT_STATUS_DONE])

    assert running == created[::3]
    assert waiting == [job_id for job_id in created if job_id not in set(created[::3])]
    assert both == created
    assert done == []
    assert sizes == [0]


def test_page_size_is_capped_at_1000(stubs: Stubs, created: list[str]) -> None:
    """1005 deliveries: a page of 5000 holds 1000, and the next page the other 5."""
    ids = [f"cap-{n:04d}" for n in range(1005)]
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda i: stubs.deliveries.CreatePreparedDelivery(
                    dl.CreatePreparedDeliveryRequest(
                        prepared_delivery=dl.PreparedDelivery(catalog_id=i)
                    )
                ),
                ids,
            )
        )
    first = stubs.deliveries.ListPreparedDeliveries(
        dl.ListPreparedDeliveriesRequest(page_size=5000)
    )
    assert len(first.prepared_deliveries) == 1000
    assert first.next_page_token
    second = stubs.deliveries.ListPreparedDeliveries(
        dl.ListPreparedDeliveriesRequest(page_size=5000, page_token=first.next_page_token)
    )
    assert len(second.prepared_deliveries) == 5
    assert not second.next_page_token
    listed = [d.catalog_id for d in (*first.prepared_deliveries, *second.prepared_deliveries)]
    assert sorted(listed) == ids
    revisions = [
        d.create_time.ToNanoseconds()
        for d in (*first.prepared_deliveries, *second.prepared_deliveries)
    ]
    assert revisions == sorted(revisions)


def _token(stubs: Stubs, statuses: list[mi.MapImportStatus.ValueType] | None = None) -> str:
    page = stubs.maps.ListMapImports(mi.ListMapImportsRequest(page_size=7, statuses=statuses))
    assert page.next_page_token
    return page.next_page_token


def _tamper(token: str) -> list[str]:
    """Ways a token gets broken: cut, extended, a character or a decoded bit changed."""
    flipped = [
        token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :] for i in range(len(token))
    ]
    # The token is opaque, but it is base64url: change each byte beneath it, one bit each.
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    bits = [
        base64.urlsafe_b64encode(raw[:i] + bytes([raw[i] ^ 1]) + raw[i + 1 :]).decode().rstrip("=")
        for i in range(len(raw))
    ]
    return [
        token[:-1],
        token[: len(token) // 2],
        token + "x",
        "x" + token,
        "not a token at all",
        "////",
        *flipped,
        *bits,
    ]


def test_tampered_page_token_is_invalid(stubs: Stubs, created: list[str]) -> None:
    token = _token(stubs)
    accepted = []
    for bad in _tamper(token):
        try:
            stubs.maps.ListMapImports(mi.ListMapImportsRequest(page_size=7, page_token=bad))
        except grpc.RpcError as error:
            assert isinstance(error, grpc.Call)
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (bad, error)
            continue
        accepted.append(bad)
    assert accepted == [], f"accepted {len(accepted)} tampered tokens, such as {accepted[:3]}"
    # the untouched token still works
    page = stubs.maps.ListMapImports(mi.ListMapImportsRequest(page_size=7, page_token=token))
    assert [j.import_request_id for j in page.map_imports] == created[7:14]


def test_tampered_token_names_the_field(stubs: Stubs, created: list[str]) -> None:
    failure = fails(
        lambda: stubs.maps.ListMapImports(mi.ListMapImportsRequest(page_token="garbage!"))
    )
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.fields == ["page_token"]


def test_token_of_another_filter_is_invalid(stubs: Stubs, created: list[str]) -> None:
    unfiltered = _token(stubs)
    running = _token(stubs, [RUNNING])
    cases: list[tuple[str, list[mi.MapImportStatus.ValueType]]] = [
        (unfiltered, [RUNNING]),
        (running, []),
        (running, [RUNNING, START]),
        (running, [START]),
    ]
    for token, statuses in cases:

        def listing(
            token: str = token, statuses: list[mi.MapImportStatus.ValueType] = statuses
        ) -> object:
            return stubs.maps.ListMapImports(
                mi.ListMapImportsRequest(page_size=7, page_token=token, statuses=statuses)
            )

        failure = fails(listing)
        assert failure.code == grpc.StatusCode.INVALID_ARGUMENT, failure
        assert "page_token" in failure.fields


def test_token_of_another_kind_is_invalid(stubs: Stubs, created: list[str]) -> None:
    token = _token(stubs)
    failure = fails(
        lambda: stubs.deliveries.ListPreparedDeliveries(
            dl.ListPreparedDeliveriesRequest(page_token=token)
        )
    )
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT, failure


def test_negative_page_size_is_invalid(stubs: Stubs, created: list[str]) -> None:
    failure = fails(lambda: stubs.maps.ListMapImports(mi.ListMapImportsRequest(page_size=-1)))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT, failure
    assert failure.fields == ["page_size"]

"""Every kind's lifecycle through the RPCs, checked against DESIGN.md, not against kinds.py.

The allowed transitions below are copied from the design by hand; the forbidden
ones are the rest of the from x to matrix. Each forbidden transition is tried on
a job driven to its from-status along a shortest legal path, and must be refused
with FAILED_PRECONDITION, ErrorInfo metadata `allowed` listing exactly the allowed
next statuses in their documented spellings, and the job left as it was.
"""

from __future__ import annotations

import re
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2
from google.protobuf.message import Message

from jobstatus.v1 import catalog_import_pb2 as cat
from jobstatus.v1 import dataset_pb2 as ds
from jobstatus.v1 import delivery_pb2 as dl
from jobstatus.v1 import errors_pb2 as er
from jobstatus.v1 import map_import_pb2 as mi
from jobstatus.v1 import watch_pb2
from tests.conftest import Stubs
from tests.rpcerrors import fails
from tests.serverproc import ServerProcess

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

# --- the design's tables, in documented spellings ----------------------------

MAP_STATUS = {
    "Draft": mi.MAP_IMPORT_STATUS_DRAFT,
    "Pending": mi.MAP_IMPORT_STATUS_PENDING,
    "Start": mi.MAP_IMPORT_STATUS_START,
    "InProgress": mi.MAP_IMPORT_STATUS_IN_PROGRESS,
    "Pause": mi.MAP_IMPORT_STATUS_PAUSE,
    "Cancel": mi.MAP_IMPORT_STATUS_CANCEL,
    "Error": mi.MAP_IMPORT_STATUS_ERROR,
    "Done": mi.MAP_IMPORT_STATUS_DONE,
    "Discovered": mi.MAP_IMPORT_STATUS_DISCOVERED,
    "Expired": mi.MAP_IMPORT_STATUS_EXPIRED,
    "Archived": mi.MAP_IMPORT_STATUS_ARCHIVED,
}
MAP_ALLOWED = {
    "Draft": "Start Cancel",
    "Discovered": "Start Done Archived",
    "Start": "Pending InProgress Done Error Cancel",
    "Pending": "InProgress Pause Error Cancel",
    "InProgress": "Done Pause Error Cancel",
    "Pause": "InProgress Error Cancel",
    "Done": "Expired Archived",
    "Expired": "Archived",
}

DELIVERY_STATUS = {
    "start": dl.PREPARED_DELIVERY_STATUS_START,
    "inProgress": dl.PREPARED_DELIVERY_STATUS_IN_PROGRESS,
    "done": dl.PREPARED_DELIVERY_STATUS_DONE,
    "error": dl.PREPARED_DELIVERY_STATUS_ERROR,
    "delete": dl.PREPARED_DELIVERY_STATUS_DELETE,
    "pending": dl.PREPARED_DELIVERY_STATUS_PENDING,
}
DELIVERY_ALLOWED = {
    "pending": "start inProgress error",
    "start": "inProgress done error",
    "inProgress": "done error",
    "done": "delete error",
    "error": "start",
    "delete": "start",
}

CATALOG_STATUS = {
    "NOT_FOUND": cat.CATALOG_IMPORT_STATUS_NOT_FOUND,
    "WAITING": cat.CATALOG_IMPORT_STATUS_WAITING,
    "BLOCKED": cat.CATALOG_IMPORT_STATUS_BLOCKED,
    "IN_PROGRESS": cat.CATALOG_IMPORT_STATUS_IN_PROGRESS,
    "SUCCESS": cat.CATALOG_IMPORT_STATUS_SUCCESS,
    "FAILURE": cat.CATALOG_IMPORT_STATUS_FAILURE,
    "ABORTED": cat.CATALOG_IMPORT_STATUS_ABORTED,
}
CATALOG_ALLOWED = {
    "WAITING": "IN_PROGRESS BLOCKED ABORTED",
    "BLOCKED": "WAITING IN_PROGRESS ABORTED FAILURE",
    "IN_PROGRESS": "SUCCESS FAILURE ABORTED",
}
# The forbidden-matrix tests use their own catalog type: they leave imports
# IN_PROGRESS, which blocks new imports of that type.
MATRIX_TYPE = cat.CATALOG_IMPORT_TYPE_PANELS

GPKG_HASH = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


def _artifacts(catalog_id: str) -> list[dl.Artifact]:
    return [
        dl.Artifact(
            item_key="map.json",
            artifact_type="json",
            url=f"https://cache.example/{catalog_id}/map.json",
            size=300,
        ),
        dl.Artifact(
            item_key="map.gpkg",
            artifact_type="gpkg",
            url=f"https://cache.example/{catalog_id}/map.gpkg",
            size=1000,
            hash=dl.ArtifactHash(algorithm=dl.HASH_ALGORITHM_SHA256_HEX, hash=GPKG_HASH),
        ),
    ]


def _new_catalog_id() -> str:
    return str(10**17 + uuid.uuid4().int % (9 * 10**17))


# --- each kind, as the test drives it ---------------------------------------


def _map_create(stubs: Stubs, status: str) -> Message:
    job = mi.MapImport(import_request_id=f"m-{uuid.uuid4().hex[:12]}", status=MAP_STATUS[status])
    return stubs.maps.CreateMapImport(mi.CreateMapImportRequest(map_import=job)).map_import


def _map_move(stubs: Stubs, job_id: str, to: str) -> Message:
    """Update to `to` with everything that status needs, so only the transition can fail."""
    job = mi.MapImport(import_request_id=job_id, status=MAP_STATUS[to])
    paths = ["status"]
    if to == "Done":
        job.meta_data.package_url = f"https://packages.example/{job_id}.gpkg"
        job.meta_data.footprint = "POLYGON((34.8 32.0,34.9 32.0,34.9 32.1,34.8 32.1,34.8 32.0))"
        paths += ["meta_data.package_url", "meta_data.footprint"]
    if to == "Error":
        job.error.error_code = er.ERROR_CODE_MAP_EXPORT_MAP_FAILED
        job.error.message = "the exporter ran out of disk"
        paths.append("error")
    request = mi.UpdateMapImportRequest(
        map_import=job, update_mask=field_mask_pb2.FieldMask(paths=paths)
    )
    return stubs.maps.UpdateMapImport(request).map_import


def _map_get(stubs: Stubs, job_id: str) -> Message:
    request = mi.GetMapImportStatusRequest(import_request_id=job_id)
    return stubs.maps.GetMapImportStatus(request).map_import


def _delivery_create(stubs: Stubs, status: str) -> Message:
    job = dl.PreparedDelivery(
        catalog_id=f"d-{uuid.uuid4().hex[:12]}", status=DELIVERY_STATUS[status]
    )
    request = dl.CreatePreparedDeliveryRequest(prepared_delivery=job)
    return stubs.deliveries.CreatePreparedDelivery(request).prepared_delivery


def _delivery_move(stubs: Stubs, job_id: str, to: str) -> Message:
    job = dl.PreparedDelivery(catalog_id=job_id, status=DELIVERY_STATUS[to])
    paths = ["status"]
    if to in ("inProgress", "done"):
        job.artifacts.extend(_artifacts(job_id))
        paths.append("artifacts")
    if to == "error":
        job.error.error_code = er.ERROR_CODE_DELIVERY_UNABLE_CLEAR_CACHE
        job.error.message = "no space left in the cache"
        paths.append("error")
    request = dl.UpdatePreparedDeliveryRequest(
        prepared_delivery=job, update_mask=field_mask_pb2.FieldMask(paths=paths)
    )
    return stubs.deliveries.UpdatePreparedDelivery(request).prepared_delivery


def _delivery_get(stubs: Stubs, job_id: str) -> Message:
    request = dl.GetPreparedDeliveryStatusRequest(catalog_id=job_id)
    return stubs.deliveries.GetPreparedDeliveryStatus(request).prepared_delivery


def _catalog_create(stubs: Stubs, status: str) -> Message:
    job = cat.CatalogImport(status=CATALOG_STATUS[status], type=MATRIX_TYPE)
    request = cat.CreateImportRequest(catalog_import=job)
    return stubs.catalog.CreateImport(request).catalog_import


def _catalog_move(stubs: Stubs, job_id: str, to: str) -> Message:
    job = cat.CatalogImport(id=job_id, status=CATALOG_STATUS[to])
    paths = ["status"]
    if to == "FAILURE":
        job.message = "row 17: price is not a number"
        paths.append("message")
    request = cat.UpdateImportRequest(
        catalog_import=job, update_mask=field_mask_pb2.FieldMask(paths=paths)
    )
    return stubs.catalog.UpdateImport(request).catalog_import


def _catalog_get(stubs: Stubs, job_id: str) -> Message:
    return stubs.catalog.GetImportStatus(cat.GetImportStatusRequest(id=job_id)).catalog_import


@dataclass(frozen=True)
class Lifecycle:
    name: str
    id_field: str
    statuses: Mapping[str, int]
    allowed_table: Mapping[str, str]
    creatable: tuple[str, ...]  # the statuses a job may be created in, the default first
    stored: tuple[str, ...]  # the statuses a job can be in
    create: Callable[[Stubs, str], Message]
    move: Callable[[Stubs, str, str], Message]
    get: Callable[[Stubs, str], Message]

    def allowed(self, status: str) -> set[str]:
        return set(self.allowed_table.get(status, "").split())

    def spelling(self, job: Message) -> str:
        number = int(getattr(job, "status"))  # noqa: B009
        return next(name for name, value in self.statuses.items() if value == number)

    def job_id(self, job: Message) -> str:
        return str(getattr(job, self.id_field))

    def path(self, start: str, goal: str) -> list[str] | None:
        """A shortest legal path from `start` to `goal`, without `start`; None if there is none."""
        came_from: dict[str, str | None] = {start: None}
        queue = deque([start])
        while queue:
            here = queue.popleft()
            if here == goal:
                steps: list[str] = []
                at: str | None = here
                while at is not None and at != start:
                    steps.append(at)
                    at = came_from[at]
                return steps[::-1]
            for there in sorted(self.allowed(here)):
                if there not in came_from:
                    came_from[there] = here
                    queue.append(there)
        return None

    def drive(self, stubs: Stubs, goal: str) -> Message:
        """A new job in status `goal`, reached by a shortest legal path through the RPCs."""
        plans = [(len(p), c) for c in self.creatable if (p := self.path(c, goal)) is not None]
        assert plans, f"{self.name}: no legal path to {goal}"
        job = self.create(stubs, min(plans)[1])
        job_id = self.job_id(job)
        # The server may pick another initial status (a catalog import starts BLOCKED
        # behind a running one of its type): go on from wherever the job really is.
        path = self.path(self.spelling(job), goal)
        assert path is not None, f"{self.name}: no legal path from {self.spelling(job)} to {goal}"
        for step in path:
            job = self.move(stubs, job_id, step)
            assert self.spelling(job) == step
        assert self.spelling(self.get(stubs, job_id)) == goal
        return job


MAP = Lifecycle(
    name="map_import",
    id_field="import_request_id",
    statuses=MAP_STATUS,
    allowed_table=MAP_ALLOWED,
    creatable=("Start", "Draft", "Discovered"),
    stored=tuple(MAP_STATUS),
    create=_map_create,
    move=_map_move,
    get=_map_get,
)
DELIVERY = Lifecycle(
    name="prepared_delivery",
    id_field="catalog_id",
    statuses=DELIVERY_STATUS,
    allowed_table=DELIVERY_ALLOWED,
    creatable=("start", "pending"),
    stored=tuple(DELIVERY_STATUS),
    create=_delivery_create,
    move=_delivery_move,
    get=_delivery_get,
)
CATALOG = Lifecycle(
    name="catalog_import",
    id_field="id",
    statuses=CATALOG_STATUS,
    allowed_table=CATALOG_ALLOWED,
    creatable=("WAITING",),
    # NOT_FOUND is only what the REST path answers for an unknown id: never stored.
    stored=tuple(s for s in CATALOG_STATUS if s != "NOT_FOUND"),
    create=_catalog_create,
    move=_catalog_move,
    get=_catalog_get,
)
LIFECYCLES = (MAP, DELIVERY, CATALOG)


def _pairs(allowed: bool) -> list[tuple[Lifecycle, str, str]]:
    return [
        (kind, a, b)
        for kind in LIFECYCLES
        for a in kind.stored
        for b in kind.statuses
        if a != b and (b in kind.allowed(a)) == allowed
    ]


def _pair_id(value: object) -> str:
    return value.name if isinstance(value, Lifecycle) else str(value)


FORBIDDEN = _pairs(allowed=False)
ALLOWED = _pairs(allowed=True)


def test_the_matrix_is_the_designs() -> None:
    """A check on the tables above, so a typo cannot silently shrink the matrix."""
    assert len([p for p in ALLOWED if p[0] is MAP]) == 24
    assert len([p for p in FORBIDDEN if p[0] is MAP]) == 11 * 10 - 24
    assert len([p for p in ALLOWED if p[0] is DELIVERY]) == 12
    assert len([p for p in FORBIDDEN if p[0] is DELIVERY]) == 6 * 5 - 12
    assert len([p for p in ALLOWED if p[0] is CATALOG]) == 10
    assert len([p for p in FORBIDDEN if p[0] is CATALOG]) == 6 * 6 - 10
    for kind in LIFECYCLES:
        for a in kind.stored:
            for b in kind.allowed(a):
                assert b in kind.statuses, (kind.name, a, b)


Parked = Callable[[Lifecycle, str], Message]


@pytest.fixture(scope="module")
def server(database_url: str) -> Iterator[ServerProcess]:
    """This module's server. Lifecycles are not about durability: SQLite skips the
    fsync per commit (test_durability covers the default)."""
    proc = ServerProcess(database_url, ["--sqlite-synchronous", "NORMAL"]).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def parked(stubs: Stubs) -> Parked:
    """A job in a given status, shared by the tests that must leave it unchanged.

    The job is read afresh each time; should a test have moved it after all (the
    server took a forbidden transition), the next test gets a new job rather than
    inheriting the failure.
    """
    jobs: dict[tuple[str, str], str] = {}

    def job_in(kind: Lifecycle, status: str) -> Message:
        key = (kind.name, status)
        if key in jobs:
            job = kind.get(stubs, jobs[key])
            if kind.spelling(job) == status:
                return job
        job = kind.drive(stubs, status)
        jobs[key] = kind.job_id(job)
        return job

    return job_in


@pytest.mark.parametrize(("kind", "source", "target"), FORBIDDEN, ids=_pair_id)
def test_forbidden_transition_is_refused(
    stubs: Stubs, parked: Parked, kind: Lifecycle, source: str, target: str
) -> None:
    before = parked(kind, source)
    job_id = kind.job_id(before)

    failure = fails(lambda: kind.move(stubs, job_id, target))

    assert failure.code == grpc.StatusCode.FAILED_PRECONDITION, (
        f"{kind.name} {source} -> {target}, a transition the design forbids, was not refused: "
        f"{failure}"
    )
    listed = failure.metadata.get("allowed")
    assert listed is not None, failure
    names = listed.split(",") if listed else []
    assert len(names) == len(set(names)), listed
    assert set(names) == kind.allowed(source), (source, target, listed)
    assert kind.get(stubs, job_id) == before


@pytest.mark.parametrize(("kind", "source", "target"), ALLOWED, ids=_pair_id)
def test_allowed_transition_is_taken(
    stubs: Stubs, kind: Lifecycle, source: str, target: str
) -> None:
    job = kind.drive(stubs, source)
    job_id = kind.job_id(job)
    before = int(getattr(kind.get(stubs, job_id), "revision"))  # noqa: B009

    moved = kind.move(stubs, job_id, target)

    assert kind.spelling(moved) == target
    assert int(getattr(moved, "revision")) > before  # noqa: B009
    assert kind.get(stubs, job_id) == moved


# The design's settled statuses: a watch with until_settled ends at them, and only them.
SETTLED = {
    MAP.name: "Cancel Error Done Expired Archived",
    DELIVERY.name: "done error delete",
    CATALOG.name: "SUCCESS FAILURE ABORTED",
}


def _watch_until_settled(stubs: Stubs, kind: Lifecycle, job_id: str) -> grpc.CallIterator[Any]:
    """A watch of one job with until_settled, heartbeats as often as the server allows."""
    beat = duration_pb2.Duration(nanos=500_000_000)
    if kind is MAP:
        return stubs.maps.WatchMapImportStatus(
            mi.WatchMapImportStatusRequest(
                import_request_ids=[job_id], until_settled=True, heartbeat_interval=beat
            ),
            timeout=20,
        )
    if kind is DELIVERY:
        return stubs.deliveries.WatchPreparedDeliveryStatus(
            dl.WatchPreparedDeliveryStatusRequest(
                catalog_ids=[job_id], until_settled=True, heartbeat_interval=beat
            ),
            timeout=20,
        )
    return stubs.catalog.WatchImportStatus(
        cat.WatchImportStatusRequest(ids=[job_id], until_settled=True, heartbeat_interval=beat),
        timeout=20,
    )


@pytest.mark.parametrize(
    ("kind", "status"), [(k, s) for k in LIFECYCLES for s in k.stored], ids=_pair_id
)
def test_until_settled_ends_at_the_settled_statuses_only(
    stubs: Stubs, parked: Parked, kind: Lifecycle, status: str
) -> None:
    job_id = kind.job_id(parked(kind, status))
    settled = status in SETTLED[kind.name].split()
    seen: list[int] = []
    stream = _watch_until_settled(stubs, kind, job_id)
    try:
        for event in stream:
            seen.append(int(getattr(event, "type")))  # noqa: B009
            if seen[-1] == watch_pb2.WATCH_EVENT_TYPE_HEARTBEAT:
                break  # still open once idle: the job is not settled
    except grpc.RpcError as error:
        raise AssertionError(f"the watch failed with {error.code()} after {seen}") from error
    finally:
        stream.cancel()  # type: ignore[no-untyped-call]
    state = [watch_pb2.WATCH_EVENT_TYPE_STATE, watch_pb2.WATCH_EVENT_TYPE_SYNCED]
    if settled:
        assert seen == state, (
            f"a watch until_settled of a {kind.name} in {status}, a settled status, "
            f"did not end after its state: saw {seen}"
        )
    else:
        assert seen == [*state, watch_pb2.WATCH_EVENT_TYPE_HEARTBEAT], (
            f"a watch until_settled of a {kind.name} in {status}, not a settled status, "
            f"did not stay open: saw {seen}"
        )


@pytest.mark.parametrize(
    ("kind", "status"),
    [(k, s) for k in LIFECYCLES for s in k.statuses if s not in k.creatable],
    ids=_pair_id,
)
def test_create_in_a_later_status_is_refused(stubs: Stubs, kind: Lifecycle, status: str) -> None:
    before = {k.name: _count(stubs, k) for k in LIFECYCLES}

    failure = fails(lambda: kind.create(stubs, status))

    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT, failure
    assert f"{kind.name}.status" in failure.fields
    assert {k.name: _count(stubs, k) for k in LIFECYCLES} == before


def _count(stubs: Stubs, kind: Lifecycle) -> int:
    if kind is MAP:
        return len(_all_maps(stubs))
    if kind is DELIVERY:
        total, token = 0, ""
        while True:
            page = stubs.deliveries.ListPreparedDeliveries(
                dl.ListPreparedDeliveriesRequest(page_size=1000, page_token=token)
            )
            total += len(page.prepared_deliveries)
            token = page.next_page_token
            if not token:
                return total
    total, token = 0, ""
    while True:
        imports = stubs.catalog.ListImports(
            cat.ListImportsRequest(page_size=1000, page_token=token)
        )
        total += len(imports.catalog_imports)
        token = imports.next_page_token
        if not token:
            return total


def _all_maps(stubs: Stubs) -> list[mi.MapImport]:
    jobs: list[mi.MapImport] = []
    token = ""
    while True:
        page = stubs.maps.ListMapImports(mi.ListMapImportsRequest(page_size=1000, page_token=token))
        jobs.extend(page.map_imports)
        token = page.next_page_token
        if not token:
            return jobs


# --- map import ---------------------------------------------------------------


def _map_update(stubs: Stubs, job: mi.MapImport, *paths: str) -> mi.MapImport:
    request = mi.UpdateMapImportRequest(
        map_import=job, update_mask=field_mask_pb2.FieldMask(paths=list(paths))
    )
    return stubs.maps.UpdateMapImport(request).map_import


def test_map_import_full_lifecycle(stubs: Stubs, uid: str) -> None:
    created = stubs.maps.CreateMapImport(
        mi.CreateMapImportRequest(map_import=mi.MapImport(import_request_id=uid))
    ).map_import
    assert created.status == mi.MAP_IMPORT_STATUS_START
    assert created.revision > 0

    pending = _map_update(
        stubs, mi.MapImport(import_request_id=uid, status=mi.MAP_IMPORT_STATUS_PENDING), "status"
    )
    assert pending.status == mi.MAP_IMPORT_STATUS_PENDING
    assert pending.revision > created.revision

    running = _map_update(
        stubs,
        mi.MapImport(
            import_request_id=uid,
            status=mi.MAP_IMPORT_STATUS_IN_PROGRESS,
            meta_data=mi.MapImportMetaData(progress=10, job_id=4711),
        ),
        "status",
        "meta_data.progress",
        "meta_data.job_id",
    )
    assert running.status == mi.MAP_IMPORT_STATUS_IN_PROGRESS
    assert running.meta_data.progress == 10
    assert running.meta_data.job_id == 4711

    further = _map_update(
        stubs,
        mi.MapImport(import_request_id=uid, meta_data=mi.MapImportMetaData(progress=65)),
        "meta_data.progress",
    )
    assert further.status == mi.MAP_IMPORT_STATUS_IN_PROGRESS
    assert further.meta_data.progress == 65
    assert further.meta_data.job_id == 4711
    assert further.revision > running.revision

    done = _map_update(
        stubs,
        mi.MapImport(
            import_request_id=uid,
            status=mi.MAP_IMPORT_STATUS_DONE,
            meta_data=mi.MapImportMetaData(
                package_url=f"https://packages.example/{uid}.gpkg",
                footprint="POLYGON((34.8 32.0,34.9 32.0,34.9 32.1,34.8 32.0))",
                size=123456,
            ),
        ),
        "status",
        "meta_data.package_url",
        "meta_data.footprint",
        "meta_data.size",
    )
    assert done.status == mi.MAP_IMPORT_STATUS_DONE
    assert done.meta_data.progress == 100
    assert done.meta_data.package_url == f"https://packages.example/{uid}.gpkg"
    assert done.meta_data.footprint.startswith("POLYGON")
    assert done.meta_data.size == 123456
    assert done.revision > further.revision
    got = stubs.maps.GetMapImportStatus(mi.GetMapImportStatusRequest(import_request_id=uid))
    assert got.map_import == done


@pytest.mark.parametrize(
    "status",
    [mi.MAP_IMPORT_STATUS_DRAFT, mi.MAP_IMPORT_STATUS_DISCOVERED],
    ids=["Draft", "Discovered"],
)
def test_map_import_created_as_draft_or_discovered(
    stubs: Stubs, uid: str, status: mi.MapImportStatus.ValueType
) -> None:
    created = stubs.maps.CreateMapImport(
        mi.CreateMapImportRequest(map_import=mi.MapImport(import_request_id=uid, status=status))
    ).map_import
    assert created.status == status
    started = _map_update(
        stubs, mi.MapImport(import_request_id=uid, status=mi.MAP_IMPORT_STATUS_START), "status"
    )
    assert started.status == mi.MAP_IMPORT_STATUS_START


@pytest.mark.parametrize(
    ("package_url", "footprint", "missing"),
    [
        ("", "", {"package_url", "footprint"}),
        ("https://packages.example/x.gpkg", "", {"footprint"}),
        ("", "POLYGON((0 0,1 0,1 1,0 0))", {"package_url"}),
    ],
    ids=["neither", "no-footprint", "no-package-url"],
)
def test_map_import_done_needs_package_url_and_footprint(
    stubs: Stubs, uid: str, package_url: str, footprint: str, missing: set[str]
) -> None:
    stubs.maps.CreateMapImport(
        mi.CreateMapImportRequest(map_import=mi.MapImport(import_request_id=uid))
    )
    _map_update(
        stubs,
        mi.MapImport(
            import_request_id=uid,
            status=mi.MAP_IMPORT_STATUS_IN_PROGRESS,
            meta_data=mi.MapImportMetaData(progress=99),
        ),
        "status",
        "meta_data.progress",
    )
    before = _map_get(stubs, uid)
    job = mi.MapImport(
        import_request_id=uid,
        status=mi.MAP_IMPORT_STATUS_DONE,
        meta_data=mi.MapImportMetaData(package_url=package_url, footprint=footprint),
    )

    masked = fails(
        lambda: _map_update(stubs, job, "status", "meta_data.package_url", "meta_data.footprint")
    )
    unmasked = fails(lambda: stubs.maps.UpdateMapImport(mi.UpdateMapImportRequest(map_import=job)))

    for failure in (masked, unmasked):
        assert failure.code == grpc.StatusCode.FAILED_PRECONDITION, failure
        assert failure.precondition is not None
        subjects = " ".join(v.subject for v in failure.precondition.violations)
        for name in missing:
            assert name in subjects, subjects
    assert _map_get(stubs, uid) == before


def test_map_import_error_keeps_its_reason(stubs: Stubs, uid: str) -> None:
    stubs.maps.CreateMapImport(
        mi.CreateMapImportRequest(map_import=mi.MapImport(import_request_id=uid))
    )
    failed = _map_update(
        stubs,
        mi.MapImport(
            import_request_id=uid,
            status=mi.MAP_IMPORT_STATUS_ERROR,
            error=er.Error(
                error_code=er.ERROR_CODE_MAP_B_BOX_IS_INVALID,
                message="bbox crosses the antimeridian",
            ),
        ),
        "status",
        "error",
    )
    assert failed.status == mi.MAP_IMPORT_STATUS_ERROR
    assert failed.error.error_code == er.ERROR_CODE_MAP_B_BOX_IS_INVALID
    assert failed.error.message == "bbox crosses the antimeridian"
    assert _map_get(stubs, uid) == failed


def test_map_import_error_needs_a_message(stubs: Stubs, uid: str) -> None:
    stubs.maps.CreateMapImport(
        mi.CreateMapImportRequest(map_import=mi.MapImport(import_request_id=uid))
    )
    before = _map_get(stubs, uid)
    silent = mi.MapImport(
        import_request_id=uid,
        status=mi.MAP_IMPORT_STATUS_ERROR,
        error=er.Error(error_code=er.ERROR_CODE_MAP_B_BOX_IS_INVALID),
    )

    failure = fails(lambda: _map_update(stubs, silent, "status", "error"))

    assert failure.code == grpc.StatusCode.FAILED_PRECONDITION, (
        f"a map import went to Error without error.message: {failure}"
    )
    assert failure.info is not None and failure.info.reason == "ERROR_REQUIRES_MESSAGE"
    assert _map_get(stubs, uid) == before, "a refused move to Error changed the job"


# --- prepared delivery --------------------------------------------------------------


def _delivery_update(stubs: Stubs, job: dl.PreparedDelivery, *paths: str) -> dl.PreparedDelivery:
    request = dl.UpdatePreparedDeliveryRequest(
        prepared_delivery=job, update_mask=field_mask_pb2.FieldMask(paths=list(paths))
    )
    return stubs.deliveries.UpdatePreparedDelivery(request).prepared_delivery


def _delivery(stubs: Stubs, catalog_id: str) -> dl.PreparedDelivery:
    request = dl.GetPreparedDeliveryStatusRequest(catalog_id=catalog_id)
    return stubs.deliveries.GetPreparedDeliveryStatus(request).prepared_delivery


def test_delivery_full_lifecycle(stubs: Stubs, uid: str) -> None:
    created = stubs.deliveries.CreatePreparedDelivery(
        dl.CreatePreparedDeliveryRequest(prepared_delivery=dl.PreparedDelivery(catalog_id=uid))
    ).prepared_delivery
    assert created.status == dl.PREPARED_DELIVERY_STATUS_START

    running = _delivery_update(
        stubs,
        dl.PreparedDelivery(
            catalog_id=uid,
            status=dl.PREPARED_DELIVERY_STATUS_IN_PROGRESS,
            progress=40,
            artifacts=_artifacts(uid),
        ),
        "status",
        "progress",
        "artifacts",
    )
    assert running.status == dl.PREPARED_DELIVERY_STATUS_IN_PROGRESS
    assert running.progress == 40
    assert running.size == 1300
    assert [a.catalog_id for a in running.artifacts] == [uid, uid]
    assert running.revision > created.revision

    done = _delivery_update(
        stubs,
        dl.PreparedDelivery(catalog_id=uid, status=dl.PREPARED_DELIVERY_STATUS_DONE),
        "status",
    )
    assert done.status == dl.PREPARED_DELIVERY_STATUS_DONE
    assert done.progress == 100
    assert done.size == 300 + 1000
    # the gpkg artifact's url, though json comes first
    assert done.url == f"https://cache.example/{uid}/map.gpkg"
    gpkg = next(a for a in done.artifacts if a.artifact_type == "gpkg")
    assert gpkg.hash.algorithm == dl.HASH_ALGORITHM_SHA256_HEX
    assert gpkg.hash.hash == GPKG_HASH
    assert done.HasField("expire_time")
    assert done.expire_time.seconds > done.update_time.seconds
    assert _delivery(stubs, uid) == done


def test_a_done_delivery_keeps_its_expire_time_through_later_writes(stubs: Stubs, uid: str) -> None:
    stubs.deliveries.CreatePreparedDelivery(
        dl.CreatePreparedDeliveryRequest(prepared_delivery=dl.PreparedDelivery(catalog_id=uid))
    )
    done = _delivery_update(
        stubs,
        dl.PreparedDelivery(
            catalog_id=uid, status=dl.PREPARED_DELIVERY_STATUS_DONE, artifacts=_artifacts(uid)
        ),
        "status",
        "artifacts",
    )
    assert done.HasField("expire_time")
    # Writes a done delivery allows: its artifacts replaced, then the status named again.
    replaced = _delivery_update(
        stubs, dl.PreparedDelivery(catalog_id=uid, artifacts=_artifacts(uid)[1:]), "artifacts"
    )
    again = _delivery_update(
        stubs,
        dl.PreparedDelivery(catalog_id=uid, status=dl.PREPARED_DELIVERY_STATUS_DONE),
        "status",
    )
    for later in (replaced, again):
        assert later.status == dl.PREPARED_DELIVERY_STATUS_DONE
        assert later.update_time.ToDatetime() > done.update_time.ToDatetime()
        assert later.expire_time == done.expire_time, (
            "a write to a done delivery moved its expire_time: the cache lifetime counts "
            f"from when it became done ({done.expire_time.ToJsonString()}), "
            f"not from its last write ({later.expire_time.ToJsonString()})"
        )
    assert replaced.size == 1000 and replaced.revision > done.revision
    assert _delivery(stubs, uid) == again


def test_delivery_error_needs_an_error_code(stubs: Stubs, uid: str) -> None:
    DELIVERY.create(stubs, "start")  # an unrelated one, so the store is not empty
    stubs.deliveries.CreatePreparedDelivery(
        dl.CreatePreparedDeliveryRequest(prepared_delivery=dl.PreparedDelivery(catalog_id=uid))
    )
    before = _delivery(stubs, uid)
    without_code = dl.PreparedDelivery(
        catalog_id=uid,
        status=dl.PREPARED_DELIVERY_STATUS_ERROR,
        error=er.Error(message="something went wrong"),
    )

    failure = fails(lambda: _delivery_update(stubs, without_code, "status", "error"))

    assert failure.code == grpc.StatusCode.FAILED_PRECONDITION, failure
    assert failure.precondition is not None
    assert any("error_code" in v.subject for v in failure.precondition.violations)
    assert _delivery(stubs, uid) == before

    with_code = dl.PreparedDelivery(
        catalog_id=uid,
        status=dl.PREPARED_DELIVERY_STATUS_ERROR,
        error=er.Error(error_code=er.ERROR_CODE_DELIVERY_NOT_EXIST, message="gone from storage"),
    )
    failed = _delivery_update(stubs, with_code, "status", "error")
    assert failed.status == dl.PREPARED_DELIVERY_STATUS_ERROR
    assert failed.error.error_code == er.ERROR_CODE_DELIVERY_NOT_EXIST


def test_delivery_done_needs_artifacts(stubs: Stubs, uid: str) -> None:
    stubs.deliveries.CreatePreparedDelivery(
        dl.CreatePreparedDeliveryRequest(prepared_delivery=dl.PreparedDelivery(catalog_id=uid))
    )
    before = _delivery(stubs, uid)
    done = dl.PreparedDelivery(catalog_id=uid, status=dl.PREPARED_DELIVERY_STATUS_DONE)

    failure = fails(lambda: _delivery_update(stubs, done, "status"))

    assert failure.code == grpc.StatusCode.FAILED_PRECONDITION, failure
    assert _delivery(stubs, uid) == before


def test_delivery_error_then_start_and_delete_then_start(stubs: Stubs, uid: str) -> None:
    stubs.deliveries.CreatePreparedDelivery(
        dl.CreatePreparedDeliveryRequest(prepared_delivery=dl.PreparedDelivery(catalog_id=uid))
    )
    failed = _delivery_update(
        stubs,
        dl.PreparedDelivery(
            catalog_id=uid,
            status=dl.PREPARED_DELIVERY_STATUS_ERROR,
            error=er.Error(error_code=er.ERROR_CODE_DELIVERY_UNABLE_CLEAR_CACHE),
        ),
        "status",
        "error",
    )
    assert failed.status == dl.PREPARED_DELIVERY_STATUS_ERROR

    again = _delivery_update(
        stubs,
        dl.PreparedDelivery(catalog_id=uid, status=dl.PREPARED_DELIVERY_STATUS_START),
        "status",
    )
    assert again.status == dl.PREPARED_DELIVERY_STATUS_START
    assert again.error.error_code == er.ERROR_CODE_UNSPECIFIED, (
        "a delivery restarted from error still carries the old error"
    )
    assert again.revision > failed.revision

    _delivery_update(
        stubs,
        dl.PreparedDelivery(
            catalog_id=uid, status=dl.PREPARED_DELIVERY_STATUS_DONE, artifacts=_artifacts(uid)
        ),
        "status",
        "artifacts",
    )
    evicted = _delivery_update(
        stubs,
        dl.PreparedDelivery(catalog_id=uid, status=dl.PREPARED_DELIVERY_STATUS_DELETE),
        "status",
    )
    assert evicted.status == dl.PREPARED_DELIVERY_STATUS_DELETE

    prepared = _delivery_update(
        stubs,
        dl.PreparedDelivery(catalog_id=uid, status=dl.PREPARED_DELIVERY_STATUS_START),
        "status",
    )
    assert prepared.status == dl.PREPARED_DELIVERY_STATUS_START
    assert prepared.revision > evicted.revision
    assert _delivery(stubs, uid) == prepared


# --- catalog import ------------------------------------------------------------------


def _catalog_update(stubs: Stubs, job: cat.CatalogImport, *paths: str) -> cat.CatalogImport:
    request = cat.UpdateImportRequest(
        catalog_import=job, update_mask=field_mask_pb2.FieldMask(paths=list(paths))
    )
    return stubs.catalog.UpdateImport(request).catalog_import


def _catalog_new(stubs: Stubs, kind: cat.CatalogImportType.ValueType) -> cat.CatalogImport:
    request = cat.CreateImportRequest(catalog_import=cat.CatalogImport(type=kind))
    return stubs.catalog.CreateImport(request).catalog_import


def test_catalog_import_lifecycle_and_blocking(stubs: Stubs) -> None:
    synonyms = cat.CATALOG_IMPORT_TYPE_SYNONYMS
    first = _catalog_new(stubs, synonyms)
    assert first.status == cat.CATALOG_IMPORT_STATUS_WAITING
    assert re.fullmatch(r"[0-9]{1,19}", first.id)
    assert first.type == synonyms

    running = _catalog_update(
        stubs,
        cat.CatalogImport(id=first.id, status=cat.CATALOG_IMPORT_STATUS_IN_PROGRESS),
        "status",
    )
    assert running.status == cat.CATALOG_IMPORT_STATUS_IN_PROGRESS

    second = _catalog_new(stubs, synonyms)
    assert second.status == cat.CATALOG_IMPORT_STATUS_BLOCKED, (
        "a catalog import created while one of its type runs was not BLOCKED"
    )
    assert second.id != first.id
    other_type = _catalog_new(stubs, cat.CATALOG_IMPORT_TYPE_CONFIGURATION)
    assert other_type.status == cat.CATALOG_IMPORT_STATUS_WAITING

    succeeded = _catalog_update(
        stubs, cat.CatalogImport(id=first.id, status=cat.CATALOG_IMPORT_STATUS_SUCCESS), "status"
    )
    assert succeeded.status == cat.CATALOG_IMPORT_STATUS_SUCCESS
    assert succeeded.revision > running.revision

    unblocked = _catalog_update(
        stubs,
        cat.CatalogImport(id=second.id, status=cat.CATALOG_IMPORT_STATUS_IN_PROGRESS),
        "status",
    )
    assert unblocked.status == cat.CATALOG_IMPORT_STATUS_IN_PROGRESS
    failed = _catalog_update(
        stubs,
        cat.CatalogImport(
            id=second.id, status=cat.CATALOG_IMPORT_STATUS_FAILURE, message="row 3 is broken"
        ),
        "status",
        "message",
    )
    assert failed.status == cat.CATALOG_IMPORT_STATUS_FAILURE
    assert failed.message == "row 3 is broken"
    assert failed.type == synonyms

    third = _catalog_new(stubs, synonyms)
    assert third.status == cat.CATALOG_IMPORT_STATUS_WAITING, "nothing of its type runs now"
    for job_id in (third.id, other_type.id):
        _catalog_update(
            stubs, cat.CatalogImport(id=job_id, status=cat.CATALOG_IMPORT_STATUS_ABORTED), "status"
        )
    got = stubs.catalog.GetImportStatus(cat.GetImportStatusRequest(id=first.id)).catalog_import
    assert got == succeeded


def test_catalog_import_with_a_chosen_id(stubs: Stubs) -> None:
    chosen = _new_catalog_id()
    created = stubs.catalog.CreateImport(
        cat.CreateImportRequest(
            catalog_import=cat.CatalogImport(id=chosen, type=cat.CATALOG_IMPORT_TYPE_ADS)
        )
    ).catalog_import
    assert created.id == chosen
    assert created.status == cat.CATALOG_IMPORT_STATUS_WAITING
    _catalog_update(
        stubs, cat.CatalogImport(id=chosen, status=cat.CATALOG_IMPORT_STATUS_ABORTED), "status"
    )


# --- dataset import -------------------------------------------------------------------

FETCH = ds.DATASET_IMPORT_STEP_NAME_FETCH
IMPORT = ds.DATASET_IMPORT_STEP_NAME_IMPORT
SUCCESS = ds.DATASET_IMPORT_STATUS_SUCCESS
FAILED = ds.DATASET_IMPORT_STATUS_FAILED
RUNNING = ds.DATASET_IMPORT_STATUS_IN_PROGRESS


def _new_dataset(stubs: Stubs) -> ds.Dataset:
    request = ds.CreateDatasetRequest(dataset=ds.Dataset(name="stores"))
    return stubs.datasets.CreateDataset(request).dataset


def _start(stubs: Stubs, dataset_id: str, request_id: str = "") -> ds.Dataset:
    request = ds.StartDatasetImportRequest(dataset_id=dataset_id, request_id=request_id)
    return stubs.datasets.StartDatasetImport(request).dataset


def _step(
    stubs: Stubs,
    dataset_id: str,
    step: ds.DatasetImportStepName.ValueType,
    status: ds.DatasetImportStatus.ValueType = ds.DATASET_IMPORT_STATUS_UNSPECIFIED,
    *details: str,
) -> ds.Dataset:
    entries = [ds.DatasetLogEntry(detail=d, level=ds.DATASET_LOG_LEVEL_INFO) for d in details]
    if not entries and not status:
        entries = [ds.DatasetLogEntry(detail="working", level=ds.DATASET_LOG_LEVEL_INFO)]
    request = ds.UpdateDatasetImportRequest(
        dataset_id=dataset_id, step=step, step_status=status, entries=entries
    )
    return stubs.datasets.UpdateDatasetImport(request).dataset


def _dataset(stubs: Stubs, dataset_id: str) -> ds.Dataset:
    return stubs.datasets.GetDatasetStatus(
        ds.GetDatasetStatusRequest(dataset_id=dataset_id)
    ).dataset


def test_dataset_import_lifecycle(stubs: Stubs) -> None:
    created = _new_dataset(stubs)
    assert UUID.fullmatch(created.dataset_id), created.dataset_id
    assert not created.HasField("latest_run")
    dataset_id = created.dataset_id

    started = _start(stubs, dataset_id)
    run = started.latest_run
    assert UUID.fullmatch(run.id), run.id
    assert run.status == RUNNING
    assert [s.name for s in run.steps] == [FETCH]
    assert run.steps[0].status == RUNNING
    assert run.steps[0].HasField("start")
    assert not run.steps[0].HasField("end")
    assert started.revision > created.revision

    logged = _step(stubs, dataset_id, FETCH, ds.DATASET_IMPORT_STATUS_UNSPECIFIED, "downloading")
    entries = logged.latest_run.steps[0].entries
    assert [e.detail for e in entries] == ["downloading"]
    assert entries[0].level == ds.DATASET_LOG_LEVEL_INFO
    assert entries[0].HasField("created_at")
    assert logged.latest_run.steps[0].status == RUNNING

    fetched = _step(stubs, dataset_id, FETCH, SUCCESS, "fetched 120 rows")
    run = fetched.latest_run
    assert run.status == RUNNING, "a dataset run ended after its fetch step, before import"
    assert [s.name for s in run.steps] == [FETCH, IMPORT], (
        "a fetch step's success did not start the import step"
    )
    assert run.steps[0].status == SUCCESS
    assert run.steps[0].HasField("end")
    assert [e.detail for e in run.steps[0].entries] == ["downloading", "fetched 120 rows"]
    assert run.steps[1].status == RUNNING
    assert not run.steps[1].HasField("end")

    importing = _step(stubs, dataset_id, IMPORT, ds.DATASET_IMPORT_STATUS_UNSPECIFIED, "indexing")
    assert [e.detail for e in importing.latest_run.steps[1].entries] == ["indexing"]

    finished = _step(stubs, dataset_id, IMPORT, SUCCESS)
    run = finished.latest_run
    assert run.status == SUCCESS
    assert [s.status for s in run.steps] == [SUCCESS, SUCCESS]
    assert run.steps[1].HasField("end")
    assert run.id == started.latest_run.id
    assert finished.revision > importing.revision > fetched.revision > logged.revision
    assert _dataset(stubs, dataset_id) == finished

    again = _start(stubs, dataset_id)
    assert again.latest_run.id != run.id
    assert again.latest_run.status == RUNNING


@pytest.mark.parametrize("failing", [FETCH, IMPORT], ids=["fetch", "import"])
def test_dataset_failed_step_fails_the_run(
    stubs: Stubs, failing: ds.DatasetImportStepName.ValueType
) -> None:
    dataset_id = _new_dataset(stubs).dataset_id
    _start(stubs, dataset_id)
    if failing == IMPORT:
        _step(stubs, dataset_id, FETCH, SUCCESS)
    failed = _step(stubs, dataset_id, failing, FAILED, "the source answered 500")
    run = failed.latest_run
    assert run.status == FAILED, "a failed step did not fail its dataset run"
    assert run.steps[-1].name == failing
    assert run.steps[-1].status == FAILED
    assert run.steps[-1].HasField("end")
    assert len(run.steps) == (1 if failing == FETCH else 2)
    assert _dataset(stubs, dataset_id) == failed


def test_second_dataset_import_while_one_runs_is_refused(stubs: Stubs) -> None:
    dataset_id = _new_dataset(stubs).dataset_id
    _start(stubs, dataset_id, request_id=f"r-{uuid.uuid4().hex}")
    before = _dataset(stubs, dataset_id)

    for request_id in ("", f"r-{uuid.uuid4().hex}"):

        def again(request_id: str = request_id) -> ds.Dataset:
            return _start(stubs, dataset_id, request_id)

        failure = fails(again)
        assert failure.code == grpc.StatusCode.FAILED_PRECONDITION, failure
        assert _dataset(stubs, dataset_id) == before


# The dataset's forbidden moves: each state, with the actions the design allows in it.
DATASET_STATES = ("no-run", "fetch-running", "import-running", "succeeded", "failed")
DATASET_ACTIONS = (
    "start",
    "fetch-log",
    "fetch-success",
    "fetch-failed",
    "import-log",
    "import-success",
    "import-failed",
)
DATASET_ALLOWED = {
    "no-run": {"start"},
    "fetch-running": {"fetch-log", "fetch-success", "fetch-failed"},
    "import-running": {"import-log", "import-success", "import-failed"},
    "succeeded": {"start"},
    "failed": {"start"},
}
RUNNING_STEP = {
    "fetch-running": "fetch",
    "import-running": "import",
    "succeeded": "none",
    "failed": "none",
}


def _dataset_in(stubs: Stubs, state: str) -> str:
    dataset_id = _new_dataset(stubs).dataset_id
    if state == "no-run":
        return dataset_id
    _start(stubs, dataset_id)
    if state == "failed":
        _step(stubs, dataset_id, FETCH, FAILED)
    if state in ("import-running", "succeeded"):
        _step(stubs, dataset_id, FETCH, SUCCESS)
    if state == "succeeded":
        _step(stubs, dataset_id, IMPORT, SUCCESS)
    return dataset_id


def _act(stubs: Stubs, dataset_id: str, action: str) -> ds.Dataset:
    if action == "start":
        return _start(stubs, dataset_id)
    step_name, outcome = action.split("-")
    step = FETCH if step_name == "fetch" else IMPORT
    status = {"log": ds.DATASET_IMPORT_STATUS_UNSPECIFIED, "success": SUCCESS, "failed": FAILED}
    return _step(stubs, dataset_id, step, status[outcome], f"{action} entry")


@pytest.mark.parametrize(
    ("state", "action"), [(s, a) for s in DATASET_STATES for a in DATASET_ACTIONS]
)
def test_dataset_moves(stubs: Stubs, state: str, action: str) -> None:
    dataset_id = _dataset_in(stubs, state)
    before = _dataset(stubs, dataset_id)
    if action in DATASET_ALLOWED[state]:
        after = _act(stubs, dataset_id, action)
        assert after.revision > before.revision
        assert _dataset(stubs, dataset_id) == after
        return

    failure = fails(lambda: _act(stubs, dataset_id, action))

    assert failure.code == grpc.StatusCode.FAILED_PRECONDITION, failure
    if action != "start" and state in RUNNING_STEP:
        assert failure.metadata.get("running_step") == RUNNING_STEP[state], failure
    assert _dataset(stubs, dataset_id) == before

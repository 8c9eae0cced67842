"""The demo's stories: how each kind's sample jobs go, step by step, as their runners
would report them (each a Scenario of the stage), and the plan that spreads them out."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import timestamp_pb2
from google.protobuf.message import Message

from jobstatus.demo.stage import Demo, Scenario
from jobstatus.kinds import CATALOG_IMPORT, DATASET, DELIVERY, MAP_IMPORT
from jobstatus.v1 import catalog_import_pb2 as cat
from jobstatus.v1 import dataset_pb2 as ds
from jobstatus.v1 import delivery_pb2 as dl
from jobstatus.v1 import errors_pb2
from jobstatus.v1 import map_import_pb2 as mi

# Jobs start over the first START_WINDOW seconds and each runs for about 20 s,
# so at speed 1 the whole demo takes about a minute.
START_WINDOW = 45.0

AREAS = [
    ("haifa-bay", (34.98, 32.79)),
    ("negev-north", (34.79, 31.25)),
    ("galilee-west", (35.10, 33.00)),
    ("jezreel-valley", (35.30, 32.60)),
    ("golan-south", (35.70, 32.85)),
    ("arava-central", (35.15, 30.60)),
]
DATASETS = ["stores-paris", "chargers-lyon", "pharmacies-lille", "bakeries-nantes", "gyms-nice"]


def _now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.GetCurrentTime()
    return stamp


def _at(when: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(when)
    return stamp


def _footprint(lon: float, lat: float) -> str:
    """A GeoJSON polygon around (lon, lat), as the exporter writes a package's footprint."""
    ring = [[lon, lat], [lon + 0.1, lat], [lon + 0.1, lat + 0.08], [lon, lat + 0.08], [lon, lat]]
    return json.dumps(
        {"type": "Polygon", "coordinates": [[[round(x, 4) for x in p] for p in ring]]}
    )


def map_import(demo: Demo, n: int, ending: str) -> Scenario:
    maps = demo.client.map_imports
    job_id = f"demo-{demo.tag}-map-{n}"
    area, (lon, lat) = AREAS[n % len(AREAS)]
    meta = mi.MapImportMetaData(
        job_id=demo.rng.randint(10_000, 99_999), file_name=f"{area}.gpkg", zoom_level=14
    )

    def update(note: str = "", mask: tuple[str, ...] = ("status",), **job: Any) -> None:
        request = mi.MapImport(import_request_id=job_id, **job)
        demo.show(MAP_IMPORT, maps.update(request, update_mask=mask, timeout=demo.timeout), note)

    def cancel() -> Message:
        request = mi.MapImport(import_request_id=job_id, status=mi.MAP_IMPORT_STATUS_CANCEL)
        return maps.update(request, update_mask=["status"], timeout=demo.timeout)

    created = maps.create(
        mi.MapImport(import_request_id=job_id, meta_data=meta), timeout=demo.timeout
    )
    demo.track(MAP_IMPORT, created, cancel)
    demo.show(MAP_IMPORT, created, "requested")
    yield 2
    if ending == "Cancel":
        update("queued at the exporter", status=mi.MAP_IMPORT_STATUS_PENDING)
        yield 5
        update("cancelled by the requester", status=mi.MAP_IMPORT_STATUS_CANCEL)
        return
    update(
        "exporting",
        ("status", "meta_data.progress", "meta_data.export_start"),
        status=mi.MAP_IMPORT_STATUS_IN_PROGRESS,
        meta_data=mi.MapImportMetaData(progress=0, export_start=_now()),
    )
    paused = False
    for percent in (9, 21, 34, 47, 60, 72, 85, 96):
        yield 2
        if ending == "Error" and percent > 40:
            update(
                "",
                ("status", "error"),
                status=mi.MAP_IMPORT_STATUS_ERROR,
                error=errors_pb2.Error(
                    error_code=errors_pb2.ERROR_CODE_MAP_EXPORT_MAP_FAILED,
                    message=f"tile source timed out at zoom 14 in {area}",
                ),
            )
            return
        if n % 4 == 0 and percent > 50 and not paused:  # one in four pauses on the way
            paused = True
            update("paused by the exporter", status=mi.MAP_IMPORT_STATUS_PAUSE)
            yield 3
            update("resumed", status=mi.MAP_IMPORT_STATUS_IN_PROGRESS)
            yield 1
        update(
            "",
            ("meta_data.progress",),
            meta_data=mi.MapImportMetaData(progress=percent),
        )
    yield 2
    update(
        "package ready",
        (
            "status",
            "meta_data.package_url",
            "meta_data.footprint",
            "meta_data.size",
            "meta_data.area",
            "meta_data.export_end",
            "expire_time",
        ),
        status=mi.MAP_IMPORT_STATUS_DONE,
        meta_data=mi.MapImportMetaData(
            package_url=f"https://packages.example.com/{job_id}/{area}.gpkg",
            footprint=_footprint(lon, lat),
            size=demo.rng.randint(40, 900) * 1_000_000,
            area=demo.rng.randint(50, 400) * 1_000_000,
            export_end=_now(),
        ),
        expire_time=_at(datetime.now(UTC) + timedelta(days=30)),
    )


def delivery(demo: Demo, n: int, ending: str) -> Scenario:
    deliveries = demo.client.deliveries
    catalog_id = f"demo-{demo.tag}-delivery-{n}"
    area = AREAS[(n + 2) % len(AREAS)][0]
    gpkg_size = demo.rng.randint(40, 900) * 1_000_000
    digest = hashlib.sha256(f"{catalog_id}/{area}.gpkg".encode()).hexdigest()
    artifacts = [
        dl.Artifact(
            id=1,
            item_key=f"{area}.gpkg",
            artifact_type="gpkg",
            url=f"https://delivery.example.com/cache/{catalog_id}/{area}.gpkg",
            size=gpkg_size,
            hash=dl.ArtifactHash(algorithm=dl.HASH_ALGORITHM_SHA256_HEX, hash=digest),
        ),
        dl.Artifact(
            id=2,
            item_key=f"{area}.json",
            artifact_type="json",
            url=f"https://delivery.example.com/cache/{catalog_id}/{area}.json",
            size=demo.rng.randint(2_000, 9_000),
        ),
    ]

    def update(note: str, mask: tuple[str, ...], **job: Any) -> None:
        request = dl.PreparedDelivery(catalog_id=catalog_id, **job)
        demo.show(
            DELIVERY, deliveries.update(request, update_mask=mask, timeout=demo.timeout), note
        )

    def fail() -> Message:
        request = dl.PreparedDelivery(
            catalog_id=catalog_id,
            status=dl.PREPARED_DELIVERY_STATUS_ERROR,
            error=errors_pb2.Error(
                error_code=errors_pb2.ERROR_CODE_DELIVERY_UNKNOWN,
                message="the demo stopped before this job finished",
            ),
        )
        return deliveries.update(request, update_mask=["status", "error"], timeout=demo.timeout)

    created = deliveries.create(dl.PreparedDelivery(catalog_id=catalog_id), timeout=demo.timeout)
    demo.track(DELIVERY, created, fail)
    demo.show(DELIVERY, created, "preparation requested")
    yield 2
    update(
        "cache space made, downloading",
        ("status", "progress", "artifacts"),
        status=dl.PREPARED_DELIVERY_STATUS_IN_PROGRESS,
        progress=0,
        artifacts=artifacts,
    )
    for percent in (18, 39, 63, 88):
        yield 3
        if ending == "error" and percent > 50:
            update(
                "",
                ("status", "error"),
                status=dl.PREPARED_DELIVERY_STATUS_ERROR,
                error=errors_pb2.Error(
                    error_code=errors_pb2.ERROR_CODE_DELIVERY_UNABLE_CLEAR_CACHE,
                    message="not enough free space: could not evict old deliveries",
                ),
            )
            return
        update("", ("progress",), progress=percent)
    yield 3
    update(
        "every artifact ready",
        ("status", "artifacts"),
        status=dl.PREPARED_DELIVERY_STATUS_DONE,
        artifacts=artifacts,
    )


def dataset(demo: Demo, n: int, ending: str) -> Scenario:
    datasets = demo.client.datasets
    name = DATASETS[n % len(DATASETS)]
    created = datasets.create(ds.Dataset(name=f"{name} ({demo.tag})"), timeout=demo.timeout)
    dataset_id = created.dataset_id
    demo.show(DATASET, created, "dataset created")
    yield 1

    def log(level: ds.DatasetLogLevel.ValueType, detail: str) -> ds.DatasetLogEntry:
        return ds.DatasetLogEntry(level=level, detail=detail, created_at=_now())

    run_id = ""

    def update(
        step: ds.DatasetImportStepName.ValueType,
        *entries: ds.DatasetLogEntry,
        status: ds.DatasetImportStatus.ValueType = ds.DATASET_IMPORT_STATUS_UNSPECIFIED,
    ) -> None:
        job = datasets.update_import(
            dataset_id,
            step,
            step_status=status,
            entries=entries,
            run_id=run_id,
            timeout=demo.timeout,
        )
        demo.show(DATASET, job)

    def fail() -> Message:
        current = datasets.get(dataset_id, timeout=demo.timeout).latest_run.steps[-1].name
        return datasets.update_import(
            dataset_id,
            current,
            step_status=ds.DATASET_IMPORT_STATUS_FAILED,
            entries=[log(ds.DATASET_LOG_LEVEL_ERROR, "the demo stopped before this run finished")],
            run_id=run_id,
            timeout=demo.timeout,
        )

    started = datasets.start_import(dataset_id, timeout=demo.timeout)
    run_id = started.latest_run.id
    demo.track(DATASET, started, fail)
    demo.show(DATASET, started, "import run started")
    rows = demo.rng.randint(20_000, 90_000)
    skipped = demo.rng.randint(10, 400)
    fetch, load = ds.DATASET_IMPORT_STEP_NAME_FETCH, ds.DATASET_IMPORT_STEP_NAME_IMPORT
    info, warning = ds.DATASET_LOG_LEVEL_INFO, ds.DATASET_LOG_LEVEL_WARNING
    yield 3
    update(fetch, log(info, f"fetching https://data.example.com/{name}.csv"))
    yield 3
    update(
        fetch,
        log(info, f"downloaded {rows:,} rows"),
        log(warning, f"{skipped} rows without coordinates skipped"),
    )
    yield 3
    update(fetch, status=ds.DATASET_IMPORT_STATUS_SUCCESS)
    yield 3
    update(load, log(info, f"importing {rows - skipped:,} features"))
    yield 4
    if ending == "failed":
        update(
            load,
            log(
                ds.DATASET_LOG_LEVEL_ERROR,
                f"duplicate key store_id={n * 97 + 1204} at row 1,204",
            ),
            status=ds.DATASET_IMPORT_STATUS_FAILED,
        )
        return
    update(
        load,
        log(info, f"imported {rows - skipped:,} features"),
        status=ds.DATASET_IMPORT_STATUS_SUCCESS,
    )


def _catalog_create(demo: Demo, kind_type: cat.CatalogImportType.ValueType, note: str) -> Message:
    imports = demo.client.catalog_imports
    job = imports.create(cat.CatalogImport(type=kind_type), timeout=demo.timeout)
    job_id = job.id

    def abort() -> Message:
        request = cat.CatalogImport(id=job_id, status=cat.CATALOG_IMPORT_STATUS_ABORTED)
        return imports.update(request, update_mask=["status"], timeout=demo.timeout)

    demo.track(CATALOG_IMPORT, job, abort)
    return demo.show(CATALOG_IMPORT, job, note)


def _catalog_set(
    demo: Demo,
    job_id: str,
    status: cat.CatalogImportStatus.ValueType,
    note: str = "",
    message: str = "",
) -> Message:
    request = cat.CatalogImport(id=job_id, status=status, message=message)
    mask = ["status", "message"] if message else ["status"]
    job = demo.client.catalog_imports.update(request, update_mask=mask, timeout=demo.timeout)
    return demo.show(CATALOG_IMPORT, job, note)


def catalog_pair(demo: Demo) -> Scenario:
    """Two PRODUCTS imports: the second, created while the first runs, waits BLOCKED."""
    first = _catalog_create(demo, cat.CATALOG_IMPORT_TYPE_PRODUCTS, "import accepted")
    first_id = getattr(first, "id")  # noqa: B009
    yield 2
    _catalog_set(demo, first_id, cat.CATALOG_IMPORT_STATUS_IN_PROGRESS, "importing products")
    yield 4
    second = _catalog_create(demo, cat.CATALOG_IMPORT_TYPE_PRODUCTS, f"queued behind {first_id}")
    second_id = getattr(second, "id")  # noqa: B009
    yield 8
    _catalog_set(demo, first_id, cat.CATALOG_IMPORT_STATUS_SUCCESS)
    yield 1
    if getattr(second, "status") == cat.CATALOG_IMPORT_STATUS_BLOCKED:  # noqa: B009
        _catalog_set(demo, second_id, cat.CATALOG_IMPORT_STATUS_WAITING, f"{first_id} is done")
        yield 2
    _catalog_set(demo, second_id, cat.CATALOG_IMPORT_STATUS_IN_PROGRESS, "importing products")
    yield 6
    _catalog_set(demo, second_id, cat.CATALOG_IMPORT_STATUS_SUCCESS)


def catalog_import(demo: Demo, n: int, ending: str) -> Scenario:
    types = [
        cat.CATALOG_IMPORT_TYPE_ADS,
        cat.CATALOG_IMPORT_TYPE_SYNONYMS,
        cat.CATALOG_IMPORT_TYPE_CONFIGURATION,
        cat.CATALOG_IMPORT_TYPE_PANELS,
    ]
    job = _catalog_create(demo, types[n % len(types)], "import accepted")
    job_id = getattr(job, "id")  # noqa: B009
    yield 2
    # WAITING, or BLOCKED behind an import of the same type: both may go IN_PROGRESS.
    _catalog_set(demo, job_id, cat.CATALOG_IMPORT_STATUS_IN_PROGRESS, "importing")
    yield 9
    if ending == "FAILURE":
        _catalog_set(
            demo,
            job_id,
            cat.CATALOG_IMPORT_STATUS_FAILURE,
            message="feed validation failed: 3 ads reference unknown product keys",
        )
        return
    _catalog_set(demo, job_id, cat.CATALOG_IMPORT_STATUS_SUCCESS)


def plan(demo: Demo, jobs: int) -> list[tuple[float, str, Scenario]]:
    """Every kind's jobs, their starts spread over START_WINDOW seconds."""

    def endings(failures: list[str], success: str) -> list[str]:
        return ([success, *failures] + [success] * jobs)[:jobs]

    plan: list[tuple[float, str, Scenario]] = []

    def start(n: int, lane: int) -> float:
        return START_WINDOW * n / jobs + 1.5 * lane

    for n, ending in enumerate(endings(["Error", "Cancel"], "Done"), start=1):
        plan.append((start(n - 1, 0), f"map import {n}", map_import(demo, n, ending)))
    for n, ending in enumerate(endings(["error"], "done"), start=1):
        plan.append((start(n - 1, 1), f"delivery {n}", delivery(demo, n, ending)))
    for n, ending in enumerate(endings(["failed"], "success"), start=1):
        plan.append((start(n - 1, 2), f"dataset {n}", dataset(demo, n, ending)))
    # The catalog imports: a PRODUCTS pair (the second waits BLOCKED), then single ones.
    if jobs == 1:
        plan.append((start(0, 3), "catalog import 1", catalog_import(demo, 0, "SUCCESS")))
    else:
        plan.append((start(0, 3), "catalog imports 1-2", catalog_pair(demo)))
        for n, ending in enumerate(endings(["FAILURE"], "SUCCESS")[1 : jobs - 1]):
            plan.append(
                (start(n + 2, 3), f"catalog import {n + 3}", catalog_import(demo, n, ending))
            )
    return plan

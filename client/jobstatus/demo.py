"""jobstatus demo: sample jobs of all four kinds through realistic lifecycles.

    jobstatus demo                 # about a minute against 127.0.0.1:50051
    jobstatus demo --speed 20      # the same in about three seconds

It plays the job runners (an exporter, a delivery cache, a dataset importer, a
catalog importer) against a running server through the client library, so a
newcomer sees live data in `jobstatus watch` a minute after `make run`:

- map imports: Start → InProgress with progress steps → Done with package_url
  and footprint; one pauses on the way; one fails (Error, MAP.exportMapFailed);
  one is queued (Pending) and cancelled (Cancel);
- prepared deliveries: start → inProgress → done with a gpkg (SHA256Hex hash)
  and a json artifact; one fails with DELIVERY.unableClearCache;
- datasets: an import run with log lines (info, warning) through fetch and
  import; one run fails in import with an error line;
- catalog imports: WAITING → IN_PROGRESS → SUCCESS; a second import of the same
  type created while the first runs starts BLOCKED and runs once it is done;
  one ends in FAILURE with a message.

Every run uses fresh ids (a random run tag), so it can be run again and again.
It prints one line per action and a summary. Ctrl-C settles the jobs still
running (Cancel, error, failed, ABORTED) before it exits.
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import json
import random
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import timestamp_pb2
from google.protobuf.message import Message
from rich.console import Console
from rich.text import Text

from jobstatus.errors import JobStatusError
from jobstatus.kinds import CATALOG_IMPORT, DATASET, DELIVERY, KINDS, MAP_IMPORT, Kind
from jobstatus.live import Outcome, outcome, progress, status_text
from jobstatus.sync import Client
from jobstatus.v1 import catalog_import_pb2 as cat
from jobstatus.v1 import dataset_pb2 as ds
from jobstatus.v1 import delivery_pb2 as dl
from jobstatus.v1 import errors_pb2
from jobstatus.v1 import map_import_pb2 as mi

DEFAULT_JOBS = 4
# Jobs start over the first START_WINDOW seconds and each runs for about 20 s,
# so at speed 1 the whole demo takes about a minute.
START_WINDOW = 45.0

# A scenario is a generator: it acts, then yields how many (nominal) seconds to wait.
Scenario = Iterator[float]

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


@dataclass
class Demo:
    """One run of the demo: the client, the clock, and the jobs still running."""

    client: Client
    out: Console
    speed: float
    as_json: bool
    timeout: float
    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    rng: random.Random = field(default_factory=random.Random)
    started: float = field(default_factory=time.monotonic)
    # What to do with each job that is not settled yet if the demo is interrupted.
    running: dict[tuple[str, str], Callable[[], Message]] = field(default_factory=dict)
    finished: dict[tuple[str, str], Message] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def show(self, kind: Kind[Any], job: Message, note: str = "") -> Message:
        """Print what happened to `job`, and note whether it is settled now."""
        key = (kind.name, kind.job_id(job))
        if kind.is_settled(job):
            self.running.pop(key, None)
            self.finished[key] = job
        elapsed = time.monotonic() - self.started
        status = status_text(kind, job)
        how_far = progress(kind, job)
        percent = f"{how_far.percent:.0f}%" if how_far.percent is not None else ""
        detail = "  ".join(part for part in (note, how_far.detail) if part)
        if self.as_json:
            line = {
                "elapsed": round(elapsed, 2),
                "kind": kind.name,
                "id": key[1],
                "status": status,
                "revision": int(getattr(job, "revision")),  # noqa: B009
                "note": note,
            }
            print(json.dumps(line, ensure_ascii=False), flush=True)
            return job
        style = {Outcome.RUNNING: "yellow", Outcome.SUCCEEDED: "green", Outcome.FAILED: "red"}
        text = Text(f"{elapsed:6.1f}s  ")
        text.append(f"{kind.name.replace('_', ' '):<17} ")
        text.append(f"{key[1]:<36} ", style="bold")
        text.append(f"{status:<12}", style=style[outcome(kind, job)])
        text.append(f"{percent:>5}  ")
        text.append(detail, style="dim")
        self.out.print(text, soft_wrap=True)
        return job

    def track(self, kind: Kind[Any], job: Message, abort: Callable[[], Message]) -> None:
        self.running[(kind.name, kind.job_id(job))] = abort

    # --- the clock --------------------------------------------------------------------

    def play(self, scenarios: list[tuple[float, str, Scenario]]) -> None:
        """Run the scenarios side by side, each step at its time (scaled by the speed)."""
        queue = [(start / self.speed, n, name, s) for n, (start, name, s) in enumerate(scenarios)]
        heapq.heapify(queue)
        while queue:
            due, n, name, scenario = heapq.heappop(queue)
            wait = self.started + due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                delay = next(scenario)
            except StopIteration:
                continue
            except JobStatusError as error:
                self.errors.append(f"{name}: {error}")
                self.out.print(Text(f"{name}: {error}", style="red"), soft_wrap=True)
                continue
            jitter = self.rng.uniform(0.8, 1.2)
            heapq.heappush(queue, (due + delay * jitter / self.speed, n, name, scenario))

    def settle_the_rest(self, why: str) -> None:
        """Settle every job still running, as its runner would when it is stopped."""
        if not self.running:
            return
        if not self.as_json:
            self.out.print(f"\n{why}: settling the {len(self.running)} jobs still running")
        for (kind_name, _), abort in list(self.running.items()):
            try:
                self.show(KINDS[kind_name], abort(), f"demo {why}")
            except JobStatusError as error:
                self.out.print(Text(str(error), style="red"), soft_wrap=True)
        self.running.clear()

    # --- the scenarios ----------------------------------------------------------------

    def map_import(self, n: int, ending: str) -> Scenario:
        maps = self.client.map_imports
        job_id = f"demo-{self.tag}-map-{n}"
        area, (lon, lat) = AREAS[n % len(AREAS)]
        meta = mi.MapImportMetaData(
            job_id=self.rng.randint(10_000, 99_999), file_name=f"{area}.gpkg", zoom_level=14
        )

        def update(note: str = "", mask: tuple[str, ...] = ("status",), **job: Any) -> None:
            request = mi.MapImport(import_request_id=job_id, **job)
            self.show(
                MAP_IMPORT, maps.update(request, update_mask=mask, timeout=self.timeout), note
            )

        def cancel() -> Message:
            request = mi.MapImport(import_request_id=job_id, status=mi.MAP_IMPORT_STATUS_CANCEL)
            return maps.update(request, update_mask=["status"], timeout=self.timeout)

        created = maps.create(
            mi.MapImport(import_request_id=job_id, meta_data=meta), timeout=self.timeout
        )
        self.track(MAP_IMPORT, created, cancel)
        self.show(MAP_IMPORT, created, "requested")
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
                size=self.rng.randint(40, 900) * 1_000_000,
                area=self.rng.randint(50, 400) * 1_000_000,
                export_end=_now(),
            ),
            expire_time=_at(datetime.now(UTC) + timedelta(days=30)),
        )

    def delivery(self, n: int, ending: str) -> Scenario:
        deliveries = self.client.deliveries
        catalog_id = f"demo-{self.tag}-delivery-{n}"
        area = AREAS[(n + 2) % len(AREAS)][0]
        gpkg_size = self.rng.randint(40, 900) * 1_000_000
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
                size=self.rng.randint(2_000, 9_000),
            ),
        ]

        def update(note: str, mask: tuple[str, ...], **job: Any) -> None:
            request = dl.PreparedDelivery(catalog_id=catalog_id, **job)
            self.show(
                DELIVERY, deliveries.update(request, update_mask=mask, timeout=self.timeout), note
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
            return deliveries.update(request, update_mask=["status", "error"], timeout=self.timeout)

        created = deliveries.create(
            dl.PreparedDelivery(catalog_id=catalog_id), timeout=self.timeout
        )
        self.track(DELIVERY, created, fail)
        self.show(DELIVERY, created, "preparation requested")
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

    def dataset(self, n: int, ending: str) -> Scenario:
        datasets = self.client.datasets
        name = DATASETS[n % len(DATASETS)]
        created = datasets.create(ds.Dataset(name=f"{name} ({self.tag})"), timeout=self.timeout)
        dataset_id = created.dataset_id
        self.show(DATASET, created, "dataset created")
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
                timeout=self.timeout,
            )
            self.show(DATASET, job)

        def fail() -> Message:
            current = datasets.get(dataset_id, timeout=self.timeout).latest_run.steps[-1].name
            return datasets.update_import(
                dataset_id,
                current,
                step_status=ds.DATASET_IMPORT_STATUS_FAILED,
                entries=[
                    log(ds.DATASET_LOG_LEVEL_ERROR, "the demo stopped before this run finished")
                ],
                run_id=run_id,
                timeout=self.timeout,
            )

        started = datasets.start_import(dataset_id, timeout=self.timeout)
        run_id = started.latest_run.id
        self.track(DATASET, started, fail)
        self.show(DATASET, started, "import run started")
        rows = self.rng.randint(20_000, 90_000)
        skipped = self.rng.randint(10, 400)
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

    def _catalog_create(self, kind_type: cat.CatalogImportType.ValueType, note: str) -> Message:
        imports = self.client.catalog_imports
        job = imports.create(cat.CatalogImport(type=kind_type), timeout=self.timeout)
        job_id = job.id

        def abort() -> Message:
            request = cat.CatalogImport(id=job_id, status=cat.CATALOG_IMPORT_STATUS_ABORTED)
            return imports.update(request, update_mask=["status"], timeout=self.timeout)

        self.track(CATALOG_IMPORT, job, abort)
        return self.show(CATALOG_IMPORT, job, note)

    def _catalog_set(
        self,
        job_id: str,
        status: cat.CatalogImportStatus.ValueType,
        note: str = "",
        message: str = "",
    ) -> Message:
        request = cat.CatalogImport(id=job_id, status=status, message=message)
        mask = ["status", "message"] if message else ["status"]
        job = self.client.catalog_imports.update(request, update_mask=mask, timeout=self.timeout)
        return self.show(CATALOG_IMPORT, job, note)

    def catalog_pair(self) -> Scenario:
        """Two PRODUCTS imports: the second, created while the first runs, waits BLOCKED."""
        first = self._catalog_create(cat.CATALOG_IMPORT_TYPE_PRODUCTS, "import accepted")
        first_id = getattr(first, "id")  # noqa: B009
        yield 2
        self._catalog_set(first_id, cat.CATALOG_IMPORT_STATUS_IN_PROGRESS, "importing products")
        yield 4
        second = self._catalog_create(cat.CATALOG_IMPORT_TYPE_PRODUCTS, f"queued behind {first_id}")
        second_id = getattr(second, "id")  # noqa: B009
        yield 8
        self._catalog_set(first_id, cat.CATALOG_IMPORT_STATUS_SUCCESS)
        yield 1
        if getattr(second, "status") == cat.CATALOG_IMPORT_STATUS_BLOCKED:  # noqa: B009
            self._catalog_set(second_id, cat.CATALOG_IMPORT_STATUS_WAITING, f"{first_id} is done")
            yield 2
        self._catalog_set(second_id, cat.CATALOG_IMPORT_STATUS_IN_PROGRESS, "importing products")
        yield 6
        self._catalog_set(second_id, cat.CATALOG_IMPORT_STATUS_SUCCESS)

    def catalog_import(self, n: int, ending: str) -> Scenario:
        types = [
            cat.CATALOG_IMPORT_TYPE_ADS,
            cat.CATALOG_IMPORT_TYPE_SYNONYMS,
            cat.CATALOG_IMPORT_TYPE_CONFIGURATION,
            cat.CATALOG_IMPORT_TYPE_PANELS,
        ]
        job = self._catalog_create(types[n % len(types)], "import accepted")
        job_id = getattr(job, "id")  # noqa: B009
        yield 2
        # WAITING, or BLOCKED behind an import of the same type: both may go IN_PROGRESS.
        self._catalog_set(job_id, cat.CATALOG_IMPORT_STATUS_IN_PROGRESS, "importing")
        yield 9
        if ending == "FAILURE":
            self._catalog_set(
                job_id,
                cat.CATALOG_IMPORT_STATUS_FAILURE,
                message="feed validation failed: 3 ads reference unknown product keys",
            )
            return
        self._catalog_set(job_id, cat.CATALOG_IMPORT_STATUS_SUCCESS)

    def scenarios(self, jobs: int) -> list[tuple[float, str, Scenario]]:
        """Every kind's jobs, their starts spread over START_WINDOW seconds."""

        def endings(failures: list[str], success: str) -> list[str]:
            return ([success, *failures] + [success] * jobs)[:jobs]

        plan: list[tuple[float, str, Scenario]] = []

        def start(n: int, lane: int) -> float:
            return START_WINDOW * n / jobs + 1.5 * lane

        for n, ending in enumerate(endings(["Error", "Cancel"], "Done"), start=1):
            plan.append((start(n - 1, 0), f"map import {n}", self.map_import(n, ending)))
        for n, ending in enumerate(endings(["error"], "done"), start=1):
            plan.append((start(n - 1, 1), f"delivery {n}", self.delivery(n, ending)))
        for n, ending in enumerate(endings(["failed"], "success"), start=1):
            plan.append((start(n - 1, 2), f"dataset {n}", self.dataset(n, ending)))
        # The catalog imports: a PRODUCTS pair (the second waits BLOCKED), then single ones.
        if jobs == 1:
            plan.append((start(0, 3), "catalog import 1", self.catalog_import(0, "SUCCESS")))
        else:
            plan.append((start(0, 3), "catalog imports 1-2", self.catalog_pair()))
            for n, ending in enumerate(endings(["FAILURE"], "SUCCESS")[1 : jobs - 1]):
                plan.append(
                    (start(n + 2, 3), f"catalog import {n + 3}", self.catalog_import(n, ending))
                )
        return plan

    def summary(self) -> None:
        by_kind: dict[str, Counter[str]] = {name: Counter() for name in KINDS}
        for (kind_name, _), job in self.finished.items():
            by_kind[kind_name][status_text(KINDS[kind_name], job)] += 1
        elapsed = time.monotonic() - self.started
        if self.as_json:
            summary = {"summary": {k: dict(v) for k, v in by_kind.items()}, "elapsed": elapsed}
            print(json.dumps(summary), flush=True)
            return
        self.out.print(f"\ndemo run {self.tag} finished in {elapsed:.1f} s:")
        for kind_name, counts in by_kind.items():
            if not counts:
                continue
            line = ", ".join(f"{count} {status}" for status, count in counts.items())
            self.out.print(f"  {kind_name.replace('_', ' ')}: {line}")


# --- the command ------------------------------------------------------------------------


def factor(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {text}")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--jobs",
        type=count,
        default=DEFAULT_JOBS,
        metavar="N",
        help=f"jobs of each kind (default {DEFAULT_JOBS}; the failures need 3 or more)",
    )
    parser.add_argument(
        "--speed",
        type=factor,
        default=1.0,
        metavar="X",
        help="play X times faster (default 1: about a minute)",
    )


def run(client: Client, args: argparse.Namespace, out: Console) -> int:
    """Drive the demo's jobs; 0 when every step went through, 1 when one was refused."""
    # Fail fast, with one line, when the server is not there.
    client.map_imports.list_page(page_size=1, timeout=args.timeout)
    demo = Demo(client, out, args.speed, args.json, args.timeout)
    plan = demo.scenarios(args.jobs)
    if not args.json:
        seconds = (START_WINDOW + 15) / args.speed
        out.print(
            f"jobstatus demo: run {demo.tag} against {args.addr}: {4 * args.jobs} jobs "
            f"for about {seconds:.0f} s. In another terminal: "
            "jobstatus watch map-import (or delivery, dataset, catalog-import)",
            soft_wrap=True,
        )
    try:
        demo.play(plan)
    except KeyboardInterrupt:
        demo.settle_the_rest("interrupted")
        raise
    demo.settle_the_rest("stopped early")  # only after a refused step: leave nothing running
    demo.summary()
    return 1 if demo.errors else 0

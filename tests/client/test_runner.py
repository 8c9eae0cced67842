"""The job runner (jobstatus/runner.py) through the real client against a real server,
on both databases: a run that ends well is done, one that raises is failed with the
exception's message (and the exception goes on), progress is coalesced to at most one
write per interval with the last value always sent, a job that exists is adopted.
What the runner wrote is read back from the job's history. A leased run renews its
lease while it works without a word, and a runner killed with SIGKILL leaves a job
that the server fails when the lease runs out, as an event its watchers see."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import time
from datetime import timedelta
from typing import Any

import pytest

from jobstatus import AsyncClient, Client, JobStatusError
from jobstatus.runplan import leaf_paths
from jobstatus.v1 import catalog_import_pb2 as cat
from jobstatus.v1 import dataset_pb2 as ds
from jobstatus.v1 import delivery_pb2 as dl
from jobstatus.v1 import errors_pb2
from jobstatus.v1 import map_import_pb2 as mi
from tests.serverproc import ROOT, ServerProcess

NEVER = 3600.0  # a progress interval no test outlives: every write after the first waits
BOUND = 30.0  # seconds any wait of these tests may take before it fails


def package() -> mi.MapImport:
    """What a Done map import needs: its package's url and footprint."""
    return mi.MapImport(
        meta_data=mi.MapImportMetaData(
            package_url="https://packages.example.com/p.gpkg",
            footprint='{"type": "Polygon", "coordinates": []}',
        )
    )


def map_writes(client: Client, job_id: str) -> list[tuple[str, int]]:
    """Each change of the map import: (status name, progress)."""
    history = client.map_imports.history(job_id)
    return [(str(c.status), c.job.meta_data.progress) for c in history.changes]


START, RUNNING, DONE, ERROR = (
    "MAP_IMPORT_STATUS_START",
    "MAP_IMPORT_STATUS_IN_PROGRESS",
    "MAP_IMPORT_STATUS_DONE",
    "MAP_IMPORT_STATUS_ERROR",
)


def test_a_run_that_ends_well_is_done(client: Client, uid: str) -> None:
    with client.map_imports.run(uid, progress_interval=NEVER) as job:
        assert str(client.map_imports.status(job.latest)) == RUNNING
        for percent in range(1, 60):
            job.progress(percent)
        job.set_result(package())
    done = client.map_imports.get(uid)
    assert done.status == mi.MAP_IMPORT_STATUS_DONE
    assert done.meta_data.package_url == "https://packages.example.com/p.gpkg"
    assert done.meta_data.zoom_level == 1  # the result's paths only: no sibling cleared
    # One progress write for 59 reports: the first; the rest coalesced into the final write.
    assert map_writes(client, uid) == [(START, 0), (RUNNING, 0), (RUNNING, 1), (DONE, 100)]


def test_a_run_that_raises_is_failed_with_the_message(client: Client, uid: str) -> None:
    timed_out = pytest.raises(RuntimeError, match="tile source timed out")
    with timed_out, client.map_imports.run(uid, progress_interval=NEVER) as job:
        job.progress(5)
        job.progress(7)
        raise RuntimeError("tile source timed out at zoom 14")
    failed = client.map_imports.get(uid)
    assert failed.status == mi.MAP_IMPORT_STATUS_ERROR
    assert failed.error.message == "tile source timed out at zoom 14"
    assert failed.error.error_code == errors_pb2.ERROR_CODE_MAP_UNKNOWN
    # The last progress value is sent, with the failed write.
    assert map_writes(client, uid) == [(START, 0), (RUNNING, 0), (RUNNING, 5), (ERROR, 7)]


def test_an_interrupted_run_is_failed_too(client: Client, uid: str) -> None:
    with pytest.raises(KeyboardInterrupt), client.map_imports.run(uid):
        raise KeyboardInterrupt
    failed = client.map_imports.get(uid)
    assert failed.status == mi.MAP_IMPORT_STATUS_ERROR
    assert failed.error.message == "KeyboardInterrupt"


def test_the_last_progress_is_flushed_within_the_interval(client: Client, uid: str) -> None:
    with client.map_imports.run(uid, progress_interval=0.2) as job:
        for percent in range(1, 31):
            job.progress(percent)
        # No further report: the background flush sends 30 while the block still runs.
        deadline = time.monotonic() + BOUND
        seen: list[int] = []
        while not seen or seen[-1] != 30:
            assert time.monotonic() < deadline, f"progress 30 never sent; saw {seen}"
            seen.append(client.map_imports.get(uid).meta_data.progress)
            time.sleep(0.05)
        job.set_result(package())
    progress = [p for status, p in map_writes(client, uid) if status == RUNNING][1:]
    assert progress[0] == 1 and progress[-1] == 30  # the first sent at once, the last flushed
    assert progress == sorted(set(progress))  # never an older value after a newer one
    assert len(progress) < 30  # coalesced


def test_a_progress_the_job_holds_is_not_written_again(client: Client, uid: str) -> None:
    with client.map_imports.run(uid, progress_interval=0) as job:
        for percent in (5, 5, 5, 9, 9):
            job.progress(percent)
        job.set_result(package())
    assert map_writes(client, uid) == [
        (START, 0),
        (RUNNING, 0),
        (RUNNING, 5),
        (RUNNING, 9),
        (DONE, 100),
    ]


def test_an_existing_job_is_adopted(client: Client, uid: str) -> None:
    client.map_imports.create(
        mi.MapImport(
            import_request_id=uid,
            status=mi.MAP_IMPORT_STATUS_START,
            meta_data=mi.MapImportMetaData(job_id=77),
        )
    )
    client.map_imports.update(
        mi.MapImport(import_request_id=uid, status=mi.MAP_IMPORT_STATUS_PENDING)
    )
    with client.map_imports.run(uid) as job:
        assert job.latest.meta_data.job_id == 77
        job.set_result(package())
    statuses = [status for status, _ in map_writes(client, uid)]
    assert statuses == [START, "MAP_IMPORT_STATUS_PENDING", RUNNING, DONE]


def test_a_settled_job_is_not_run_again(client: Client, uid: str) -> None:
    client.map_imports.create(
        mi.MapImport(import_request_id=uid, status=mi.MAP_IMPORT_STATUS_DRAFT)
    )
    client.map_imports.update(
        mi.MapImport(import_request_id=uid, status=mi.MAP_IMPORT_STATUS_CANCEL)
    )
    ran = False
    with pytest.raises(JobStatusError) as caught, client.map_imports.run(uid):
        ran = True
    assert not ran
    assert caught.value.reason == "TRANSITION_NOT_ALLOWED"


def test_a_catalog_import_run_gets_its_id_and_reports_failure_in_message(
    client: Client,
) -> None:
    synonyms = cat.CatalogImport(type=cat.CATALOG_IMPORT_TYPE_SYNONYMS)
    with client.catalog_imports.run(resource=synonyms) as job:
        assert job.latest.status == cat.CATALOG_IMPORT_STATUS_IN_PROGRESS
        with pytest.raises(TypeError):  # a catalog import has no percentage
            job.progress(10)
    assert client.catalog_imports.get(job.job_id).status == cat.CATALOG_IMPORT_STATUS_SUCCESS

    with pytest.raises(ValueError), client.catalog_imports.run(resource=synonyms) as failing:
        raise ValueError("3 ads reference unknown product keys")
    failed = client.catalog_imports.get(failing.job_id)
    assert failed.status == cat.CATALOG_IMPORT_STATUS_FAILURE
    assert failed.message == "3 ads reference unknown product keys"


ARTIFACT = dl.Artifact(item_key="m.gpkg", artifact_type="gpkg", url="https://c.test/m.gpkg")


async def test_async_runs_end_done_or_failed(aclient: AsyncClient, uid: str) -> None:
    async with aclient.deliveries.run(uid, progress_interval=NEVER) as job:
        await job.progress(10)
        await job.progress(20)
        job.set_result(dl.PreparedDelivery(artifacts=[ARTIFACT]))
    done = await aclient.deliveries.get(uid)
    assert done.status == dl.PREPARED_DELIVERY_STATUS_DONE
    assert done.url == ARTIFACT.url

    with pytest.raises(OSError, match="disk full"):
        async with aclient.deliveries.run(uid + "-2", progress_interval=NEVER) as failing:
            await failing.progress(33)
            await failing.progress(44)
            raise OSError("disk full")
    failed = await aclient.deliveries.get(uid + "-2")
    assert failed.status == dl.PREPARED_DELIVERY_STATUS_ERROR
    assert failed.error.message == "disk full"
    assert failed.error.error_code == errors_pb2.ERROR_CODE_DELIVERY_UNKNOWN
    history = await aclient.deliveries.history(uid + "-2")
    assert [(str(c.status), c.job.progress) for c in history.changes] == [
        ("PREPARED_DELIVERY_STATUS_START", 0),
        ("PREPARED_DELIVERY_STATUS_IN_PROGRESS", 0),
        ("PREPARED_DELIVERY_STATUS_IN_PROGRESS", 33),
        ("PREPARED_DELIVERY_STATUS_ERROR", 44),
    ]


async def test_async_background_flush(aclient: AsyncClient, uid: str) -> None:
    async with aclient.map_imports.run(uid, progress_interval=0.2) as job:
        await job.progress(1)
        await job.progress(2)
        await job.progress(3)
        deadline = time.monotonic() + BOUND
        seen: list[int] = []
        while not seen or seen[-1] != 3:
            assert time.monotonic() < deadline, f"progress 3 never sent; saw {seen}"
            seen.append((await aclient.map_imports.get(uid)).meta_data.progress)
        job.set_result(package())
    assert (await aclient.map_imports.get(uid)).status == mi.MAP_IMPORT_STATUS_DONE


def test_leaf_paths_name_only_what_is_set() -> None:
    assert sorted(leaf_paths(package())) == ["meta_data.footprint", "meta_data.package_url"]


# --- the lease ---------------------------------------------------------------------------

# Renewed every third of it: a loaded machine has two thirds of a lease (2 s) of slack
# before a renewal comes too late.
LEASE = timedelta(seconds=3)
RENEWALS = 4  # renewals seen before a leased run's end: past one lease of silence


def lease_writes(changes: list[Any]) -> int:
    """How many changes only moved the lease: same status and progress, a later expiry."""
    count = 0
    for before, after in itertools.pairwise(changes):
        same = before.job.status == after.job.status
        same = same and _progress(before.job) == _progress(after.job)
        later = after.job.lease_expire_time.ToDatetime() > before.job.lease_expire_time.ToDatetime()
        count += same and later
    return count


def _progress(job: Any) -> int:
    return int(job.meta_data.progress) if hasattr(job, "meta_data") else int(job.progress)


def test_a_leased_run_renews_its_lease_while_it_works_silently(client: Client, uid: str) -> None:
    with client.map_imports.run(uid, lease=LEASE) as job:
        assert job.latest.HasField("lease_expire_time")
        deadline = time.monotonic() + BOUND
        # Nothing reported meanwhile: only the background renewals keep the job alive.
        while lease_writes(client.map_imports.history(uid).changes) < RENEWALS:
            assert time.monotonic() < deadline, "the lease was not renewed"
            time.sleep(0.1)
        assert client.map_imports.get(uid).status == mi.MAP_IMPORT_STATUS_IN_PROGRESS
        job.set_result(package())
    done = client.map_imports.get(uid)
    assert done.status == mi.MAP_IMPORT_STATUS_DONE
    assert not done.HasField("lease_expire_time")  # settling cleared the lease


async def test_async_leased_run_renews_its_lease(aclient: AsyncClient, uid: str) -> None:
    async with aclient.deliveries.run(uid, lease=LEASE) as job:
        deadline = time.monotonic() + BOUND
        while lease_writes((await aclient.deliveries.history(uid)).changes) < RENEWALS:
            assert time.monotonic() < deadline, "the lease was not renewed"
            await asyncio.sleep(0.1)
        job.set_result(dl.PreparedDelivery(artifacts=[ARTIFACT]))
    assert (await aclient.deliveries.get(uid)).status == dl.PREPARED_DELIVERY_STATUS_DONE


RUNNER = """
import sys, time
from datetime import timedelta
from jobstatus import Client

with Client(sys.argv[1]) as client:
    with client.map_imports.run(sys.argv[2], lease=timedelta(seconds=2)) as job:
        job.progress(30)
        print("running", flush=True)
        time.sleep(3600)
"""


def test_a_runner_killed_without_a_word_fails_when_its_lease_runs_out(
    client: Client, server: ServerProcess, uid: str
) -> None:
    runner = subprocess.Popen(
        [sys.executable, "-c", RUNNER, server.address, uid],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert runner.stdout is not None
        assert runner.stdout.readline().strip() == "running"  # bounded by pytest's timeout
        running = client.map_imports.get(uid)
        assert running.status == mi.MAP_IMPORT_STATUS_IN_PROGRESS
        events = client.map_imports.watch([uid], until_settled=True, timeout=BOUND)
        first = next(events)  # the watch runs: its first event is the job's state, running
        runner.kill()  # SIGKILL: no __exit__, no last word
        runner.wait(BOUND)
        seen = [(str(e.status), e.job.error.message) for e in [first, *events] if e.job is not None]
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait(BOUND)
        if runner.stdout is not None:
            runner.stdout.close()
    # The watcher saw the job go from running to failed, with the reason.
    assert seen[0] == (RUNNING, "")
    assert seen[-1] == (ERROR, "lease expired: no report from the runner within 2s")
    failed = client.map_imports.get(uid)
    assert failed.meta_data.progress == 30


def test_a_job_settled_by_someone_else_is_not_overwritten(client: Client, uid: str) -> None:
    cancel = mi.MapImport(import_request_id=uid, status=mi.MAP_IMPORT_STATUS_CANCEL)
    with pytest.raises(JobStatusError) as caught, client.map_imports.run(uid):
        client.map_imports.update(cancel)  # the requester cancels while the runner works
    assert caught.value.reason == "TRANSITION_NOT_ALLOWED"  # the done write is refused
    assert client.map_imports.get(uid).status == mi.MAP_IMPORT_STATUS_CANCEL

    other = uid + "-2"
    with pytest.raises(ZeroDivisionError) as crashed, client.map_imports.run(other):
        client.map_imports.update(mi.MapImport(import_request_id=other, status=cancel.status))
        _ = 1 / 0
    # The runner's own exception goes on, with a note that the failed write was refused.
    assert any("could not be marked failed" in note for note in crashed.value.__notes__)
    assert client.map_imports.get(other).status == mi.MAP_IMPORT_STATUS_CANCEL


def test_an_adopted_running_job_takes_the_runs_lease(client: Client, uid: str) -> None:
    client.map_imports.create(mi.MapImport(import_request_id=uid))
    running = client.map_imports.update(
        mi.MapImport(import_request_id=uid, status=mi.MAP_IMPORT_STATUS_IN_PROGRESS)
    )
    assert not running.HasField("lease_expire_time")
    with client.map_imports.run(uid, lease=timedelta(seconds=60)) as job:
        assert job.latest.HasField("lease_expire_time")
        assert job.latest.status == mi.MAP_IMPORT_STATUS_IN_PROGRESS
        job.set_result(package())


# --- a dataset's import run --------------------------------------------------------------


def steps(dataset: ds.Dataset) -> list[tuple[str, str, list[str]]]:
    """Each step of the latest run: (name, status, the details of its entries)."""
    step_names = ds.DatasetImportStepName.Name
    return [
        (step_names(s.name), ds.DatasetImportStatus.Name(s.status), [e.detail for e in s.entries])
        for s in dataset.latest_run.steps
    ]


def test_a_dataset_run_logs_coalesced_and_ends_every_step(client: Client, uid: str) -> None:
    dataset = client.datasets.create(ds.Dataset(name=uid))
    with client.datasets.run(dataset.dataset_id, progress_interval=NEVER) as run:
        run.log("fetching rows")
        run.log("downloaded 1,000 rows")  # waits for the next write
        run.log("12 rows skipped", ds.DATASET_LOG_LEVEL_WARNING)
        run.end_step()  # carries the two waiting entries
        run.log("importing 988 features")
    done = client.datasets.get(dataset.dataset_id)
    assert done.latest_run.status == ds.DATASET_IMPORT_STATUS_SUCCESS
    assert steps(done) == [
        (
            "DATASET_IMPORT_STEP_NAME_FETCH",
            "DATASET_IMPORT_STATUS_SUCCESS",
            ["fetching rows", "downloaded 1,000 rows", "12 rows skipped"],
        ),
        # The last entry waited, and went with the final write.
        (
            "DATASET_IMPORT_STEP_NAME_IMPORT",
            "DATASET_IMPORT_STATUS_SUCCESS",
            ["importing 988 features"],
        ),
    ]
    writes = client.datasets.history(dataset.dataset_id).changes
    # create, start, the first entry, the end of fetch, the end of import
    assert len(writes) == 5


async def test_async_dataset_run_fails_the_running_step(aclient: AsyncClient, uid: str) -> None:
    dataset = await aclient.datasets.create(ds.Dataset(name=uid))
    with pytest.raises(KeyError):
        async with aclient.datasets.run(dataset.dataset_id, progress_interval=NEVER) as run:
            await run.log("fetching rows")
            await run.end_step()
            await run.log("importing")
            await run.log("store_id 1204 twice")
            raise KeyError("duplicate key store_id=1204")
    failed = await aclient.datasets.get(dataset.dataset_id)
    assert failed.latest_run.status == ds.DATASET_IMPORT_STATUS_FAILED
    assert steps(failed)[-1] == (
        "DATASET_IMPORT_STEP_NAME_IMPORT",
        "DATASET_IMPORT_STATUS_FAILED",
        ["importing", "store_id 1204 twice", "'duplicate key store_id=1204'"],
    )
    assert failed.latest_run.steps[-1].entries[-1].level == ds.DATASET_LOG_LEVEL_ERROR


def test_a_dataset_run_in_progress_is_adopted_and_leased(client: Client, uid: str) -> None:
    dataset = client.datasets.create(ds.Dataset(name=uid))
    started = client.datasets.start_import(dataset.dataset_id)
    with client.datasets.run(dataset.dataset_id, lease=timedelta(seconds=60)) as run:
        assert run.latest.latest_run.id == started.latest_run.id
        assert run.latest.HasField("lease_expire_time")
    assert client.datasets.get(dataset.dataset_id).latest_run.status == (
        ds.DATASET_IMPORT_STATUS_SUCCESS
    )

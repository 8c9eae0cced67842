"""The client library and the CLI, against a real server (tests/serverproc.py)."""

from __future__ import annotations

import ast
import json
import os
import random
import socket
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.protobuf.message import Message

from jobstatus import AsyncClient, Client
from jobstatus.errors import DeadlineExceeded, JobStatusError
from jobstatus.v1 import catalog_import_pb2 as cat
from jobstatus.v1 import dataset_pb2 as ds
from jobstatus.v1 import delivery_pb2 as dl
from jobstatus.v1 import map_import_pb2 as mi
from jobstatus.watch import Backoff, EventType, Retry, WatchResumer
from tests.conftest import Databases
from tests.restkit import keyed_server
from tests.serverproc import ROOT, ServerProcess, free_port

Code = grpc.StatusCode


# --- create, get, update, list: one table for the three kinds with a generic update -------


@dataclass(frozen=True)
class Case:
    accessor: str
    new: Callable[[str], Message]  # a resource to create, from a unique id
    created: frozenset[int]  # the statuses a new job may be in
    change: Callable[[str], Message]  # the update of the job with this id
    update_mask: tuple[str, ...]
    changed: int  # the status after the update

    def __str__(self) -> str:
        return self.accessor


CASES = [
    Case(
        "map_imports",
        lambda uid: mi.MapImport(import_request_id=uid, meta_data=mi.MapImportMetaData(job_id=7)),
        frozenset({mi.MAP_IMPORT_STATUS_START}),
        lambda job_id: mi.MapImport(
            import_request_id=job_id,
            status=mi.MAP_IMPORT_STATUS_IN_PROGRESS,
            meta_data=mi.MapImportMetaData(progress=40),
        ),
        ("status", "meta_data.progress"),
        mi.MAP_IMPORT_STATUS_IN_PROGRESS,
    ),
    Case(
        "deliveries",
        lambda uid: dl.PreparedDelivery(
            catalog_id=uid,
            artifacts=[
                dl.Artifact(item_key="map.gpkg", url="https://example.test/m.gpkg", size=10)
            ],
        ),
        frozenset({dl.PREPARED_DELIVERY_STATUS_START}),
        lambda job_id: dl.PreparedDelivery(
            catalog_id=job_id, status=dl.PREPARED_DELIVERY_STATUS_IN_PROGRESS, progress=30
        ),
        ("status", "progress"),
        dl.PREPARED_DELIVERY_STATUS_IN_PROGRESS,
    ),
    Case(
        "catalog_imports",
        lambda uid: cat.CatalogImport(type=cat.CATALOG_IMPORT_TYPE_SYNONYMS),
        # BLOCKED while another SYNONYMS import of this module is IN_PROGRESS
        frozenset({cat.CATALOG_IMPORT_STATUS_WAITING, cat.CATALOG_IMPORT_STATUS_BLOCKED}),
        lambda job_id: cat.CatalogImport(id=job_id, status=cat.CATALOG_IMPORT_STATUS_IN_PROGRESS),
        ("status",),
        cat.CATALOG_IMPORT_STATUS_IN_PROGRESS,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_create_get_update_list(client: Client, uid: str, case: Case) -> None:
    jobs = getattr(client, case.accessor)
    kind = jobs.kind
    created = jobs.create(case.new(uid))
    job_id = kind.job_id(created)
    assert kind.status_of(created) in case.created
    assert created.revision > 0
    assert jobs.get(job_id) == created

    updated = jobs.update(
        case.change(job_id), update_mask=case.update_mask, expected_revision=created.revision
    )
    assert kind.status_of(updated) == case.changed
    assert updated.revision > created.revision
    assert jobs.get(job_id) == updated

    assert job_id in {kind.job_id(j) for j in jobs.list(statuses=[case.changed])}
    assert job_id not in {kind.job_id(j) for j in jobs.list(statuses=list(case.created))}


@pytest.mark.parametrize("case", CASES, ids=str)
async def test_async_create_get_update_list(aclient: AsyncClient, uid: str, case: Case) -> None:
    jobs = getattr(aclient, case.accessor)
    kind = jobs.kind
    created = await jobs.create(case.new(uid))
    job_id = kind.job_id(created)
    assert kind.status_of(created) in case.created
    assert await jobs.get(job_id) == created

    updated = await jobs.update(
        case.change(job_id), update_mask=case.update_mask, expected_revision=created.revision
    )
    assert kind.status_of(updated) == case.changed
    assert await jobs.get(job_id) == updated

    listed = [kind.job_id(j) async for j in jobs.list(statuses=[case.changed])]
    assert job_id in listed


def test_update_without_fields_changes_every_populated_field(client: Client, uid: str) -> None:
    client.map_imports.create(mi.MapImport(import_request_id=uid))
    updated = client.map_imports.update(
        mi.MapImport(
            import_request_id=uid,
            status=mi.MAP_IMPORT_STATUS_PENDING,
            meta_data=mi.MapImportMetaData(file_name="area.gpkg"),
        )
    )
    assert updated.status == mi.MAP_IMPORT_STATUS_PENDING
    assert updated.meta_data.file_name == "area.gpkg"


# --- datasets: create, start a run, report steps ----------------------------------------


def test_dataset_import_run(client: Client, uid: str) -> None:
    created = client.datasets.create(ds.Dataset(name=uid))
    dataset_id = created.dataset_id
    assert not created.HasField("latest_run")
    assert client.datasets.get(dataset_id) == created

    started = client.datasets.start_import(dataset_id, request_id=f"start-{uid}")
    again = client.datasets.start_import(dataset_id, request_id=f"start-{uid}")
    assert again == started  # idempotent by request_id
    run = started.latest_run
    assert run.status == ds.DATASET_IMPORT_STATUS_IN_PROGRESS
    assert [s.name for s in run.steps] == [ds.DATASET_IMPORT_STEP_NAME_FETCH]

    entry = ds.DatasetLogEntry(detail="fetched 10 rows", level=ds.DATASET_LOG_LEVEL_INFO)
    fetched = client.datasets.update_import(
        dataset_id,
        ds.DATASET_IMPORT_STEP_NAME_FETCH,
        step_status=ds.DATASET_IMPORT_STATUS_SUCCESS,
        entries=[entry],
        run_id=run.id,
        expected_revision=started.revision,
    )
    assert [s.name for s in fetched.latest_run.steps] == [
        ds.DATASET_IMPORT_STEP_NAME_FETCH,
        ds.DATASET_IMPORT_STEP_NAME_IMPORT,
    ]
    assert fetched.latest_run.steps[0].entries[0].detail == "fetched 10 rows"
    done = client.datasets.update_import(
        dataset_id, ds.DATASET_IMPORT_STEP_NAME_IMPORT, step_status=ds.DATASET_IMPORT_STATUS_SUCCESS
    )
    assert done.latest_run.status == ds.DATASET_IMPORT_STATUS_SUCCESS
    assert client.datasets.kind.is_settled(done)
    assert client.datasets.get(dataset_id) == done
    success = [ds.DATASET_IMPORT_STATUS_SUCCESS]
    assert dataset_id in {d.dataset_id for d in client.datasets.list(statuses=success)}


async def test_async_dataset_import_run(aclient: AsyncClient, uid: str) -> None:
    created = await aclient.datasets.create(ds.Dataset(name=uid))
    dataset_id = created.dataset_id
    started = await aclient.datasets.start_import(dataset_id)
    assert started.latest_run.status == ds.DATASET_IMPORT_STATUS_IN_PROGRESS
    failed = await aclient.datasets.update_import(
        dataset_id,
        ds.DATASET_IMPORT_STEP_NAME_FETCH,
        step_status=ds.DATASET_IMPORT_STATUS_FAILED,
        entries=[ds.DatasetLogEntry(detail="no such file", level=ds.DATASET_LOG_LEVEL_ERROR)],
    )
    assert failed.latest_run.status == ds.DATASET_IMPORT_STATUS_FAILED
    assert await aclient.datasets.get(dataset_id) == failed
    statuses = [ds.DATASET_IMPORT_STATUS_FAILED]
    assert dataset_id in [d.dataset_id async for d in aclient.datasets.list(statuses=statuses)]


# --- idempotent create ------------------------------------------------------------------


def test_create_is_idempotent_by_request_id(client: Client, uid: str) -> None:
    first = client.deliveries.create(dl.PreparedDelivery(catalog_id=uid), request_id=f"r-{uid}")
    again = client.deliveries.create(dl.PreparedDelivery(catalog_id=uid), request_id=f"r-{uid}")
    assert again == first
    with pytest.raises(JobStatusError) as caught:  # a fresh request_id: a second create
        client.deliveries.create(dl.PreparedDelivery(catalog_id=uid))
    assert caught.value.code == Code.ALREADY_EXISTS


# --- paging -----------------------------------------------------------------------------


def test_list_pages_through_every_page(client: Client, uid: str) -> None:
    ours = [f"{uid}-{n}" for n in range(5)]
    for job_id in ours:
        client.map_imports.create(
            mi.MapImport(import_request_id=job_id, status=mi.MAP_IMPORT_STATUS_DRAFT)
        )
    draft = [mi.MAP_IMPORT_STATUS_DRAFT]
    everything = [
        j.import_request_id for j in client.map_imports.list(statuses=draft, page_size=1000)
    ]
    paged = [j.import_request_id for j in client.map_imports.list(statuses=draft, page_size=2)]
    assert paged == everything  # the same jobs in the same order, none twice
    assert [j for j in paged if j in ours] == ours  # oldest first

    first = client.map_imports.list_page(statuses=draft, page_size=2)
    assert len(first.jobs) == 2
    assert first.next_page_token
    last = client.map_imports.list_page(statuses=draft, page_size=1000)
    assert last.next_page_token == ""


async def test_async_list_pages_through_every_page(aclient: AsyncClient, uid: str) -> None:
    ours = [f"{uid}-{n}" for n in range(3)]
    for job_id in ours:
        await aclient.deliveries.create(
            dl.PreparedDelivery(catalog_id=job_id, status=dl.PREPARED_DELIVERY_STATUS_PENDING)
        )
    pending = [dl.PREPARED_DELIVERY_STATUS_PENDING]
    paged = [j.catalog_id async for j in aclient.deliveries.list(statuses=pending, page_size=1)]
    assert [j for j in paged if j in ours] == ours
    assert len(paged) == len(set(paged))
    page = await aclient.deliveries.list_page(statuses=pending, page_size=1)
    assert len(page.jobs) == 1
    assert page.next_page_token


# --- errors -----------------------------------------------------------------------------


def test_not_found_carries_the_documented_reason(client: Client, uid: str) -> None:
    with pytest.raises(JobStatusError) as caught:
        client.map_imports.get(uid)
    error = caught.value
    assert error.code == Code.NOT_FOUND
    assert error.reason == "MAP.notFound"
    assert error.metadata == {"import_request_id": uid}
    assert uid in error.message
    assert str(error).startswith("NOT_FOUND MAP.notFound: ")
    assert error.details  # the raw google.rpc.Status details

    with pytest.raises(JobStatusError) as delivery:
        client.deliveries.get(uid)
    assert delivery.value.reason == "DELIVERY.notFound"


def test_invalid_argument_carries_field_violations(client: Client, uid: str) -> None:
    too_far = mi.MapImport(import_request_id=uid, meta_data=mi.MapImportMetaData(progress=101))
    with pytest.raises(JobStatusError) as caught:
        client.map_imports.create(too_far)
    error = caught.value
    assert error.code == Code.INVALID_ARGUMENT
    assert [field for field, _ in error.field_violations] == ["map_import.meta_data.progress"]
    assert "100" in error.field_violations[0][1]
    with pytest.raises(JobStatusError):  # bad input changed nothing
        client.map_imports.get(uid)


def test_forbidden_transition_lists_the_allowed_statuses(client: Client, uid: str) -> None:
    client.map_imports.create(mi.MapImport(import_request_id=uid))
    archived = mi.MapImport(import_request_id=uid, status=mi.MAP_IMPORT_STATUS_ARCHIVED)
    with pytest.raises(JobStatusError) as caught:
        client.map_imports.update(archived, update_mask=["status"])
    error = caught.value
    assert error.code == Code.FAILED_PRECONDITION
    assert error.reason == "TRANSITION_NOT_ALLOWED"
    assert error.metadata["allowed"].split(",") == [
        "Cancel",
        "Done",
        "Error",
        "InProgress",
        "Pending",
    ]
    assert error.precondition_violations[0][0] == "TRANSITION_NOT_ALLOWED"


def test_stale_expected_revision_is_aborted(client: Client, uid: str) -> None:
    created = client.map_imports.create(mi.MapImport(import_request_id=uid))
    pending = mi.MapImport(import_request_id=uid, status=mi.MAP_IMPORT_STATUS_PENDING)
    client.map_imports.update(pending, update_mask=["status"], expected_revision=created.revision)
    with pytest.raises(JobStatusError) as caught:
        client.map_imports.update(
            pending, update_mask=["status"], expected_revision=created.revision
        )
    assert caught.value.code == Code.ABORTED
    assert caught.value.reason == "REVISION_MISMATCH"


async def test_async_errors(aclient: AsyncClient, uid: str) -> None:
    with pytest.raises(JobStatusError) as missing:
        await aclient.map_imports.get(uid)
    assert missing.value.code == Code.NOT_FOUND
    assert missing.value.reason == "MAP.notFound"

    created = await aclient.catalog_imports.create(cat.CatalogImport(type=_ADS))
    done = cat.CatalogImport(id=created.id, status=cat.CATALOG_IMPORT_STATUS_SUCCESS)
    with pytest.raises(JobStatusError) as forbidden:  # from WAITING or BLOCKED
        await aclient.catalog_imports.update(done, update_mask=["status"])
    assert forbidden.value.code == Code.FAILED_PRECONDITION
    assert forbidden.value.reason == "TRANSITION_NOT_ALLOWED"
    assert "IN_PROGRESS" in forbidden.value.metadata["allowed"].split(",")


_ADS = cat.CATALOG_IMPORT_TYPE_ADS


@pytest.fixture
def silent_address() -> Iterator[str]:
    """A port that accepts connections and never answers: every call runs into its deadline."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield f"127.0.0.1:{listener.getsockname()[1]}"


def test_timeout_raises_deadline_exceeded(silent_address: str) -> None:
    with Client(silent_address) as silent:
        with pytest.raises(TimeoutError) as caught:
            silent.map_imports.get("x", timeout=0.2)
        assert isinstance(caught.value, DeadlineExceeded)
        assert isinstance(caught.value, JobStatusError)
        assert caught.value.code == Code.DEADLINE_EXCEEDED
        with pytest.raises(DeadlineExceeded):  # wait() bounds the whole wait by its timeout
            silent.map_imports.wait("x", timeout=0.2)


async def test_async_timeout_raises_deadline_exceeded(silent_address: str) -> None:
    async with AsyncClient(silent_address) as silent:
        with pytest.raises(TimeoutError):
            await silent.deliveries.get("x", timeout=0.2)
        with pytest.raises(DeadlineExceeded):
            await silent.deliveries.wait("x", timeout=0.2)


def test_unreachable_server_is_unavailable() -> None:
    with Client(f"127.0.0.1:{free_port()}") as nowhere, pytest.raises(JobStatusError) as caught:
        nowhere.map_imports.get("x", timeout=10)
    assert caught.value.code == Code.UNAVAILABLE


def test_api_key_and_metadata_are_sent_on_every_call(databases: Databases) -> None:
    with keyed_server(databases.new("keyed"), {"rw": ("acme", ["read", "write"])}) as keyed:
        with Client(keyed.server.address, api_key=keyed.keys["rw"]) as client:
            created = client.map_imports.create(mi.MapImport(import_request_id="a"))
            assert client.map_imports.get("a") == created
            assert [job.import_request_id for job in client.map_imports.list()] == ["a"]
            # Per-call metadata travels beside the key: a second, different key in it
            # makes the server refuse the call.
            with pytest.raises(JobStatusError) as two_keys:
                client.map_imports.get("a", metadata=[("x-api-key", "jsk_other_secret")])
            assert two_keys.value.code == Code.UNAUTHENTICATED
            assert two_keys.value.reason == "API_KEY_INVALID"
        with Client(keyed.server.address) as keyless:
            with pytest.raises(JobStatusError) as missing:
                keyless.map_imports.get("a")
            assert missing.value.reason == "API_KEY_MISSING"


# --- the watch resume state machine, alone ----------------------------------------------

STATE, SYNCED, CHANGE, HEARTBEAT = (
    EventType.STATE.value,
    EventType.SYNCED.value,
    EventType.CHANGE.value,
    EventType.HEARTBEAT.value,
)


def test_resumer_resumes_from_the_last_revision_after_sync() -> None:
    resumer = WatchResumer()
    assert resumer.start_revision == 0
    assert resumer.receive(STATE, 3) is EventType.STATE
    assert resumer.receive(STATE, 4) is EventType.STATE
    assert resumer.receive(SYNCED, 5) is EventType.SYNCED
    assert resumer.start_revision == 5
    assert resumer.receive(CHANGE, 6) is EventType.CHANGE
    assert resumer.receive(HEARTBEAT, 9) is EventType.HEARTBEAT
    assert resumer.start_revision == 9  # heartbeats move the resume point too
    retry = resumer.fail(Code.UNAVAILABLE)
    assert retry is not None and not retry.resync
    assert resumer.start_revision == 9


def test_resumer_restarts_from_zero_when_the_initial_state_broke() -> None:
    resumer = WatchResumer()
    resumer.receive(STATE, 3)
    retry = resumer.fail(Code.INTERNAL)
    assert retry is not None and retry.resync and retry.delay <= 0.05
    assert resumer.start_revision == 0
    # broken again before any STATE: nothing to take back, so no RESYNC
    retry = resumer.fail(Code.UNAVAILABLE)
    assert retry is not None and not retry.resync
    assert resumer.receive(STATE, 3) is EventType.STATE
    assert resumer.receive(SYNCED, 7) is EventType.SYNCED
    assert resumer.start_revision == 7


def test_resumer_drops_repeats_and_stale_events() -> None:
    resumer = WatchResumer()
    resumer.receive(SYNCED, 5)
    assert resumer.receive(CHANGE, 6) is EventType.CHANGE
    assert resumer.receive(CHANGE, 6) is None
    assert resumer.receive(CHANGE, 4) is None
    assert resumer.receive(HEARTBEAT, 5) is None
    assert resumer.receive(HEARTBEAT, 6) is EventType.HEARTBEAT
    assert resumer.receive(SYNCED, 6) is None
    assert resumer.receive(99, 7) is None  # an event type this client does not know
    assert resumer.receive(CHANGE, 8) is EventType.CHANGE


def test_resumer_resyncs_on_out_of_range() -> None:
    resumer = WatchResumer(start_revision=10)
    assert resumer.start_revision == 10
    assert resumer.receive(CHANGE, 10) is None  # not after the start revision
    assert resumer.receive(CHANGE, 12) is EventType.CHANGE
    assert resumer.fail(Code.OUT_OF_RANGE) == Retry(delay=0.0, resync=True)
    assert resumer.start_revision == 0
    assert resumer.receive(STATE, 12) is EventType.STATE  # state after a RESYNC: never dropped
    assert resumer.receive(STATE, 2) is EventType.STATE
    assert resumer.receive(SYNCED, 20) is EventType.SYNCED
    assert resumer.receive(CHANGE, 12) is None
    assert resumer.receive(CHANGE, 21) is EventType.CHANGE
    assert resumer.start_revision == 21


def test_resumer_gives_up_on_final_codes() -> None:
    assert WatchResumer().fail(Code.OUT_OF_RANGE) is None  # even the state is out of range
    for code in (
        Code.INVALID_ARGUMENT,
        Code.NOT_FOUND,
        Code.PERMISSION_DENIED,
        Code.UNAUTHENTICATED,
        Code.UNIMPLEMENTED,
        Code.DEADLINE_EXCEEDED,
        Code.FAILED_PRECONDITION,
    ):
        assert WatchResumer(start_revision=3).fail(code) is None, code
    for code in (
        Code.UNAVAILABLE,
        Code.RESOURCE_EXHAUSTED,
        Code.INTERNAL,
        Code.UNKNOWN,
        Code.CANCELLED,
    ):
        assert WatchResumer(start_revision=3).fail(code) is not None, code
    with pytest.raises(ValueError):
        WatchResumer(start_revision=-1)


def test_resumer_backs_off_with_jitter_and_honours_retry_info() -> None:
    resumer = WatchResumer(start_revision=1, backoff=Backoff(rng=random.Random(7)))
    delays = []
    for _ in range(10):
        retry = resumer.fail(Code.UNAVAILABLE)
        assert retry is not None
        delays.append(retry.delay)
    ceilings = [min(5.0, 0.05 * 2**n) for n in range(10)]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    resumer.receive(HEARTBEAT, 2)  # progress resets the backoff
    retry = resumer.fail(Code.UNAVAILABLE)
    assert retry is not None and retry.delay <= 0.05
    retry = resumer.fail(Code.RESOURCE_EXHAUSTED, retry_delay=2.0)
    assert retry is not None and retry.delay >= 2.0


# --- the CLI ----------------------------------------------------------------------------


def jobstatus(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "JOBSTATUS_GRPC_ADDR": server.address, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "jobstatus.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *parts: str) -> None:
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    for part in parts:
        assert part in lines[0]


def test_cli_get(client: Client, server: ServerProcess, uid: str) -> None:
    client.map_imports.create(mi.MapImport(import_request_id=uid))
    client.map_imports.update(
        mi.MapImport(
            import_request_id=uid,
            status=mi.MAP_IMPORT_STATUS_IN_PROGRESS,
            meta_data=mi.MapImportMetaData(progress=55),
        ),
        update_mask=["status", "meta_data.progress"],
    )
    result = jobstatus(server, "get", "map-import", uid)
    assert result.returncode == 0, result.stderr
    assert uid in result.stdout
    assert "InProgress" in result.stdout  # the documented spelling
    assert "55" in result.stdout

    as_json = jobstatus(server, "get", "map-import", uid, "--json")
    assert as_json.returncode == 0, as_json.stderr
    job = json.loads(as_json.stdout)
    assert job["importRequestId"] == uid
    assert job["status"] == "MAP_IMPORT_STATUS_IN_PROGRESS"
    assert job["metaData"]["progress"] == 55


def test_cli_console_script(client: Client, server: ServerProcess, uid: str) -> None:
    created = client.catalog_imports.create(cat.CatalogImport(type=cat.CATALOG_IMPORT_TYPE_PANELS))
    script = Path(sys.executable).with_name("jobstatus")
    result = subprocess.run(
        [str(script), "get", "catalog-import", created.id, "--addr", server.address],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert created.id in result.stdout
    assert "PANELS" in result.stdout


def test_cli_list(client: Client, server: ServerProcess, uid: str) -> None:
    created = client.datasets.create(ds.Dataset(name=uid))
    client.datasets.start_import(created.dataset_id)
    result = jobstatus(server, "list", "dataset", "--status", "in_progress", "--page-size", "2")
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if created.dataset_id in line)
    assert "in_progress" in row
    assert uid in row  # the name column

    as_json = jobstatus(server, "list", "dataset", "--status", "IN_PROGRESS", "--json")
    assert as_json.returncode == 0, as_json.stderr
    listed = json.loads(as_json.stdout)
    assert created.dataset_id in [d["datasetId"] for d in listed]

    none = jobstatus(server, "list", "dataset", "--status", "failed", "--json")
    assert created.dataset_id not in none.stdout


def test_cli_not_found(server: ServerProcess, uid: str) -> None:
    result = jobstatus(server, "get", "map-import", uid)
    assert result.returncode == 3
    assert_one_line_error(result, "NOT_FOUND", "MAP.notFound", uid)


def test_cli_usage_errors(server: ServerProcess) -> None:
    bad_status = jobstatus(server, "list", "delivery", "--status", "finished")
    assert bad_status.returncode == 2
    assert_one_line_error(bad_status, "finished", "inProgress")
    bad_kind = jobstatus(server, "get", "pizza", "1")
    assert bad_kind.returncode == 2
    assert "Traceback" not in bad_kind.stderr
    assert jobstatus(server, "--help").returncode == 0


def test_cli_server_errors(server: ServerProcess) -> None:
    invalid = jobstatus(server, "list", "map-import", "--page-size", "-1")
    assert invalid.returncode == 1
    assert_one_line_error(invalid, "INVALID_ARGUMENT", "page_size")
    nowhere = jobstatus(server, "get", "delivery", "x", "--addr", f"127.0.0.1:{free_port()}")
    assert nowhere.returncode == 1
    assert_one_line_error(nowhere, "UNAVAILABLE")


# --- the client installs and imports without the server ---------------------------------

SERVER_ONLY = {"jobstatus_server", "sqlmodel", "sqlalchemy", "alembic", "psycopg", "aiosqlite"}


def test_client_imports_nothing_of_the_server() -> None:
    for path in sorted((ROOT / "client" / "jobstatus").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in SERVER_ONLY, f"{path}: imports {name}"

    project = tomllib.loads((ROOT / "client" / "pyproject.toml").read_text())["project"]
    required = {dep.split(">")[0].split("[")[0].strip() for dep in project["dependencies"]}
    assert required == {"grpcio", "grpcio-status", "googleapis-common-protos", "protobuf", "rich"}


def test_client_imports_with_the_server_packages_blocked() -> None:
    block = "; ".join(f"sys.modules[{name!r}] = None" for name in sorted(SERVER_ONLY))
    code = (
        f"import sys; {block}; "
        "from jobstatus import Client, AsyncClient; import jobstatus.cli, jobstatus.runner"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr

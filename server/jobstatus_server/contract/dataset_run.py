"""A dataset's import run: its lifecycle, as the kind table's two operations of datasets.

A run starts with the step fetch in progress (StartDatasetImport, idempotent by its
request id; refused while a run is in progress). UpdateDatasetImport appends log
entries to the running step and may end it: a failed step fails the run, a successful
fetch starts the step import, a successful import succeeds the run; a run whose lease
ran out fails by the server's hand (`fail_run`). kinds.py's DATASET
row names these functions; the use cases apply them like any other change of a job.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from google.protobuf.message import Message

from jobstatus.spelling import spell
from jobstatus.v1 import dataset_pb2
from jobstatus_server.contract import lease
from jobstatus_server.contract.errors import FailedPrecondition, invalid

DS = dataset_pb2.DatasetImportStatus
STEP = dataset_pb2.DatasetImportStepName


def start_run(
    request: dataset_pb2.StartDatasetImportRequest, current: dataset_pb2.Dataset, now: datetime
) -> dataset_pb2.Dataset:
    """The dataset with a new run, its fetch in progress (`current` for a repeated start)."""
    run = current.latest_run
    if request.request_id and current.start_request_id == request.request_id:
        return current
    if current.HasField("latest_run") and run.status == DS.DATASET_IMPORT_STATUS_IN_PROGRESS:
        raise FailedPrecondition(
            f"dataset {request.dataset_id!r} has an import in progress (run {run.id})",
            reason="IMPORT_IN_PROGRESS",
            metadata={"run_id": run.id},
            subject="latest_run",
        )
    new = dataset_pb2.Dataset()
    new.CopyFrom(current)
    new.latest_run.Clear()
    new.latest_run.id = str(uuid.uuid4())
    new.latest_run.status = DS.DATASET_IMPORT_STATUS_IN_PROGRESS
    step = new.latest_run.steps.add(
        name=STEP.DATASET_IMPORT_STEP_NAME_FETCH,
        status=DS.DATASET_IMPORT_STATUS_IN_PROGRESS,
    )
    step.start.FromDatetime(now)
    new.start_request_id = request.request_id
    return new


def check_step_update(request: dataset_pb2.UpdateDatasetImportRequest) -> None:
    """What an update of the running step must hold, whatever the dataset."""
    if request.step_status == DS.DATASET_IMPORT_STATUS_IN_PROGRESS:
        raise invalid("step_status", "a step ends in success or failed")
    if not request.entries and not request.step_status and lease.requested(request) is None:
        raise invalid(
            "entries", "give log entries, a step_status, a lease_duration, or some of them"
        )


def update_step(
    request: dataset_pb2.UpdateDatasetImportRequest, current: dataset_pb2.Dataset, now: datetime
) -> dataset_pb2.Dataset:
    """The dataset with the running step's new entries, and its end if it ended."""
    if not current.HasField("latest_run"):
        raise FailedPrecondition(
            f"dataset {request.dataset_id!r} has no import run",
            reason="NO_IMPORT_RUN",
            subject="latest_run",
        )
    new = dataset_pb2.Dataset()
    new.CopyFrom(current)
    run = new.latest_run
    if request.run_id and request.run_id != run.id:
        raise FailedPrecondition(
            f"run {request.run_id!r} is not the latest run ({run.id})",
            reason="RUN_NOT_LATEST",
            metadata={"latest_run_id": run.id},
            subject="run_id",
        )
    step = run.steps[-1]
    if step.name != request.step or step.status != DS.DATASET_IMPORT_STATUS_IN_PROGRESS:
        running = (
            _step_name(step.name) if step.status == DS.DATASET_IMPORT_STATUS_IN_PROGRESS else "none"
        )
        raise FailedPrecondition(
            f"step {_step_name(request.step)} is not running; the running step is {running}",
            reason="STEP_NOT_RUNNING",
            metadata={"running_step": running},
            subject="step",
        )
    for entry in request.entries:
        added = step.entries.add()
        added.CopyFrom(entry)
        if not added.HasField("created_at"):
            added.created_at.FromDatetime(now)
    if request.step_status:
        step.status = request.step_status
        step.end.FromDatetime(now)
        if request.step_status == DS.DATASET_IMPORT_STATUS_FAILED:
            run.status = DS.DATASET_IMPORT_STATUS_FAILED
        elif step.name == STEP.DATASET_IMPORT_STEP_NAME_IMPORT:
            run.status = DS.DATASET_IMPORT_STATUS_SUCCESS
        else:
            following = run.steps.add(
                name=STEP.DATASET_IMPORT_STEP_NAME_IMPORT,
                status=DS.DATASET_IMPORT_STATUS_IN_PROGRESS,
            )
            following.start.FromDatetime(now)
    return new


def fail_run(job: Message, reason: str, now: datetime) -> None:
    """Fail the run in progress by the server's hand (its lease ran out): the running
    step fails at `now` with `reason` as its last log entry, and the run with it."""
    assert isinstance(job, dataset_pb2.Dataset)
    run = job.latest_run
    step = run.steps[-1]
    if step.status == DS.DATASET_IMPORT_STATUS_IN_PROGRESS:
        step.entries.add(
            detail=reason, level=dataset_pb2.DATASET_LOG_LEVEL_ERROR
        ).created_at.FromDatetime(now)
        step.status = DS.DATASET_IMPORT_STATUS_FAILED
        step.end.FromDatetime(now)
    run.status = DS.DATASET_IMPORT_STATUS_FAILED


def _step_name(step: int) -> str:
    return spell(dataset_pb2.DatasetImportStepName.DESCRIPTOR, step)

"""The four job kinds as data: service, RPC names, field names, statuses, lifecycle.

The clients are generic over this table: what differs between kinds is a row
here, never a copy of the client's logic. A row also builds every request of
its kind's RPCs with each of their options (shared by the sync and the async
client), names its statuses (Status: an int that prints as its name), and says
what a job runner moves a job through (Lifecycle, used by runner.py).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from typing import Any, Generic, TypeAlias, TypeVar, cast

from google.protobuf import duration_pb2, field_mask_pb2, message_factory
from google.protobuf.descriptor import EnumDescriptor, ServiceDescriptor
from google.protobuf.message import Message

from jobstatus.spelling import by_spelling, spelling
from jobstatus.v1 import (
    catalog_import_pb2,
    catalog_import_pb2_grpc,
    dataset_pb2,
    dataset_pb2_grpc,
    delivery_pb2,
    delivery_pb2_grpc,
    errors_pb2,
    map_import_pb2,
    map_import_pb2_grpc,
)

M = TypeVar("M", bound=Message)
Seconds: TypeAlias = float | timedelta
"""A duration: seconds as a number, or a timedelta."""


def seconds(value: Seconds) -> float:
    """A duration in seconds."""
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def duration(value: Seconds) -> duration_pb2.Duration:
    """`value` as a google.protobuf.Duration."""
    message = duration_pb2.Duration()
    message.FromNanoseconds(round(seconds(value) * 1e9))
    return message


class Status(enum.IntEnum):
    """A job's status: equal to its number (`mi.MAP_IMPORT_STATUS_DONE`), printed as its
    name (`MAP_IMPORT_STATUS_DONE`), the spelling every request accepts. `spelling` is
    the kind's documented spelling (`Done`), as the REST bodies and the CLI show it."""

    def __str__(self) -> str:
        return self.name

    @property
    def spelling(self) -> str:
        descriptor: EnumDescriptor = getattr(type(self), "descriptor")  # noqa: B009
        return spelling(descriptor.values_by_number[self.value])


def status_type(descriptor: EnumDescriptor) -> type[Status]:
    """The Status enum of a proto enum: a member per value, named as the proto names it."""
    members = [(v.name, v.number) for v in descriptor.values]
    statuses = cast(type[Status], cast(Any, Status)(descriptor.name, members))
    statuses.descriptor = descriptor  # type: ignore[attr-defined]
    return statuses


@dataclass(frozen=True)
class Lifecycle:
    """The statuses a job runner (runner.py) moves a job of the kind through, and the
    fields of its writes: `progress_path` ("" when the kind has no percentage) and what a
    failed job carries to say why (`failure`, the fields of the failed write)."""

    running: int
    done: int
    failed: int
    progress_path: str
    failure: Callable[[str], dict[str, Any]]


@dataclass(frozen=True)
class Kind(Generic[M]):
    """One job kind. `name` is the job's field in requests, responses and watch events."""

    name: str
    message: type[M]
    service: ServiceDescriptor
    stub: Callable[[Any], Any]  # the generated stub class; it takes a sync or an aio channel
    id_field: str
    status_enum: EnumDescriptor
    settled: frozenset[int]
    create_rpc: str
    get_rpc: str
    list_rpc: str
    list_field: str
    watch_rpc: str
    watch_ids_field: str
    history_rpc: str
    update_rpc: str = ""  # "" when the kind has no generic update (datasets)
    status_path: tuple[str, ...] = ("status",)
    lifecycle: Lifecycle | None = None  # None: no job runner (datasets run by their own RPCs)

    def job_id(self, job: Message) -> str:
        return str(getattr(job, self.id_field))

    def status_of(self, job: Message) -> int:
        """The job's status number (a dataset's is its latest run's; 0 before the first run)."""
        value: Any = job
        for name in self.status_path:
            value = getattr(value, name)
        return int(value)

    def is_settled(self, job: Message) -> bool:
        return self.status_of(job) in self.settled

    @cached_property
    def statuses(self) -> type[Status]:
        """The kind's Status enum: `MAP_IMPORT.statuses["MAP_IMPORT_STATUS_DONE"]`."""
        return status_type(self.status_enum)

    def status(self, job: Message) -> Status:
        """The job's status as a Status (prints as its name; a dataset without a run:
        DATASET_IMPORT_STATUS_UNSPECIFIED)."""
        return self.statuses(self.status_of(job))

    def new_job(self, job_id: str, **fields: Any) -> M:
        """A message of the kind naming the job `job_id` ("" leaves the id to the server)."""
        ids = {self.id_field: job_id} if job_id else {}
        return self.message(**ids, **fields)

    def request(self, rpc: str, **fields: Any) -> Message:
        """A request message of the RPC `rpc` with the given fields."""
        return self._request_types[rpc](**fields)

    @cached_property
    def _request_types(self) -> dict[str, type[Message]]:
        return {
            method.name: message_factory.GetMessageClass(method.input_type)
            for method in self.service.methods
        }

    def job_of(self, response: Message) -> M:
        return cast(M, getattr(response, self.name))

    def page_of(self, response: Message) -> tuple[list[M], str]:
        jobs = cast(Sequence[M], getattr(response, self.list_field))
        return list(jobs), str(getattr(response, "next_page_token"))  # noqa: B009

    def event_job_of(self, response: Message) -> M | None:
        """The job a watch response carries (STATE and CHANGE events), or None."""
        return self.job_of(response) if response.HasField(self.name) else None

    # --- the requests, shared by the sync and the async client ----------------
    # Each takes the RPC's options under the RPC's own names; a lease_duration of None
    # leaves the field unset (the job's lease as it is).

    def create_request(
        self, resource: M, request_id: str, lease_duration: Seconds | None = None
    ) -> Message:
        return self.request(
            self.create_rpc,
            request_id=request_id,
            **{self.name: resource},
            **_lease(lease_duration),
        )

    def update_request(
        self,
        resource: M,
        update_mask: Sequence[str],
        expected_revision: int,
        lease_duration: Seconds | None = None,
    ) -> Message:
        return self.request(
            self.update_rpc,
            update_mask=field_mask_pb2.FieldMask(paths=list(update_mask)),
            expected_revision=expected_revision,
            **{self.name: resource},
            **_lease(lease_duration),
        )

    def get_request(self, job_id: str, min_revision: int = 0, **options: Any) -> Message:
        """`options`: the kind's own Get options (a delivery's `source`)."""
        return self.request(
            self.get_rpc, min_revision=min_revision, **{self.id_field: job_id}, **options
        )

    def list_request(self, statuses: Sequence[int], page_size: int, page_token: str) -> Message:
        return self.request(
            self.list_rpc, statuses=list(statuses), page_size=page_size, page_token=page_token
        )

    def history_request(self, job_id: str, page_size: int, page_token: str) -> Message:
        return self.request(
            self.history_rpc,
            page_size=page_size,
            page_token=page_token,
            **{self.id_field: job_id},
        )

    def watch_request(
        self,
        ids: Sequence[str],
        start_revision: int,
        until_settled: bool,
        heartbeat_interval: Seconds | None,
    ) -> Message:
        interval = {} if heartbeat_interval is None else {"heartbeat_interval": heartbeat_interval}
        return self.request(
            self.watch_rpc,
            start_revision=start_revision,
            until_settled=until_settled,
            **{self.watch_ids_field: list(ids)},
            **{name: duration(value) for name, value in interval.items()},
        )


def _lease(lease_duration: Seconds | None) -> dict[str, duration_pb2.Duration]:
    return {} if lease_duration is None else {"lease_duration": duration(lease_duration)}


def _statuses(enum: EnumDescriptor, spelled: str) -> frozenset[int]:
    numbers = by_spelling(enum)
    return frozenset(numbers[s] for s in spelled.split())


MAP_IMPORT = Kind(
    name="map_import",
    message=map_import_pb2.MapImport,
    service=map_import_pb2.DESCRIPTOR.services_by_name["MapImportService"],
    stub=map_import_pb2_grpc.MapImportServiceStub,
    id_field="import_request_id",
    status_enum=map_import_pb2.MapImportStatus.DESCRIPTOR,
    settled=_statuses(
        map_import_pb2.MapImportStatus.DESCRIPTOR, "Cancel Error Done Expired Archived"
    ),
    create_rpc="CreateMapImport",
    update_rpc="UpdateMapImport",
    get_rpc="GetMapImportStatus",
    list_rpc="ListMapImports",
    list_field="map_imports",
    watch_rpc="WatchMapImportStatus",
    watch_ids_field="import_request_ids",
    history_rpc="GetMapImportHistory",
    lifecycle=Lifecycle(
        running=map_import_pb2.MAP_IMPORT_STATUS_IN_PROGRESS,
        done=map_import_pb2.MAP_IMPORT_STATUS_DONE,
        failed=map_import_pb2.MAP_IMPORT_STATUS_ERROR,
        progress_path="meta_data.progress",
        # The error code left unspecified: the server fills in MAP.unknown.
        failure=lambda message: {"error": errors_pb2.Error(message=message)},
    ),
)

DELIVERY = Kind(
    name="prepared_delivery",
    message=delivery_pb2.PreparedDelivery,
    service=delivery_pb2.DESCRIPTOR.services_by_name["DeliveryService"],
    stub=delivery_pb2_grpc.DeliveryServiceStub,
    id_field="catalog_id",
    status_enum=delivery_pb2.PreparedDeliveryStatus.DESCRIPTOR,
    settled=_statuses(delivery_pb2.PreparedDeliveryStatus.DESCRIPTOR, "done error delete"),
    create_rpc="CreatePreparedDelivery",
    update_rpc="UpdatePreparedDelivery",
    get_rpc="GetPreparedDeliveryStatus",
    list_rpc="ListPreparedDeliveries",
    list_field="prepared_deliveries",
    watch_rpc="WatchPreparedDeliveryStatus",
    watch_ids_field="catalog_ids",
    history_rpc="GetPreparedDeliveryHistory",
    lifecycle=Lifecycle(
        running=delivery_pb2.PREPARED_DELIVERY_STATUS_IN_PROGRESS,
        done=delivery_pb2.PREPARED_DELIVERY_STATUS_DONE,
        failed=delivery_pb2.PREPARED_DELIVERY_STATUS_ERROR,
        progress_path="progress",
        failure=lambda message: {
            "error": errors_pb2.Error(
                error_code=errors_pb2.ERROR_CODE_DELIVERY_UNKNOWN, message=message
            )
        },
    ),
)

DATASET = Kind(
    name="dataset",
    message=dataset_pb2.Dataset,
    service=dataset_pb2.DESCRIPTOR.services_by_name["DatasetService"],
    stub=dataset_pb2_grpc.DatasetServiceStub,
    id_field="dataset_id",
    status_enum=dataset_pb2.DatasetImportStatus.DESCRIPTOR,
    settled=_statuses(dataset_pb2.DatasetImportStatus.DESCRIPTOR, "success failed"),
    create_rpc="CreateDataset",
    get_rpc="GetDatasetStatus",
    list_rpc="ListDatasets",
    list_field="datasets",
    watch_rpc="WatchDatasetStatus",
    watch_ids_field="dataset_ids",
    history_rpc="GetDatasetHistory",
    status_path=("latest_run", "status"),
)

CATALOG_IMPORT = Kind(
    name="catalog_import",
    message=catalog_import_pb2.CatalogImport,
    service=catalog_import_pb2.DESCRIPTOR.services_by_name["CatalogImportService"],
    stub=catalog_import_pb2_grpc.CatalogImportServiceStub,
    id_field="id",
    status_enum=catalog_import_pb2.CatalogImportStatus.DESCRIPTOR,
    settled=_statuses(catalog_import_pb2.CatalogImportStatus.DESCRIPTOR, "SUCCESS FAILURE ABORTED"),
    create_rpc="CreateImport",
    update_rpc="UpdateImport",
    get_rpc="GetImportStatus",
    list_rpc="ListImports",
    list_field="catalog_imports",
    watch_rpc="WatchImportStatus",
    watch_ids_field="ids",
    history_rpc="GetImportHistory",
    lifecycle=Lifecycle(
        running=catalog_import_pb2.CATALOG_IMPORT_STATUS_IN_PROGRESS,
        done=catalog_import_pb2.CATALOG_IMPORT_STATUS_SUCCESS,
        failed=catalog_import_pb2.CATALOG_IMPORT_STATUS_FAILURE,
        progress_path="",
        failure=lambda message: {"message": message},
    ),
)


def start_import_request(
    dataset_id: str, request_id: str, lease_duration: Seconds | None = None
) -> dataset_pb2.StartDatasetImportRequest:
    return dataset_pb2.StartDatasetImportRequest(
        dataset_id=dataset_id, request_id=request_id, **_lease(lease_duration)
    )


def update_import_request(
    dataset_id: str,
    step: dataset_pb2.DatasetImportStepName.ValueType,
    step_status: dataset_pb2.DatasetImportStatus.ValueType,
    entries: Sequence[dataset_pb2.DatasetLogEntry],
    run_id: str,
    expected_revision: int,
    lease_duration: Seconds | None = None,
) -> dataset_pb2.UpdateDatasetImportRequest:
    return dataset_pb2.UpdateDatasetImportRequest(
        dataset_id=dataset_id,
        step=step,
        step_status=step_status,
        entries=entries,
        run_id=run_id,
        expected_revision=expected_revision,
        **_lease(lease_duration),
    )


KINDS: dict[str, Kind[Any]] = {
    kind.name: kind for kind in (MAP_IMPORT, DELIVERY, DATASET, CATALOG_IMPORT)
}

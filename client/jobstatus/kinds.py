"""The four job kinds as data: service, RPC names, field names, statuses.

The clients are generic over this table: what differs between kinds is a row
here, never a copy of the client's logic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Generic, TypeVar, cast

from google.protobuf import duration_pb2, field_mask_pb2, message_factory
from google.protobuf.descriptor import EnumDescriptor, ServiceDescriptor
from google.protobuf.message import Message

from jobstatus.spelling import by_spelling
from jobstatus.v1 import (
    catalog_import_pb2,
    catalog_import_pb2_grpc,
    dataset_pb2,
    dataset_pb2_grpc,
    delivery_pb2,
    delivery_pb2_grpc,
    map_import_pb2,
    map_import_pb2_grpc,
)

M = TypeVar("M", bound=Message)


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

    def create_request(self, resource: M, request_id: str) -> Message:
        return self.request(self.create_rpc, request_id=request_id, **{self.name: resource})

    def update_request(self, resource: M, fields: Sequence[str], expected_revision: int) -> Message:
        return self.request(
            self.update_rpc,
            update_mask=field_mask_pb2.FieldMask(paths=list(fields)),
            expected_revision=expected_revision,
            **{self.name: resource},
        )

    def get_request(self, job_id: str) -> Message:
        return self.request(self.get_rpc, **{self.id_field: job_id})

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
        heartbeat_interval: float | None,
    ) -> Message:
        request = self.request(
            self.watch_rpc,
            start_revision=start_revision,
            until_settled=until_settled,
            **{self.watch_ids_field: list(ids)},
        )
        if heartbeat_interval is not None:
            interval = duration_pb2.Duration()
            interval.FromNanoseconds(round(heartbeat_interval * 1e9))
            getattr(request, "heartbeat_interval").CopyFrom(interval)  # noqa: B009
        return request


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
)

KINDS: dict[str, Kind[Any]] = {
    kind.name: kind for kind in (MAP_IMPORT, DELIVERY, DATASET, CATALOG_IMPORT)
}

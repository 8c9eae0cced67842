"""The gRPC servicers: translate a request, call the core, translate back."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from jobstatus.v1 import (
    catalog_import_pb2 as cat,
)
from jobstatus.v1 import (
    catalog_import_pb2_grpc as cat_grpc,
)
from jobstatus.v1 import (
    dataset_pb2 as ds,
)
from jobstatus.v1 import (
    dataset_pb2_grpc as ds_grpc,
)
from jobstatus.v1 import (
    delivery_pb2 as dl,
)
from jobstatus.v1 import (
    delivery_pb2_grpc as dl_grpc,
)
from jobstatus.v1 import (
    map_import_pb2 as mi,
)
from jobstatus.v1 import (
    map_import_pb2_grpc as mi_grpc,
)
from jobstatus_server.access.auth import CALLER
from jobstatus_server.contract.kinds import CATALOG_IMPORT, DATASET, DELIVERY, MAP_IMPORT, Kind
from jobstatus_server.contract.validation import compile_all
from jobstatus_server.contract.wire import (
    wire,
)
from jobstatus_server.grpc_api.interceptor import Rpc
from jobstatus_server.state.view import View, response_bytes
from jobstatus_server.state.watch import Hub
from jobstatus_server.usecases.history import Page, history
from jobstatus_server.usecases.jobs import Core

Context = grpc.aio.ServicerContext[Any, Any]

SERVICES = (
    (mi, "MapImportService"),
    (dl, "DeliveryService"),
    (ds, "DatasetService"),
    (cat, "CatalogImportService"),
)
SERVICE_NAMES = tuple(
    module.DESCRIPTOR.services_by_name[name].full_name for module, name in SERVICES
)


def tenant_of(context: Context) -> str:
    """The caller's tenant, as the method's wrapper authenticated it (interceptor.py)."""
    return CALLER.get().tenant


R = TypeVar("R", bound=Message)


def _history_response(page: Page[Any], response: type[R], change: type[Message], field: str) -> R:
    """A History RPC's response: each change typed as the kind's Change message."""
    return response(
        changes=[
            change(revision=c.revision, time=c.timestamp(), **{field: c.job}) for c in page.changes
        ],
        next_page_token=page.next_page_token,
        oldest_revision=page.oldest_revision,
        truncated=page.truncated,
    )


async def _watch(
    hub: Hub,
    kind: Kind[Any],
    ids: Sequence[str],
    request: Any,
    context: Context,
) -> None:
    # Headers go out at once: a client waiting for the stream must not hang.
    await context.send_initial_metadata(())
    heartbeat = (
        request.heartbeat_interval.ToTimedelta().total_seconds()
        if request.HasField("heartbeat_interval")
        else hub.settings.heartbeat
    )
    await hub.watch(
        kind,
        tenant_of(context),
        ids,
        request.start_revision,
        request.until_settled,
        heartbeat,
        context.write,
        wire,  # ready-serialized bytes, built once per change for every stream
    )


class MapImportService(mi_grpc.MapImportServiceServicer):
    def __init__(self, core: Core, hub: Hub, view: View) -> None:
        self.core = core
        self.hub = hub
        self.view = view

    async def CreateMapImport(
        self, request: mi.CreateMapImportRequest, context: Context
    ) -> mi.CreateMapImportResponse:
        job = await self.core.create(
            MAP_IMPORT, tenant_of(context), request.request_id, request.map_import
        )
        return mi.CreateMapImportResponse(map_import=job)

    async def UpdateMapImport(  # type: ignore[override]  # bytes pass through (interceptor.py)
        self, request: mi.UpdateMapImportRequest, context: Context
    ) -> bytes:
        return await self.core.update_response(  # the stored bytes pass through
            MAP_IMPORT,
            tenant_of(context),
            request.map_import,
            request.update_mask,
            request.expected_revision,
        )

    async def GetMapImportStatus(  # type: ignore[override]  # bytes pass through (interceptor.py)
        self, request: mi.GetMapImportStatusRequest, context: Context
    ) -> bytes:
        entry = await self.view.require(
            MAP_IMPORT,
            tenant_of(context),
            request.import_request_id,
            request.min_revision,
            context.time_remaining(),
        )
        return response_bytes(entry)  # the response, serialized once per change

    async def ListMapImports(
        self, request: mi.ListMapImportsRequest, context: Context
    ) -> mi.ListMapImportsResponse:
        jobs, token = await self.core.list(
            MAP_IMPORT, tenant_of(context), request.page_size, request.page_token, request.statuses
        )
        return mi.ListMapImportsResponse(map_imports=jobs, next_page_token=token)

    async def GetMapImportHistory(
        self, request: mi.GetMapImportHistoryRequest, context: Context
    ) -> mi.GetMapImportHistoryResponse:
        return _history_response(
            await history(
                self.core.store,
                MAP_IMPORT,
                tenant_of(context),
                request.import_request_id,
                request.page_size,
                request.page_token,
            ),
            mi.GetMapImportHistoryResponse,
            mi.MapImportChange,
            "map_import",
        )

    async def WatchMapImportStatus(  # type: ignore[override]
        self, request: mi.WatchMapImportStatusRequest, context: Context
    ) -> None:
        await _watch(self.hub, MAP_IMPORT, request.import_request_ids, request, context)


class DeliveryService(dl_grpc.DeliveryServiceServicer):
    def __init__(self, core: Core, hub: Hub, view: View) -> None:
        self.core = core
        self.hub = hub
        self.view = view

    async def CreatePreparedDelivery(
        self, request: dl.CreatePreparedDeliveryRequest, context: Context
    ) -> dl.CreatePreparedDeliveryResponse:
        job = await self.core.create(
            DELIVERY, tenant_of(context), request.request_id, request.prepared_delivery
        )
        return dl.CreatePreparedDeliveryResponse(prepared_delivery=job)

    async def UpdatePreparedDelivery(  # type: ignore[override]  # bytes pass through (interceptor.py)
        self, request: dl.UpdatePreparedDeliveryRequest, context: Context
    ) -> bytes:
        return await self.core.update_response(  # the stored bytes pass through
            DELIVERY,
            tenant_of(context),
            request.prepared_delivery,
            request.update_mask,
            request.expected_revision,
        )

    async def GetPreparedDeliveryStatus(  # type: ignore[override]  # bytes pass through (interceptor.py)
        self, request: dl.GetPreparedDeliveryStatusRequest, context: Context
    ) -> bytes:
        entry = await self.view.require(
            DELIVERY,
            tenant_of(context),
            request.catalog_id,
            request.min_revision,
            context.time_remaining(),
        )
        return response_bytes(entry)  # the response, serialized once per change

    async def ListPreparedDeliveries(
        self, request: dl.ListPreparedDeliveriesRequest, context: Context
    ) -> dl.ListPreparedDeliveriesResponse:
        jobs, token = await self.core.list(
            DELIVERY, tenant_of(context), request.page_size, request.page_token, request.statuses
        )
        return dl.ListPreparedDeliveriesResponse(prepared_deliveries=jobs, next_page_token=token)

    async def GetPreparedDeliveryHistory(
        self, request: dl.GetPreparedDeliveryHistoryRequest, context: Context
    ) -> dl.GetPreparedDeliveryHistoryResponse:
        return _history_response(
            await history(
                self.core.store,
                DELIVERY,
                tenant_of(context),
                request.catalog_id,
                request.page_size,
                request.page_token,
            ),
            dl.GetPreparedDeliveryHistoryResponse,
            dl.PreparedDeliveryChange,
            "prepared_delivery",
        )

    async def WatchPreparedDeliveryStatus(  # type: ignore[override]
        self, request: dl.WatchPreparedDeliveryStatusRequest, context: Context
    ) -> None:
        await _watch(self.hub, DELIVERY, request.catalog_ids, request, context)


class DatasetService(ds_grpc.DatasetServiceServicer):
    def __init__(self, core: Core, hub: Hub, view: View) -> None:
        self.core = core
        self.hub = hub
        self.view = view

    async def CreateDataset(
        self, request: ds.CreateDatasetRequest, context: Context
    ) -> ds.CreateDatasetResponse:
        job = await self.core.create(
            DATASET, tenant_of(context), request.request_id, request.dataset
        )
        return ds.CreateDatasetResponse(dataset=job)

    async def StartDatasetImport(
        self, request: ds.StartDatasetImportRequest, context: Context
    ) -> ds.StartDatasetImportResponse:
        job = await self.core.start_dataset_import(
            tenant_of(context), request.dataset_id, request.request_id
        )
        return ds.StartDatasetImportResponse(dataset=job)

    async def UpdateDatasetImport(
        self, request: ds.UpdateDatasetImportRequest, context: Context
    ) -> ds.UpdateDatasetImportResponse:
        job = await self.core.update_dataset_import(tenant_of(context), request)
        return ds.UpdateDatasetImportResponse(dataset=job)

    async def GetDatasetStatus(  # type: ignore[override]  # bytes pass through (interceptor.py)
        self, request: ds.GetDatasetStatusRequest, context: Context
    ) -> bytes:
        entry = await self.view.require(
            DATASET,
            tenant_of(context),
            request.dataset_id,
            request.min_revision,
            context.time_remaining(),
        )
        return response_bytes(entry)  # the response, serialized once per change

    async def ListDatasets(
        self, request: ds.ListDatasetsRequest, context: Context
    ) -> ds.ListDatasetsResponse:
        jobs, token = await self.core.list(
            DATASET, tenant_of(context), request.page_size, request.page_token, request.statuses
        )
        return ds.ListDatasetsResponse(datasets=jobs, next_page_token=token)

    async def GetDatasetHistory(
        self, request: ds.GetDatasetHistoryRequest, context: Context
    ) -> ds.GetDatasetHistoryResponse:
        return _history_response(
            await history(
                self.core.store,
                DATASET,
                tenant_of(context),
                request.dataset_id,
                request.page_size,
                request.page_token,
            ),
            ds.GetDatasetHistoryResponse,
            ds.DatasetChange,
            "dataset",
        )

    async def WatchDatasetStatus(  # type: ignore[override]
        self, request: ds.WatchDatasetStatusRequest, context: Context
    ) -> None:
        await _watch(self.hub, DATASET, request.dataset_ids, request, context)


class CatalogImportService(cat_grpc.CatalogImportServiceServicer):
    def __init__(self, core: Core, hub: Hub, view: View) -> None:
        self.core = core
        self.hub = hub
        self.view = view

    async def CreateImport(
        self, request: cat.CreateImportRequest, context: Context
    ) -> cat.CreateImportResponse:
        job = await self.core.create(
            CATALOG_IMPORT, tenant_of(context), request.request_id, request.catalog_import
        )
        return cat.CreateImportResponse(catalog_import=job)

    async def UpdateImport(  # type: ignore[override]  # bytes pass through (interceptor.py)
        self, request: cat.UpdateImportRequest, context: Context
    ) -> bytes:
        return await self.core.update_response(  # the stored bytes pass through
            CATALOG_IMPORT,
            tenant_of(context),
            request.catalog_import,
            request.update_mask,
            request.expected_revision,
        )

    async def GetImportStatus(  # type: ignore[override]  # bytes pass through (interceptor.py)
        self, request: cat.GetImportStatusRequest, context: Context
    ) -> bytes:
        entry = await self.view.require(
            CATALOG_IMPORT,
            tenant_of(context),
            request.id,
            request.min_revision,
            context.time_remaining(),
        )
        return response_bytes(entry)  # the response, serialized once per change

    async def ListImports(
        self, request: cat.ListImportsRequest, context: Context
    ) -> cat.ListImportsResponse:
        jobs, token = await self.core.list(
            CATALOG_IMPORT,
            tenant_of(context),
            request.page_size,
            request.page_token,
            request.statuses,
        )
        return cat.ListImportsResponse(catalog_imports=jobs, next_page_token=token)

    async def GetImportHistory(
        self, request: cat.GetImportHistoryRequest, context: Context
    ) -> cat.GetImportHistoryResponse:
        return _history_response(
            await history(
                self.core.store,
                CATALOG_IMPORT,
                tenant_of(context),
                request.id,
                request.page_size,
                request.page_token,
            ),
            cat.GetImportHistoryResponse,
            cat.CatalogImportChange,
            "catalog_import",
        )

    async def WatchImportStatus(  # type: ignore[override]
        self, request: cat.WatchImportStatusRequest, context: Context
    ) -> None:
        await _watch(self.hub, CATALOG_IMPORT, request.ids, request, context)


def add_services(server: grpc.aio.Server, core: Core, hub: Hub, view: View, rpc: Rpc) -> None:
    """Register every jobstatus service, each method wrapped once (interceptor.py)."""
    compile_all(  # the validation rules of every request type, compiled now, not per call
        method.input_type
        for module, name in SERVICES
        for method in module.DESCRIPTOR.services_by_name[name].methods
    )
    for module, servicer in (
        (mi, MapImportService(core, hub, view)),
        (dl, DeliveryService(core, hub, view)),
        (ds, DatasetService(core, hub, view)),
        (cat, CatalogImportService(core, hub, view)),
    ):
        name = type(servicer).__name__
        rpc.add_service(server, servicer, module.DESCRIPTOR.services_by_name[name])

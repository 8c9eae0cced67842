"""The gRPC servicers: one generic servicer, made into each kind's service from the kind
table (contract/kinds.py). A method translates the request, calls the use case, and
translates back.

`servicer_class(kind)` names the generic methods with the kind's RPC names, on a
subclass of the generated `*Servicer` base class; everything that differs between
kinds (request fields, response types, a kind's own writes) is resolved when the
servicer is built, so a call does what a hand-written method would.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Coroutine
from operator import attrgetter
from typing import Any, cast

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message

from jobstatus_server.access.auth import CALLER
from jobstatus_server.contract import lease
from jobstatus_server.contract.kinds import KINDS, Kind, Operation
from jobstatus_server.contract.validation import compile_all
from jobstatus_server.contract.wire import encode_event, job_response
from jobstatus_server.grpc_api.interceptor import Rpc
from jobstatus_server.state.renderings import Renderings, WatchForm
from jobstatus_server.state.view import View
from jobstatus_server.state.watch import Hub
from jobstatus_server.usecases.history import history
from jobstatus_server.usecases.jobs import Core

Context = grpc.aio.ServicerContext[Any, Any]
Method = Callable[[Any, Any, Context], Coroutine[Any, Any, Any]]

# (the generated module, the service's name) of each kind, in the kind table's order.
SERVICES = tuple(
    (importlib.import_module(kind.message.__module__), kind.api.service.name)
    for kind in KINDS.values()
)
SERVICE_NAMES = tuple(kind.api.service.full_name for kind in KINDS.values())


def tenant_of(context: Context) -> str:
    """The caller's tenant, as the method's wrapper authenticated it (interceptor.py)."""
    return CALLER.get().tenant


def _response_type(kind: Kind[Any], rpc: str) -> type[Message]:
    method = kind.api.service.methods_by_name[rpc]
    response: type[Message] = message_factory.GetMessageClass(method.output_type)
    return response


class KindService:
    """The RPCs of one kind's service. Create, Update, Get and a kind's own writes answer
    with the job as field 1 of their response (wire.job_response): bytes, passed
    through by the interceptor."""

    def __init__(self, kind: Kind[Any], core: Core, hub: Hub, view: View) -> None:
        self.kind = kind
        self.core = core
        self.hub = hub
        self.view = view
        api = kind.api
        self.job_of = attrgetter(kind.name)  # the job in a Create or Update request
        self.id_of = attrgetter(kind.id_field)  # the job's id in a Get or History request
        self.ids_of = attrgetter(api.watch_ids_field)
        self.list_response = _response_type(kind, api.list_rpc)
        self.page_of = attrgetter(api.list_field)
        self.history_response = _response_type(kind, api.history_rpc)
        # The history's change message: the type of the response's `changes`.
        changes = self.history_response.DESCRIPTOR.fields_by_name["changes"]
        self.change_type = message_factory.GetMessageClass(cast(Descriptor, changes.message_type))

    async def create(self, request: Any, context: Context) -> bytes:
        job = await self.core.create(
            self.kind,
            tenant_of(context),
            request.request_id,
            self.job_of(request),
            lease.requested(request),
        )
        return job_response(job.SerializeToString())

    async def update(self, request: Any, context: Context) -> bytes:
        return await self.core.update_response(  # the stored bytes pass through
            self.kind,
            tenant_of(context),
            self.job_of(request),
            request.update_mask,
            request.expected_revision,
            lease.requested(request),
        )

    async def get(self, request: Any, context: Context) -> bytes:
        entry = await self.view.require(
            self.kind,
            tenant_of(context),
            self.id_of(request),
            request.min_revision,
            context.time_remaining(),
        )
        return entry.renderings.response_bytes()  # serialized once per change

    async def list(self, request: Any, context: Context) -> Message:
        jobs, token = await self.core.list(
            self.kind,
            tenant_of(context),
            request.page_size,
            request.page_token,
            request.statuses,
        )
        response = self.list_response(next_page_token=token)
        self.page_of(response).extend(jobs)
        return response

    async def history(self, request: Any, context: Context) -> Message:
        page = await history(
            self.core.store,
            self.kind,
            tenant_of(context),
            self.id_of(request),
            request.page_size,
            request.page_token,
        )
        change, job_field = self.change_type, self.kind.name
        return self.history_response(
            changes=[
                change(revision=c.revision, time=c.timestamp(), **{job_field: c.job})
                for c in page.changes
            ],
            next_page_token=page.next_page_token,
            oldest_revision=page.oldest_revision,
            truncated=page.truncated,
        )

    async def watch(self, request: Any, context: Context) -> None:
        # Headers go out at once: a client waiting for the stream must not hang.
        await context.send_initial_metadata(())
        heartbeat = (
            request.heartbeat_interval.ToTimedelta().total_seconds()
            if request.HasField("heartbeat_interval")
            else self.hub.settings.heartbeat
        )
        await self.hub.watch(
            self.kind,
            tenant_of(context),
            self.ids_of(request),
            request.start_revision,
            request.until_settled,
            heartbeat,
            context.write,
            GRPC_EVENTS,
        )


class GrpcFraming:
    """gRPC watch events as ready-serialized Watch*Response bytes: the four kinds'
    responses share one layout (type = 1, revision = 2, job = 3), so an event is built
    around the job's stored bytes without parsing them (wire.encode_event)."""

    form = WatchForm.GRPC

    def job_event(self, event_type: int, revision: int, renderings: Renderings) -> bytes:
        return encode_event(event_type, revision, renderings.data)

    def marker(self, event_type: int, revision: int) -> bytes:
        return encode_event(event_type, revision, None)


GRPC_EVENTS = GrpcFraming()


def _operation(operation: Operation) -> Method:
    """The method of a kind's own write (kinds.Operation), answered as the job."""

    async def method(self: KindService, request: Any, context: Context) -> bytes:
        job = await self.core.apply(self.kind, operation, tenant_of(context), request)
        return job_response(job.SerializeToString())

    return method


def servicer_class(kind: Kind[Any]) -> type[KindService]:
    """The kind's servicer: the generated base class, its RPCs the generic methods."""
    api = kind.api
    methods: dict[str, Method] = {
        api.create_rpc: KindService.create,
        api.get_rpc: KindService.get,
        api.list_rpc: KindService.list,
        api.history_rpc: KindService.history,
        api.watch_rpc: KindService.watch,
    }
    if api.update_rpc:
        methods[api.update_rpc] = KindService.update
    for rpc, operation in kind.operations.items():
        methods[rpc] = _operation(operation)
    served = {method.name for method in api.service.methods}
    if set(methods) != served:
        raise ValueError(f"{api.service.full_name}: serves {sorted(served)}, not {sorted(methods)}")
    for rpc in (api.create_rpc, api.update_rpc, api.get_rpc, *kind.operations):
        if rpc:  # answered as wire.job_response: the job, as the response's only field, 1
            fields = _response_type(kind, rpc).DESCRIPTOR.fields
            if [(f.number, f.message_type) for f in fields] != [(1, kind.descriptor)]:
                raise ValueError(f"{rpc}'s response is not the job alone, as field 1")
    return type(api.service.name, (KindService, kind.servicer), methods)


SERVICERS = {kind.name: servicer_class(kind) for kind in KINDS.values()}


def add_services(server: grpc.aio.Server, core: Core, hub: Hub, view: View, rpc: Rpc) -> None:
    """Register every jobstatus service, each method wrapped once (interceptor.py)."""
    compile_all(  # the validation rules of every request type, compiled now, not per call
        method.input_type for kind in KINDS.values() for method in kind.api.service.methods
    )
    for kind in KINDS.values():
        servicer = SERVICERS[kind.name](kind, core, hub, view)
        rpc.add_service(server, servicer, kind.api.service)

"""JobCountService: CountJobs translates the request, counts (usecases/counts.py) and
translates back. Registered through the same method wrapper as every service
(interceptor.py: authentication, the READ scope, validation, errors)."""

from __future__ import annotations

from typing import Any

import grpc

from jobstatus.v1 import counts_pb2, counts_pb2_grpc
from jobstatus_server.access.auth import CALLER
from jobstatus_server.grpc_api.interceptor import Rpc
from jobstatus_server.state.store import Store
from jobstatus_server.state.view import View
from jobstatus_server.usecases.counts import count_jobs, kinds_named

Context = grpc.aio.ServicerContext[Any, Any]
SERVICE = counts_pb2.DESCRIPTOR.services_by_name["JobCountService"]
SERVICE_NAME = SERVICE.full_name


class JobCountService(counts_pb2_grpc.JobCountServiceServicer):
    def __init__(self, store: Store, view: View) -> None:
        self.store = store
        self.view = view

    async def CountJobs(
        self, request: counts_pb2.CountJobsRequest, context: Context
    ) -> counts_pb2.CountJobsResponse:
        counts = await count_jobs(
            self.store,
            self.view,
            CALLER.get().tenant,
            kinds_named(list(request.kinds), "kinds"),
            request.min_revision,
            context.time_remaining(),
        )
        return counts_pb2.CountJobsResponse(
            revision=counts.revision,
            counts=[
                counts_pb2.JobCount(kind=c.kind.name, status=c.status_name, count=c.count)
                for c in counts.counts
            ],
        )


def add_count_service(server: grpc.aio.Server, store: Store, view: View, rpc: Rpc) -> None:
    """Register JobCountService, its method wrapped as every other (interceptor.py)."""
    rpc.add_service(server, JobCountService(store, view), SERVICE)

"""AsyncClient: the same API as Client (sync.py), on grpc.aio.

    async with AsyncClient("127.0.0.1:50051") as client:
        job = await client.map_imports.get("m-1", min_revision=7, timeout=5)
        async for event in client.map_imports.watch(["m-1"], until_settled=True):
            print(event.status)

Each method is its sync twin's, awaited (list and watch are async iterators,
run an async context manager); the requests, the watch's resume logic and the
runner's plan are the same code (kinds.py, watch.py, runner.py), so only the
awaiting is written here. The docstrings are the sync methods'.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing
from types import TracebackType
from typing import Any, Generic, TypeVar, Unpack

import grpc
from google.protobuf.message import Message

from jobstatus import kinds, sync
from jobstatus.errors import JobStatusError
from jobstatus.kinds import CATALOG_IMPORT, DATASET, DELIVERY, MAP_IMPORT, Kind, Seconds, Status
from jobstatus.options import (
    CallOptions,
    Deadline,
    Session,
    channel_options,
    key_or_default,
    new_request_id,
    target_or_default,
)
from jobstatus.results import History, Page, history_of, joined
from jobstatus.runbase import RunOptions
from jobstatus.runner import AsyncDatasetRun, AsyncJobRun
from jobstatus.runplan import DEFAULT_INTERVAL
from jobstatus.v1 import dataset_pb2, delivery_pb2
from jobstatus.watch import EventType, WatchCalls, WatchEvent, track

M = TypeVar("M", bound=Message)


class AsyncBaseKindClient(Generic[M]):
    __doc__ = sync.BaseKindClient.__doc__

    def __init__(self, kind: Kind[M], channel: grpc.aio.Channel, session: Session) -> None:
        self.kind = kind
        self._stub = kind.stub(channel)
        self._session = session

    @property
    def statuses(self) -> type[Status]:
        return self.kind.statuses

    def status(self, job: M) -> Status:
        return self.kind.status(job)

    async def _call(self, rpc: str, request: Message, options: CallOptions) -> Any:
        try:
            return await getattr(self._stub, rpc)(request, **self._session.call_kwargs(options))
        except grpc.RpcError as error:
            raise JobStatusError.from_rpc_error(error) from error

    async def create(
        self,
        resource: M,
        *,
        request_id: str | None = None,
        lease_duration: Seconds | None = None,
        **options: Unpack[CallOptions],
    ) -> M:
        request = self.kind.create_request(resource, request_id or new_request_id(), lease_duration)
        return self.kind.job_of(await self._call(self.kind.create_rpc, request, options))

    async def get(self, job_id: str, *, min_revision: int = 0, **options: Unpack[CallOptions]) -> M:
        request = self.kind.get_request(job_id, min_revision)
        return self.kind.job_of(await self._call(self.kind.get_rpc, request, options))

    async def list_page(
        self,
        *,
        statuses: Sequence[int] = (),
        page_size: int = 0,
        page_token: str = "",
        **options: Unpack[CallOptions],
    ) -> Page[M]:
        request = self.kind.list_request(statuses, page_size, page_token)
        jobs, token = self.kind.page_of(await self._call(self.kind.list_rpc, request, options))
        return Page(jobs, token)

    async def list(
        self, *, statuses: Sequence[int] = (), page_size: int = 0, **options: Unpack[CallOptions]
    ) -> AsyncIterator[M]:
        token = ""
        while True:
            page = await self.list_page(
                statuses=statuses, page_size=page_size, page_token=token, **options
            )
            for job in page.jobs:
                yield job
            token = page.next_page_token
            if not token:
                return

    async def history_page(
        self,
        job_id: str,
        *,
        page_size: int = 0,
        page_token: str = "",
        **options: Unpack[CallOptions],
    ) -> History[M]:
        request = self.kind.history_request(job_id, page_size, page_token)
        return history_of(self.kind, await self._call(self.kind.history_rpc, request, options))

    async def history(
        self, job_id: str, *, page_size: int = 0, **options: Unpack[CallOptions]
    ) -> History[M]:
        pages = [await self.history_page(job_id, page_size=page_size, **options)]
        while token := pages[-1].next_page_token:
            pages.append(
                await self.history_page(job_id, page_size=page_size, page_token=token, **options)
            )
        return joined(pages)

    async def watch(
        self,
        ids: Sequence[str] = (),
        *,
        start_revision: int = 0,
        until_settled: bool = False,
        heartbeat_interval: Seconds | None = None,
        **options: Unpack[CallOptions],
    ) -> AsyncGenerator[WatchEvent[M], None]:
        calls = WatchCalls(
            self.kind,
            self._session,
            ids,
            start_revision,
            until_settled,
            heartbeat_interval,
            options,
        )
        method = getattr(self._stub, self.kind.watch_rpc)
        while True:
            call = method(calls.request(), **calls.call_kwargs())
            try:
                async for response in call:
                    if (event := calls.event(response)) is not None:
                        yield event
                return
            except grpc.RpcError as rpc_error:
                retry = calls.retry(rpc_error)
            finally:
                call.cancel()
            if retry.resync:
                yield WatchEvent(EventType.RESYNC, 0)
            await asyncio.sleep(calls.pause(retry))
            calls.check()

    async def wait(self, job_id: str, **options: Unpack[CallOptions]) -> M:
        deadline = Deadline(options.get("timeout"))
        job: M | None = None
        async with aclosing(self.watch([job_id], until_settled=True, **options)) as events:
            async for event in events:
                job = track(job, event)
                if job is not None and self.kind.is_settled(job):
                    return job
        return job if job is not None else await self.get(job_id, **deadline.options(options))


class AsyncKindClient(AsyncBaseKindClient[M]):
    __doc__ = sync.KindClient.__doc__

    async def update(
        self,
        resource: M,
        *,
        update_mask: Sequence[str] = (),
        expected_revision: int = 0,
        lease_duration: Seconds | None = None,
        **options: Unpack[CallOptions],
    ) -> M:
        request = self.kind.update_request(resource, update_mask, expected_revision, lease_duration)
        return self.kind.job_of(await self._call(self.kind.update_rpc, request, options))

    def run(
        self,
        job_id: str = "",
        *,
        resource: M | None = None,
        request_id: str | None = None,
        lease: Seconds | None = None,
        progress_interval: float = DEFAULT_INTERVAL,
        **options: Unpack[CallOptions],
    ) -> AsyncJobRun[M]:
        return AsyncJobRun(
            self, RunOptions(job_id, resource, request_id, lease, progress_interval, options)
        )


class AsyncDeliveryClient(AsyncKindClient[delivery_pb2.PreparedDelivery]):
    __doc__ = sync.DeliveryClient.__doc__

    async def get(
        self,
        job_id: str,
        *,
        min_revision: int = 0,
        source: delivery_pb2.DeliverySource.ValueType = delivery_pb2.DELIVERY_SOURCE_UNSPECIFIED,
        **options: Unpack[CallOptions],
    ) -> delivery_pb2.PreparedDelivery:
        request = self.kind.get_request(job_id, min_revision, source=source)
        return self.kind.job_of(await self._call(self.kind.get_rpc, request, options))


class AsyncDatasetClient(AsyncBaseKindClient[dataset_pb2.Dataset]):
    __doc__ = sync.DatasetClient.__doc__

    async def start_import(
        self,
        dataset_id: str,
        *,
        request_id: str | None = None,
        lease_duration: Seconds | None = None,
        **options: Unpack[CallOptions],
    ) -> dataset_pb2.Dataset:
        request = kinds.start_import_request(
            dataset_id, request_id or new_request_id(), lease_duration
        )
        return self.kind.job_of(await self._call("StartDatasetImport", request, options))

    async def update_import(
        self,
        dataset_id: str,
        step: dataset_pb2.DatasetImportStepName.ValueType,
        *,
        step_status: dataset_pb2.DatasetImportStatus.ValueType = (
            dataset_pb2.DATASET_IMPORT_STATUS_UNSPECIFIED
        ),
        entries: Sequence[dataset_pb2.DatasetLogEntry] = (),
        run_id: str = "",
        expected_revision: int = 0,
        lease_duration: Seconds | None = None,
        **options: Unpack[CallOptions],
    ) -> dataset_pb2.Dataset:
        request = kinds.update_import_request(
            dataset_id, step, step_status, entries, run_id, expected_revision, lease_duration
        )
        return self.kind.job_of(await self._call("UpdateDatasetImport", request, options))

    def run(
        self,
        dataset_id: str,
        *,
        request_id: str | None = None,
        lease: Seconds | None = None,
        progress_interval: float = DEFAULT_INTERVAL,
        **options: Unpack[CallOptions],
    ) -> AsyncDatasetRun:
        return AsyncDatasetRun(
            self, RunOptions(dataset_id, None, request_id, lease, progress_interval, options)
        )


class AsyncClient:
    """A grpc.aio connection to a jobstatus server, as Client; create it inside the
    running event loop."""

    def __init__(
        self,
        target: str | None = None,
        *,
        api_key: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        opts = channel_options(options)
        self.channel = (
            grpc.aio.secure_channel(target_or_default(target), credentials, opts)
            if credentials is not None
            else grpc.aio.insecure_channel(target_or_default(target), opts)
        )
        self._session = Session(key_or_default(api_key))
        self.map_imports = AsyncKindClient(MAP_IMPORT, self.channel, self._session)
        self.deliveries = AsyncDeliveryClient(DELIVERY, self.channel, self._session)
        self.datasets = AsyncDatasetClient(DATASET, self.channel, self._session)
        self.catalog_imports = AsyncKindClient(CATALOG_IMPORT, self.channel, self._session)
        self.kinds: dict[str, AsyncBaseKindClient[Any]] = {
            c.kind.name: c
            for c in (self.map_imports, self.deliveries, self.datasets, self.catalog_imports)
        }

    async def close(self, grace: float | None = None) -> None:
        self._session.closed = True
        await self.channel.close(grace)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


# The async methods document themselves with their sync twins' docstrings: one text.
for _async_class, _sync_class in (
    (AsyncBaseKindClient, sync.BaseKindClient),
    (AsyncKindClient, sync.KindClient),
    (AsyncDeliveryClient, sync.DeliveryClient),
    (AsyncDatasetClient, sync.DatasetClient),
    (AsyncClient, sync.Client),
):
    for _name, _method in vars(_async_class).items():
        if callable(_method) and not _name.startswith("_"):
            _method.__doc__ = getattr(_sync_class, _name).__doc__


__all__ = [
    "AsyncBaseKindClient",
    "AsyncClient",
    "AsyncDatasetClient",
    "AsyncDeliveryClient",
    "AsyncKindClient",
]

"""Client and AsyncClient: typed access to the four jobstatus services.

    with Client("127.0.0.1:50051") as client:
        job = client.map_imports.create(MapImport(import_request_id="m-1"))
        done = client.map_imports.wait("m-1", timeout=600)

Each kind has an accessor (`map_imports`, `deliveries`, `datasets`,
`catalog_imports`) built from the table in kinds.py. Call options are
keyword-only: `timeout` in seconds and extra `metadata`. Every failed call
raises JobStatusError (errors.py); a timeout raises DeadlineExceeded, which is
both a JobStatusError and a TimeoutError.
"""

# ruff: noqa: ASYNC109  (call options are keyword arguments, as in the sync client)
from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator, Sequence
from contextlib import aclosing, closing
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Generic, TypeAlias, TypeVar

import grpc
from google.protobuf.message import Message

from jobstatus.errors import DeadlineExceeded, JobStatusError
from jobstatus.kinds import CATALOG_IMPORT, DATASET, DELIVERY, MAP_IMPORT, Kind
from jobstatus.v1 import dataset_pb2
from jobstatus.watch import EventType, WatchEvent, WatchResumer

M = TypeVar("M", bound=Message)
Metadata = Sequence[tuple[str, str]]

DEFAULT_TARGET = "127.0.0.1:50051"
# Keepalive pings find a dead connection under a quiet watch stream; a reconnect
# backoff capped at 5 s (gRPC's default cap is 120 s) finds a restarted server soon.
CHANNEL_OPTIONS: dict[str, Any] = {
    "grpc.keepalive_time_ms": 30_000,
    "grpc.keepalive_timeout_ms": 10_000,
    "grpc.max_reconnect_backoff_ms": 5_000,
}
Step: TypeAlias = dataset_pb2.DatasetImportStepName.ValueType
StepStatus: TypeAlias = dataset_pb2.DatasetImportStatus.ValueType


def new_request_id() -> str:
    """A fresh request id: a create sent again with it is answered with the same job."""
    return str(uuid.uuid4())


@dataclass(frozen=True)
class Page(Generic[M]):
    """One page of a list: its jobs, and the token of the next page ("" on the last)."""

    jobs: list[M]
    next_page_token: str


@dataclass(frozen=True)
class JobChange(Generic[M]):
    """One change of a job: its revision, when it was committed, the job as of it."""

    revision: int
    time: datetime
    job: M


@dataclass(frozen=True)
class History(Generic[M]):
    """A job's kept changes, oldest first (one page of them, or all of them).

    The event log is compacted: `oldest_revision` is the oldest revision it still keeps,
    and `truncated` is True when the job's earliest changes are no longer among them.
    """

    changes: list[JobChange[M]]
    oldest_revision: int
    truncated: bool
    next_page_token: str = ""


def _history_of(kind: Kind[M], response: Any) -> History[M]:
    changes = [
        JobChange(int(c.revision), c.time.ToDatetime(UTC), kind.job_of(c)) for c in response.changes
    ]
    return History(
        changes, int(response.oldest_revision), bool(response.truncated), response.next_page_token
    )


def _joined(pages: Sequence[History[M]]) -> History[M]:
    last = pages[-1]
    changes = [change for page in pages for change in page.changes]
    return History(changes, last.oldest_revision, any(p.truncated for p in pages))


class _Session:
    """What every call of one client shares: the API key, and whether the client is closed."""

    def __init__(self, api_key: str | None) -> None:
        self.api_key = api_key
        self.closed = False

    def metadata(self, extra: Metadata) -> tuple[tuple[str, str], ...]:
        key = (("x-api-key", self.api_key),) if self.api_key else ()
        return (*key, *extra)


class _Deadline:
    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout
        self.at = None if timeout is None else time.monotonic() + timeout

    def remaining(self) -> float | None:
        # Never 0: gRPC takes a timeout of 0 as no deadline at all.
        return None if self.at is None else max(0.001, self.at - time.monotonic())

    def sleep_time(self, delay: float) -> float:
        remaining = self.remaining()
        return delay if remaining is None else min(delay, remaining)

    def check(self) -> None:
        if self.at is not None and time.monotonic() >= self.at:
            raise DeadlineExceeded(
                grpc.StatusCode.DEADLINE_EXCEEDED, f"no result within {self.timeout} s"
            )


def _channel_options(options: Sequence[tuple[str, Any]]) -> list[tuple[str, Any]]:
    return list({**CHANNEL_OPTIONS, **dict(options)}.items())


# --- sync -----------------------------------------------------------------------


class BaseKindClient(Generic[M]):
    """Create, read, list and watch the jobs of one kind."""

    def __init__(self, kind: Kind[M], channel: grpc.Channel, session: _Session) -> None:
        self.kind = kind
        self._stub = kind.stub(channel)
        self._session = session

    def _call(self, rpc: str, request: Message, timeout: float | None, metadata: Metadata) -> Any:
        try:
            return getattr(self._stub, rpc)(
                request, timeout=timeout, metadata=self._session.metadata(metadata)
            )
        except grpc.RpcError as error:
            raise JobStatusError.from_rpc_error(error) from error

    def create(
        self,
        resource: M,
        *,
        request_id: str | None = None,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> M:
        """Create a job. Without a request_id a fresh one is sent: pass your own to retry safely."""
        request = self.kind.create_request(resource, request_id or new_request_id())
        return self.kind.job_of(self._call(self.kind.create_rpc, request, timeout, metadata))

    def get(self, job_id: str, *, timeout: float | None = None, metadata: Metadata = ()) -> M:
        request = self.kind.get_request(job_id)
        return self.kind.job_of(self._call(self.kind.get_rpc, request, timeout, metadata))

    def list_page(
        self,
        *,
        statuses: Sequence[int] = (),
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> Page[M]:
        """One page of jobs, oldest first; the server's default page size when 0."""
        request = self.kind.list_request(statuses, page_size, page_token)
        jobs, token = self.kind.page_of(self._call(self.kind.list_rpc, request, timeout, metadata))
        return Page(jobs, token)

    def list(
        self,
        *,
        statuses: Sequence[int] = (),
        page_size: int = 0,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> Iterator[M]:
        """Every job (in `statuses`, when given), oldest first, page after page.

        `timeout` applies to each page's call.
        """
        token = ""
        while True:
            page = self.list_page(
                statuses=statuses,
                page_size=page_size,
                page_token=token,
                timeout=timeout,
                metadata=metadata,
            )
            yield from page.jobs
            token = page.next_page_token
            if not token:
                return

    def history_page(
        self,
        job_id: str,
        *,
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> History[M]:
        """One page of the job's kept changes, oldest first; the server's default size when 0.

        JobStatusError with code OUT_OF_RANGE if the history behind `page_token` was
        compacted meanwhile."""
        request = self.kind.history_request(job_id, page_size, page_token)
        response = self._call(self.kind.history_rpc, request, timeout, metadata)
        return _history_of(self.kind, response)

    def history(
        self,
        job_id: str,
        *,
        page_size: int = 0,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> History[M]:
        """Every kept change of the job, oldest first, read page after page.

        `timeout` applies to each page's call."""
        pages = [self.history_page(job_id, page_size=page_size, timeout=timeout, metadata=metadata)]
        while pages[-1].next_page_token:
            pages.append(
                self.history_page(
                    job_id,
                    page_size=page_size,
                    page_token=pages[-1].next_page_token,
                    timeout=timeout,
                    metadata=metadata,
                )
            )
        return _joined(pages)

    def watch(
        self,
        ids: Sequence[str] = (),
        *,
        start_revision: int = 0,
        until_settled: bool = False,
        heartbeat_interval: float | None = None,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> Generator[WatchEvent[M], None, None]:
        """The events of the jobs `ids` (every job of the kind when empty), resuming by itself.

        With start_revision 0: STATE events, SYNCED, then CHANGE and HEARTBEAT
        events; from R: the events after R. A broken stream is resumed from the
        last revision received, with backoff; a RESYNC event means "forget what
        you know, the current state follows". With until_settled the iterator
        ends once every job is settled. `timeout` bounds the whole watch,
        reconnects included: DeadlineExceeded when it passes.
        """
        kind, resumer, deadline = self.kind, WatchResumer(start_revision), _Deadline(timeout)
        method = getattr(self._stub, kind.watch_rpc)
        while True:
            request = kind.watch_request(
                ids, resumer.start_revision, until_settled, heartbeat_interval
            )
            call = method(
                request, timeout=deadline.remaining(), metadata=self._session.metadata(metadata)
            )
            try:
                for response in call:
                    event_type = resumer.receive(response.type, response.revision)
                    if event_type is not None:
                        yield WatchEvent(event_type, response.revision, kind.event_job_of(response))
                return
            except grpc.RpcError as rpc_error:
                error = JobStatusError.from_rpc_error(rpc_error)
                retry = (
                    None
                    if self._session.closed
                    else resumer.fail(error.code, error.retry_delay, error.reason)
                )
                if retry is None:
                    raise error from rpc_error
            finally:
                call.cancel()
            if retry.resync:
                yield WatchEvent(EventType.RESYNC, 0)
            time.sleep(deadline.sleep_time(retry.delay))
            deadline.check()

    def wait(self, job_id: str, *, timeout: float | None = None, metadata: Metadata = ()) -> M:
        """The job once it is settled.

        Raises DeadlineExceeded (a JobStatusError and a TimeoutError) if `timeout` passes first.
        """
        deadline = _Deadline(timeout)
        job: M | None = None
        events = self.watch([job_id], until_settled=True, timeout=timeout, metadata=metadata)
        with closing(events):
            for event in events:
                job = _track(job, event)
                if job is not None and self.kind.is_settled(job):
                    return job
        return job if job is not None else self.get(job_id, timeout=deadline.remaining())


def _track(job: M | None, event: WatchEvent[M]) -> M | None:
    """The job as a wait() knows it after `event`."""
    if event.type is EventType.RESYNC:
        return None
    return event.job if event.job is not None else job


class KindClient(BaseKindClient[M]):
    """The jobs of a kind with a generic update: map imports, deliveries, catalog imports."""

    def update(
        self,
        resource: M,
        *,
        fields: Sequence[str] = (),
        expected_revision: int = 0,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> M:
        """Change the `fields` (paths such as "meta_data.progress") of the job that `resource`
        names; every populated field when empty. With expected_revision, ABORTED unless the
        job is at that revision."""
        request = self.kind.update_request(resource, fields, expected_revision)
        return self.kind.job_of(self._call(self.kind.update_rpc, request, timeout, metadata))


class DatasetClient(BaseKindClient[dataset_pb2.Dataset]):
    """Datasets and their import runs."""

    def start_import(
        self,
        dataset_id: str,
        *,
        request_id: str | None = None,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> dataset_pb2.Dataset:
        """Start a run, step fetch in progress. Idempotent by request_id (a fresh one when None)."""
        request = dataset_pb2.StartDatasetImportRequest(
            dataset_id=dataset_id, request_id=request_id or new_request_id()
        )
        response = self._call("StartDatasetImport", request, timeout, metadata)
        return self.kind.job_of(response)

    def update_import(
        self,
        dataset_id: str,
        step: Step,
        *,
        step_status: StepStatus = dataset_pb2.DATASET_IMPORT_STATUS_UNSPECIFIED,
        entries: Sequence[dataset_pb2.DatasetLogEntry] = (),
        run_id: str = "",
        expected_revision: int = 0,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> dataset_pb2.Dataset:
        """Append log entries to the running `step` and/or end it with success or failed."""
        request = dataset_pb2.UpdateDatasetImportRequest(
            dataset_id=dataset_id,
            step=step,
            step_status=step_status,
            entries=entries,
            run_id=run_id,
            expected_revision=expected_revision,
        )
        response = self._call("UpdateDatasetImport", request, timeout, metadata)
        return self.kind.job_of(response)


class Client:
    """A connection to a jobstatus server; plaintext unless `credentials` are given."""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        api_key: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        opts = _channel_options(options)
        self.channel = (
            grpc.secure_channel(target, credentials, opts)
            if credentials is not None
            else grpc.insecure_channel(target, opts)
        )
        self._session = _Session(api_key)
        self.map_imports = KindClient(MAP_IMPORT, self.channel, self._session)
        self.deliveries = KindClient(DELIVERY, self.channel, self._session)
        self.datasets = DatasetClient(DATASET, self.channel, self._session)
        self.catalog_imports = KindClient(CATALOG_IMPORT, self.channel, self._session)
        # Every accessor by its kind's name (kinds.py): "map_import", "prepared_delivery", ...
        self.kinds: dict[str, BaseKindClient[Any]] = {
            c.kind.name: c
            for c in (self.map_imports, self.deliveries, self.datasets, self.catalog_imports)
        }

    def close(self) -> None:
        self._session.closed = True
        self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


# --- async ----------------------------------------------------------------------


class AsyncBaseKindClient(Generic[M]):
    """Create, read, list and watch the jobs of one kind, on asyncio."""

    def __init__(self, kind: Kind[M], channel: grpc.aio.Channel, session: _Session) -> None:
        self.kind = kind
        self._stub = kind.stub(channel)
        self._session = session

    async def _call(
        self, rpc: str, request: Message, timeout: float | None, metadata: Metadata
    ) -> Any:
        try:
            return await getattr(self._stub, rpc)(
                request, timeout=timeout, metadata=self._session.metadata(metadata)
            )
        except grpc.RpcError as error:
            raise JobStatusError.from_rpc_error(error) from error

    async def create(
        self,
        resource: M,
        *,
        request_id: str | None = None,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> M:
        """Create a job. Without a request_id a fresh one is sent: pass your own to retry safely."""
        request = self.kind.create_request(resource, request_id or new_request_id())
        return self.kind.job_of(await self._call(self.kind.create_rpc, request, timeout, metadata))

    async def get(self, job_id: str, *, timeout: float | None = None, metadata: Metadata = ()) -> M:
        request = self.kind.get_request(job_id)
        return self.kind.job_of(await self._call(self.kind.get_rpc, request, timeout, metadata))

    async def list_page(
        self,
        *,
        statuses: Sequence[int] = (),
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> Page[M]:
        """One page of jobs, oldest first; the server's default page size when 0."""
        request = self.kind.list_request(statuses, page_size, page_token)
        response = await self._call(self.kind.list_rpc, request, timeout, metadata)
        jobs, token = self.kind.page_of(response)
        return Page(jobs, token)

    async def list(
        self,
        *,
        statuses: Sequence[int] = (),
        page_size: int = 0,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> AsyncIterator[M]:
        """Every job (in `statuses`, when given), oldest first, page after page."""
        token = ""
        while True:
            page = await self.list_page(
                statuses=statuses,
                page_size=page_size,
                page_token=token,
                timeout=timeout,
                metadata=metadata,
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
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> History[M]:
        """One page of the job's kept changes, oldest first; the server's default size when 0.

        JobStatusError with code OUT_OF_RANGE if the history behind `page_token` was
        compacted meanwhile."""
        request = self.kind.history_request(job_id, page_size, page_token)
        response = await self._call(self.kind.history_rpc, request, timeout, metadata)
        return _history_of(self.kind, response)

    async def history(
        self,
        job_id: str,
        *,
        page_size: int = 0,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> History[M]:
        """Every kept change of the job, oldest first, read page after page.

        `timeout` applies to each page's call."""
        pages = [
            await self.history_page(job_id, page_size=page_size, timeout=timeout, metadata=metadata)
        ]
        while pages[-1].next_page_token:
            pages.append(
                await self.history_page(
                    job_id,
                    page_size=page_size,
                    page_token=pages[-1].next_page_token,
                    timeout=timeout,
                    metadata=metadata,
                )
            )
        return _joined(pages)

    async def watch(
        self,
        ids: Sequence[str] = (),
        *,
        start_revision: int = 0,
        until_settled: bool = False,
        heartbeat_interval: float | None = None,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> AsyncGenerator[WatchEvent[M], None]:
        """The events of the jobs `ids`, resuming by itself: see BaseKindClient.watch."""
        kind, resumer, deadline = self.kind, WatchResumer(start_revision), _Deadline(timeout)
        method = getattr(self._stub, kind.watch_rpc)
        while True:
            request = kind.watch_request(
                ids, resumer.start_revision, until_settled, heartbeat_interval
            )
            call = method(
                request, timeout=deadline.remaining(), metadata=self._session.metadata(metadata)
            )
            try:
                async for response in call:
                    event_type = resumer.receive(response.type, response.revision)
                    if event_type is not None:
                        yield WatchEvent(event_type, response.revision, kind.event_job_of(response))
                return
            except grpc.RpcError as rpc_error:
                error = JobStatusError.from_rpc_error(rpc_error)
                retry = (
                    None
                    if self._session.closed
                    else resumer.fail(error.code, error.retry_delay, error.reason)
                )
                if retry is None:
                    raise error from rpc_error
            finally:
                call.cancel()
            if retry.resync:
                yield WatchEvent(EventType.RESYNC, 0)
            await asyncio.sleep(deadline.sleep_time(retry.delay))
            deadline.check()

    async def wait(
        self, job_id: str, *, timeout: float | None = None, metadata: Metadata = ()
    ) -> M:
        """The job once it is settled.

        Raises DeadlineExceeded (a JobStatusError and a TimeoutError) if `timeout` passes first.
        """
        deadline = _Deadline(timeout)
        job: M | None = None
        events = self.watch([job_id], until_settled=True, timeout=timeout, metadata=metadata)
        async with aclosing(events):
            async for event in events:
                job = _track(job, event)
                if job is not None and self.kind.is_settled(job):
                    return job
        return job if job is not None else await self.get(job_id, timeout=deadline.remaining())


class AsyncKindClient(AsyncBaseKindClient[M]):
    """The jobs of a kind with a generic update: map imports, deliveries, catalog imports."""

    async def update(
        self,
        resource: M,
        *,
        fields: Sequence[str] = (),
        expected_revision: int = 0,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> M:
        """Change the `fields` of the job that `resource` names: see KindClient.update."""
        request = self.kind.update_request(resource, fields, expected_revision)
        return self.kind.job_of(await self._call(self.kind.update_rpc, request, timeout, metadata))


class AsyncDatasetClient(AsyncBaseKindClient[dataset_pb2.Dataset]):
    """Datasets and their import runs, on asyncio."""

    async def start_import(
        self,
        dataset_id: str,
        *,
        request_id: str | None = None,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> dataset_pb2.Dataset:
        """Start a run, step fetch in progress. Idempotent by request_id (a fresh one when None)."""
        request = dataset_pb2.StartDatasetImportRequest(
            dataset_id=dataset_id, request_id=request_id or new_request_id()
        )
        return self.kind.job_of(await self._call("StartDatasetImport", request, timeout, metadata))

    async def update_import(
        self,
        dataset_id: str,
        step: Step,
        *,
        step_status: StepStatus = dataset_pb2.DATASET_IMPORT_STATUS_UNSPECIFIED,
        entries: Sequence[dataset_pb2.DatasetLogEntry] = (),
        run_id: str = "",
        expected_revision: int = 0,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> dataset_pb2.Dataset:
        """Append log entries to the running `step` and/or end it with success or failed."""
        request = dataset_pb2.UpdateDatasetImportRequest(
            dataset_id=dataset_id,
            step=step,
            step_status=step_status,
            entries=entries,
            run_id=run_id,
            expected_revision=expected_revision,
        )
        return self.kind.job_of(await self._call("UpdateDatasetImport", request, timeout, metadata))


class AsyncClient:
    """A grpc.aio connection to a jobstatus server; create it inside the running event loop."""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        api_key: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        opts = _channel_options(options)
        self.channel = (
            grpc.aio.secure_channel(target, credentials, opts)
            if credentials is not None
            else grpc.aio.insecure_channel(target, opts)
        )
        self._session = _Session(api_key)
        self.map_imports = AsyncKindClient(MAP_IMPORT, self.channel, self._session)
        self.deliveries = AsyncKindClient(DELIVERY, self.channel, self._session)
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


__all__ = [
    "AsyncBaseKindClient",
    "AsyncClient",
    "AsyncDatasetClient",
    "AsyncKindClient",
    "BaseKindClient",
    "Client",
    "DatasetClient",
    "DeadlineExceeded",
    "EventType",
    "JobStatusError",
    "KindClient",
    "Page",
    "WatchEvent",
]

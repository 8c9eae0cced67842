"""Client: the jobstatus services over a blocking gRPC channel.

    from jobstatus import Client
    from jobstatus.v1.map_import_pb2 import MapImport

    with Client("127.0.0.1:50051", api_key=key) as client:
        client.map_imports.create(MapImport(import_request_id="m-1"))
        done = client.map_imports.wait("m-1", timeout=600)

Each kind has an accessor (`map_imports`, `deliveries`, `datasets`,
`catalog_imports`) built on its row of kinds.py, which builds every request. The
methods take each RPC option under the RPC's own name (min_revision,
update_mask, expected_revision, request_id, page_size, page_token,
start_revision, lease_duration, ...) and the call options `timeout` and
`metadata` (options.CallOptions). A failed call raises JobStatusError
(errors.py); a timeout raises DeadlineExceeded, a JobStatusError and a
TimeoutError. aio.py is the same API on asyncio.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator, Sequence
from contextlib import closing
from types import TracebackType
from typing import Any, Generic, TypeVar, Unpack

import grpc
from google.protobuf.message import Message

from jobstatus import kinds
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
from jobstatus.runner import DatasetRun, JobRun
from jobstatus.runplan import DEFAULT_INTERVAL
from jobstatus.v1 import dataset_pb2, delivery_pb2
from jobstatus.watch import EventType, WatchCalls, WatchEvent, track

M = TypeVar("M", bound=Message)


class BaseKindClient(Generic[M]):
    """Create, read, list, watch and wait for the jobs of one kind."""

    def __init__(self, kind: Kind[M], channel: grpc.Channel, session: Session) -> None:
        self.kind = kind
        self._stub = kind.stub(channel)
        self._session = session

    @property
    def statuses(self) -> type[Status]:
        """The kind's statuses, an enum: `statuses["MAP_IMPORT_STATUS_DONE"]`."""
        return self.kind.statuses

    def status(self, job: M) -> Status:
        """The job's status: equal to its number, printed as its name."""
        return self.kind.status(job)

    def _call(self, rpc: str, request: Message, options: CallOptions) -> Any:
        try:
            return getattr(self._stub, rpc)(request, **self._session.call_kwargs(options))
        except grpc.RpcError as error:
            raise JobStatusError.from_rpc_error(error) from error

    def create(
        self,
        resource: M,
        *,
        request_id: str | None = None,
        lease_duration: Seconds | None = None,
        **options: Unpack[CallOptions],
    ) -> M:
        """Create a job. The same `request_id` sent again is answered with the same job
        (a fresh one when None: pass your own to retry safely). With `lease_duration`,
        the job fails by itself unless a write renews its lease within that time."""
        request = self.kind.create_request(resource, request_id or new_request_id(), lease_duration)
        return self.kind.job_of(self._call(self.kind.create_rpc, request, options))

    def get(self, job_id: str, *, min_revision: int = 0, **options: Unpack[CallOptions]) -> M:
        """The job now. With `min_revision` (a revision a write returned), the server first
        waits until it has applied that revision, within the call's timeout."""
        request = self.kind.get_request(job_id, min_revision)
        return self.kind.job_of(self._call(self.kind.get_rpc, request, options))

    def list_page(
        self,
        *,
        statuses: Sequence[int] = (),
        page_size: int = 0,
        page_token: str = "",
        **options: Unpack[CallOptions],
    ) -> Page[M]:
        """One page of jobs (in `statuses`, when given), oldest first; `page_token` is the
        previous page's next_page_token; the server's default page size when 0."""
        request = self.kind.list_request(statuses, page_size, page_token)
        jobs, token = self.kind.page_of(self._call(self.kind.list_rpc, request, options))
        return Page(jobs, token)

    def list(
        self, *, statuses: Sequence[int] = (), page_size: int = 0, **options: Unpack[CallOptions]
    ) -> Iterator[M]:
        """Every job (in `statuses`, when given), oldest first, page after page;
        `timeout` applies to each page's call."""
        token = ""
        while True:
            page = self.list_page(
                statuses=statuses, page_size=page_size, page_token=token, **options
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
        **options: Unpack[CallOptions],
    ) -> History[M]:
        """One page of the job's kept changes, oldest first; the server's default size
        when 0. JobStatusError OUT_OF_RANGE if the history behind `page_token` was
        compacted meanwhile."""
        request = self.kind.history_request(job_id, page_size, page_token)
        return history_of(self.kind, self._call(self.kind.history_rpc, request, options))

    def history(
        self, job_id: str, *, page_size: int = 0, **options: Unpack[CallOptions]
    ) -> History[M]:
        """Every kept change of the job, oldest first, page after page; each change's
        `status` prints as its name. `timeout` applies to each page's call."""
        pages = [self.history_page(job_id, page_size=page_size, **options)]
        while token := pages[-1].next_page_token:
            pages.append(
                self.history_page(job_id, page_size=page_size, page_token=token, **options)
            )
        return joined(pages)

    def watch(
        self,
        ids: Sequence[str] = (),
        *,
        start_revision: int = 0,
        until_settled: bool = False,
        heartbeat_interval: Seconds | None = None,
        **options: Unpack[CallOptions],
    ) -> Generator[WatchEvent[M], None, None]:
        """The events of the jobs `ids` (every job of the kind when empty), resuming by itself.

        With start_revision 0: STATE events, SYNCED, then CHANGE and HEARTBEAT
        events; from R: the events after R. A broken stream is resumed from the
        last revision received, with backoff; a RESYNC event means "forget what
        you know, the current state follows". With until_settled the iterator
        ends once every job is settled. `timeout` bounds the whole watch,
        reconnects included: DeadlineExceeded when it passes.
        """
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
                for response in call:
                    if (event := calls.event(response)) is not None:
                        yield event
                return
            except grpc.RpcError as rpc_error:
                retry = calls.retry(rpc_error)
            finally:
                call.cancel()
            if retry.resync:
                yield WatchEvent(EventType.RESYNC, 0)
            time.sleep(calls.pause(retry))
            calls.check()

    def wait(self, job_id: str, **options: Unpack[CallOptions]) -> M:
        """The job once it is settled. Raises DeadlineExceeded (a JobStatusError and a
        TimeoutError) if `timeout` passes first."""
        deadline = Deadline(options.get("timeout"))
        job: M | None = None
        with closing(self.watch([job_id], until_settled=True, **options)) as events:
            for event in events:
                job = track(job, event)
                if job is not None and self.kind.is_settled(job):
                    return job
        return job if job is not None else self.get(job_id, **deadline.options(options))


class KindClient(BaseKindClient[M]):
    """The jobs of a kind with a generic update: map imports, deliveries, catalog imports."""

    def update(
        self,
        resource: M,
        *,
        update_mask: Sequence[str] = (),
        expected_revision: int = 0,
        lease_duration: Seconds | None = None,
        **options: Unpack[CallOptions],
    ) -> M:
        """Change the fields named by `update_mask` (paths such as "meta_data.progress")
        of the job that `resource` names; every populated field when empty. With
        `expected_revision`, ABORTED unless the job is at that revision. With
        `lease_duration`, the job's lease is renewed to now + that duration."""
        request = self.kind.update_request(resource, update_mask, expected_revision, lease_duration)
        return self.kind.job_of(self._call(self.kind.update_rpc, request, options))

    def run(
        self,
        job_id: str = "",
        *,
        resource: M | None = None,
        request_id: str | None = None,
        lease: Seconds | None = None,
        progress_interval: float = DEFAULT_INTERVAL,
        **options: Unpack[CallOptions],
    ) -> JobRun[M]:
        """A job run by a `with` block (`async with` on AsyncClient; runner.py):
        created as `resource` with the id `job_id` (or adopted, when a job with that
        id exists), moved to the running status; done when the block ends, failed
        with the message of an exception that ends it. `progress_interval`: seconds
        between two progress writes at most. `lease`: the job fails by itself unless
        the runner writes within it (renewed in the background). `options` apply to
        each of the run's calls."""
        return JobRun(
            self, RunOptions(job_id, resource, request_id, lease, progress_interval, options)
        )


class DeliveryClient(KindClient[delivery_pb2.PreparedDelivery]):
    """Prepared deliveries: a Get also takes the download `source`."""

    def get(
        self,
        job_id: str,
        *,
        min_revision: int = 0,
        source: delivery_pb2.DeliverySource.ValueType = delivery_pb2.DELIVERY_SOURCE_UNSPECIFIED,
        **options: Unpack[CallOptions],
    ) -> delivery_pb2.PreparedDelivery:
        """The delivery now, as `get` of every kind; `source`: where the caller will
        download from."""
        request = self.kind.get_request(job_id, min_revision, source=source)
        return self.kind.job_of(self._call(self.kind.get_rpc, request, options))


class DatasetClient(BaseKindClient[dataset_pb2.Dataset]):
    """Datasets and their import runs."""

    def start_import(
        self,
        dataset_id: str,
        *,
        request_id: str | None = None,
        lease_duration: Seconds | None = None,
        **options: Unpack[CallOptions],
    ) -> dataset_pb2.Dataset:
        """Start a run, step fetch in progress. Idempotent by request_id (a fresh one
        when None)."""
        request = kinds.start_import_request(
            dataset_id, request_id or new_request_id(), lease_duration
        )
        return self.kind.job_of(self._call("StartDatasetImport", request, options))

    def update_import(
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
        """Append log entries to the running `step` and/or end it with success or failed."""
        request = kinds.update_import_request(
            dataset_id, step, step_status, entries, run_id, expected_revision, lease_duration
        )
        return self.kind.job_of(self._call("UpdateDatasetImport", request, options))

    def run(
        self,
        dataset_id: str,
        *,
        request_id: str | None = None,
        lease: Seconds | None = None,
        progress_interval: float = DEFAULT_INTERVAL,
        **options: Unpack[CallOptions],
    ) -> DatasetRun:
        """An import run of the dataset by a `with` block (`async with` on AsyncClient;
        runner.py): started (or
        adopted, when one is in progress), step fetch running; `log()` adds entries to
        the running step (at most one write per `progress_interval`), `end_step()`
        ends it; the block's end ends the remaining steps with success, an exception
        fails the running step with its message. `lease` as for KindClient.run."""
        return DatasetRun(
            self, RunOptions(dataset_id, None, request_id, lease, progress_interval, options)
        )


class Client:
    """A connection to a jobstatus server; plaintext unless `credentials` are given.

    `target` is host:port (default: JOBSTATUS_GRPC_ADDR, else 127.0.0.1:50051);
    `api_key` is sent as x-api-key on every call (default: JOBSTATUS_API_KEY);
    `options` are gRPC channel options (options.CHANNEL_OPTIONS are the defaults)."""

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
            grpc.secure_channel(target_or_default(target), credentials, opts)
            if credentials is not None
            else grpc.insecure_channel(target_or_default(target), opts)
        )
        self._session = Session(key_or_default(api_key))
        self.map_imports = KindClient(MAP_IMPORT, self.channel, self._session)
        self.deliveries = DeliveryClient(DELIVERY, self.channel, self._session)
        self.datasets = DatasetClient(DATASET, self.channel, self._session)
        self.catalog_imports = KindClient(CATALOG_IMPORT, self.channel, self._session)
        # Every accessor by its kind's name (kinds.py): "map_import", "prepared_delivery", ...
        self.kinds: dict[str, BaseKindClient[Any]] = {
            c.kind.name: c
            for c in (self.map_imports, self.deliveries, self.datasets, self.catalog_imports)
        }

    def close(self) -> None:
        """Close the connection: calls in flight fail, watches end."""
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


__all__ = ["BaseKindClient", "Client", "DatasetClient", "DeliveryClient", "KindClient"]

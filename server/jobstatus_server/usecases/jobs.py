"""The application core: create, update, read and expire jobs of any kind.

Transports call these functions and translate; the rules of each kind come
from the kind table (contract/kinds.py: lifecycles, rules, a kind's own writes such
as a dataset's import run), the storage from store.py. Requests reach the core validated
against the contract's field rules (validation.py).

One concept, past 400 lines: every use case of a job (create, update through a field
mask, the kind's own writes, get, list with page tokens, the time-driven transitions
and the lease they enforce) runs through the same transaction and the same rules, and
the field-mask merge and the lease's upkeep they share are here with them, as is the
rule for an update that changes nothing (`_refuse_if_overridden`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from google.protobuf import duration_pb2, field_mask_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from jobstatus_server.contract import lease
from jobstatus_server.contract.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    NotFound,
    invalid,
)
from jobstatus_server.contract.kinds import KINDS, Context, Kind, M, Operation
from jobstatus_server.contract.wire import job_response
from jobstatus_server.state.store import Store, Tx
from jobstatus_server.usecases.page_token import PageTokens

Flags = list[bool]
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
_WELL_KNOWN = {"google.protobuf.Timestamp", "google.protobuf.Duration"}


def _leaf_paths(message: Message, prefix: str = "") -> Iterator[str]:
    """The paths of the populated fields of `message`, down to scalars and well-known types."""
    for field, value in message.ListFields():
        path = prefix + field.name
        nested = (
            field.type == FieldDescriptor.TYPE_MESSAGE
            and not field.is_repeated
            and field.message_type is not None
            and field.message_type.full_name not in _WELL_KNOWN
        )
        if nested:
            inner = list(_leaf_paths(value, path + "."))
            yield from inner or [path]
        else:
            yield path


# --- field masks, compiled once per message type and mask ------------------------------
#
# A mask names the fields an update replaces. Its check and its merge are built once for
# each (message type, paths) and kept (a bounded cache: masks come from callers); the
# merge does what FieldMask.MergeMessage(replace_message_field=True,
# replace_repeated_field=True) does, without building the path tree on every call.

Merge = Callable[[Message, Message], None]
MASK_CACHE = 512


@lru_cache(maxsize=MASK_CACHE)
def _valid_mask(descriptor: Descriptor, paths: tuple[str, ...]) -> bool:
    return bool(field_mask_pb2.FieldMask(paths=paths).IsValidForDescriptor(descriptor))


@lru_cache(maxsize=MASK_CACHE)
def mask_merger(descriptor: Descriptor, paths: tuple[str, ...]) -> Merge:
    tree: dict[str, Any] = {}
    for path in paths:  # as FieldMask's tree: a path covers all of its sub-paths
        node = tree
        for name in path.split("."):
            if name not in node:
                node[name] = {}
            elif not node[name]:
                break
            node = node[name]
        else:
            node.clear()
    return _merge_node(descriptor, tree)


def _merge_node(descriptor: Descriptor, node: dict[str, Any]) -> Merge:
    steps: list[Merge] = []
    for name, child in node.items():
        field = descriptor.fields_by_name[name]
        if child:
            if field.is_repeated or field.message_type is None:
                raise ValueError(f"{name} in {descriptor.full_name} cannot have sub-fields")
            steps.append(_merge_inner(name, _merge_node(field.message_type, child)))
        elif field.is_repeated:
            steps.append(_merge_repeated(name))
        elif field.message_type is not None:
            steps.append(_merge_message(name))
        elif field.has_presence:
            steps.append(_merge_optional(name))
        else:
            steps.append(_merge_scalar(name))

    def merge(source: Message, destination: Message) -> None:
        for step in steps:
            step(source, destination)

    return merge


def _merge_inner(name: str, inner: Merge) -> Merge:
    def merge(source: Message, destination: Message) -> None:
        if source.HasField(name):
            inner(getattr(source, name), getattr(destination, name))

    return merge


def _merge_repeated(name: str) -> Merge:
    def merge(source: Message, destination: Message) -> None:
        destination.ClearField(name)
        getattr(destination, name).MergeFrom(getattr(source, name))

    return merge


def _merge_message(name: str) -> Merge:
    def merge(source: Message, destination: Message) -> None:
        destination.ClearField(name)
        if source.HasField(name):
            getattr(destination, name).MergeFrom(getattr(source, name))

    return merge


def _merge_optional(name: str) -> Merge:
    def merge(source: Message, destination: Message) -> None:
        if source.HasField(name):
            setattr(destination, name, getattr(source, name))
        else:
            destination.ClearField(name)

    return merge


def _merge_scalar(name: str) -> Merge:
    def merge(source: Message, destination: Message) -> None:
        setattr(destination, name, getattr(source, name))

    return merge


@dataclass
class Core:
    store: Store
    delivery_cache_lifetime: timedelta = timedelta(hours=168)

    def _context(self, tx: Tx, kind: Kind[Any], tenant: str) -> Context:
        return Context(
            now=tx.now,
            delivery_cache_lifetime=self.delivery_cache_lifetime,
            jobs_in=lambda statuses: tx.jobs_in(kind, tenant, statuses),
        )

    # --- create ---------------------------------------------------------------

    async def create(
        self,
        kind: Kind[M],
        tenant: str,
        request_id: str,
        resource: M,
        lease_duration: duration_pb2.Duration | None = None,
    ) -> M:
        field = kind.name
        job_id = kind.job_id(resource)
        if not job_id and kind.new_id is None:
            raise invalid(f"{field}.{kind.id_field}", "is required", "REQUIRED")
        status = kind.status_of(resource) or kind.initial[0]
        if status not in kind.initial:
            allowed = ", ".join(kind.spell_both(s) for s in kind.initial)
            raise invalid(f"{field}.status", f"a new {kind.display} starts in {allowed}")

        def run(tx: Tx) -> M:
            if request_id:
                earlier = tx.load_by_request(kind, tenant, request_id)
                if earlier is not None:
                    if job_id and kind.job_id(earlier) != job_id:
                        raise AlreadyExists(
                            f"request_id {request_id!r} already created {kind.display} "
                            f"{kind.job_id(earlier)!r}",
                            reason="REQUEST_ID_REUSED",
                            metadata={"request_id": request_id},
                        )
                    return earlier
            new_id = job_id or (kind.new_id() if kind.new_id else "")
            if tx.load(kind, tenant, new_id) is not None:
                raise AlreadyExists(
                    f"{kind.display} {new_id!r} already exists",
                    reason="ALREADY_EXISTS",
                    metadata={kind.id_field: new_id},
                )
            new = kind.message()
            new.CopyFrom(resource)
            for name in kind.output_only:
                new.ClearField(name)
            setattr(new, kind.id_field, new_id)
            if kind.generic_update:
                setattr(new, "status", status)  # noqa: B010
            kind.rule(new, None, self._context(tx, kind, tenant))
            new = self._leased(kind, new, new, lease_duration, tx)
            return tx.put(kind, tenant, new, created=True, request_id=request_id)

        return await self.store.transact(run)

    # --- update ---------------------------------------------------------------

    async def update(
        self,
        kind: Kind[M],
        tenant: str,
        resource: M,
        mask: field_mask_pb2.FieldMask,
        expected_revision: int,
        lease_duration: duration_pb2.Duration | None = None,
    ) -> M:
        job_id, mutate = self._update(kind, tenant, resource, mask, lease_duration)
        job: M = await self._modify(kind, tenant, job_id, mutate, expected_revision, False)
        return job

    async def update_response(
        self,
        kind: Kind[M],
        tenant: str,
        resource: M,
        mask: field_mask_pb2.FieldMask,
        expected_revision: int,
        lease_duration: duration_pb2.Duration | None = None,
    ) -> bytes:
        """As `update`, answered as the serialized Update response (kinds.job_response):
        the job's bytes as they were stored, not a message to copy and serialize again."""
        job_id, mutate = self._update(kind, tenant, resource, mask, lease_duration)
        response: bytes = await self._modify(kind, tenant, job_id, mutate, expected_revision, True)
        return response

    def _update(
        self,
        kind: Kind[M],
        tenant: str,
        resource: M,
        mask: field_mask_pb2.FieldMask,
        lease_duration: duration_pb2.Duration | None,
    ) -> tuple[str, Callable[[M, Tx], M]]:
        """The job an update names and the change it makes, checked against the mask
        (none: a renewal of the job's lease only, when the update names one)."""
        field = kind.name
        job_id = kind.job_id(resource)
        if not job_id:
            raise invalid(f"{field}.{kind.id_field}", "is required", "REQUIRED")
        if mask.paths:
            if not _valid_mask(kind.descriptor, tuple(mask.paths)):
                raise invalid("update_mask", f"names a field {kind.display} does not have")
            paths = list(mask.paths)
            for path in paths:
                top = path.split(".", 1)[0]
                if top in kind.output_only or top == kind.id_field:
                    raise invalid("update_mask", f"{path} cannot be updated", "OUTPUT_ONLY")
        else:
            paths = [
                p
                for p in _leaf_paths(resource)
                if p.split(".", 1)[0] not in kind.output_only | {kind.id_field}
            ]
        if not paths and lease_duration is None:
            raise invalid("update_mask", "names no field to change")
        merge = mask_merger(kind.descriptor, tuple(paths))

        def mutate(current: M, tx: Tx) -> M:
            new = kind.message()
            new.CopyFrom(current)
            merge(resource, new)
            status = kind.status_of(new)
            if status == 0:
                raise invalid(f"{field}.status", "is required", "REQUIRED")
            kind.check_transition(kind.status_of(current), status)
            kind.rule(new, current, self._context(tx, kind, tenant))
            if new == current:
                _refuse_if_overridden(kind, current, resource, merge, paths)
            return self._leased(kind, current, new, lease_duration, tx)

        return job_id, mutate

    async def modify(
        self,
        kind: Kind[M],
        tenant: str,
        job_id: str,
        mutate: Callable[[M, Tx], M],
        expected_revision: int = 0,
    ) -> M:
        """Apply `mutate` to the job's current state in one transaction; store it if it changed."""
        job: M = await self._modify(kind, tenant, job_id, mutate, expected_revision, False)
        return job

    async def _modify(
        self,
        kind: Kind[M],
        tenant: str,
        job_id: str,
        mutate: Callable[[M, Tx], M],
        expected_revision: int,
        as_response_bytes: bool,
    ) -> Any:
        """`modify`; with `as_response_bytes`, answered as wire.job_response of the job's bytes."""
        key = (tenant, kind.name, job_id)

        def run(tx: Tx) -> Any:
            current = tx.load(kind, tenant, job_id)
            if current is None:
                raise kind.not_found(job_id, tenant=tenant)
            revision = int(getattr(current, "revision"))  # noqa: B009
            if expected_revision and revision != expected_revision:
                raise Aborted(
                    f"{kind.display} {job_id!r} is at revision {revision}, "
                    f"not {expected_revision}: read it again and retry",
                    reason="REVISION_MISMATCH",
                    metadata={"revision": str(revision), "expected": str(expected_revision)},
                )
            new = mutate(current, tx)
            job = current if new == current else tx.put(kind, tenant, new, created=False)
            if not as_response_bytes:
                return job
            # The bytes stored (or read ahead, when nothing changed) are the job's.
            data = tx.loaded.get(key)
            return job_response(job.SerializeToString() if data is None else data)

        return await self.store.transact(run, key=key)

    # --- read -----------------------------------------------------------------

    async def get(self, kind: Kind[M], tenant: str, job_id: str) -> M:
        job = await self.store.get(kind, tenant, job_id)
        if job is None:
            raise kind.not_found(job_id, tenant=tenant)
        return job

    async def list(
        self, kind: Kind[M], tenant: str, page_size: int, page_token: str, statuses: Sequence[int]
    ) -> tuple[list[M], str]:
        wanted = sorted(set(statuses))
        if 0 in wanted:
            raise invalid("statuses", "cannot hold the unspecified status")
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after = _list_after(page_token, kind, wanted) if page_token else 0
        rows = await self.store.page(kind, tenant, wanted, after, size + 1)
        jobs = [job for _, job in rows[:size]]
        token = _list_token(kind, wanted, rows[size - 1][0]) if len(rows) > size else ""
        return jobs, token

    # --- time-driven transitions ------------------------------------------------

    async def expire_due(self) -> int:
        """Move every job whose time has come: to its kind's failed status if its lease
        ran out, else to its timed status (expire_time); return how many moved."""
        now = datetime.now(UTC).timestamp()
        moved = 0
        for kind_name, tenant, job_id in await self.store.due(now):
            kind = KINDS[kind_name]
            moved_here: Flags = []
            try:
                await self.modify(kind, tenant, job_id, self._timed(kind, tenant, moved_here))
            except NotFound:
                continue
            moved += len(moved_here)
        return moved

    def _timed(
        self, kind: Kind[Message], tenant: str, moved: Flags
    ) -> Callable[[Message, Tx], Message]:
        """The change of a job whose time-driven transition is due (none if it no longer is)."""

        def mutate(current: Message, tx: Tx) -> Message:
            moved.clear()  # the last run of the write counts (a group may run it again)
            now = tx.now.timestamp()
            new = kind.message()
            if kind.lease_ran_out(current, now):
                new.CopyFrom(current)
                kind.fail(new, lease.reason(current), tx.now)
            else:
                expires = kind.expires(current)
                if expires is None or expires > now or kind.timed is None:
                    return current  # no longer due (a write came first)
                new.CopyFrom(current)
                setattr(new, "status", kind.timed[1])  # noqa: B010
            kind.rule(new, current, self._context(tx, kind, tenant))
            moved.append(True)
            return self._leased(kind, new, new, None, tx)

        return mutate

    # --- a kind's own writes (kinds.Operation: a dataset's import run) --------------

    async def apply(self, kind: Kind[M], operation: Operation, tenant: str, request: Any) -> M:
        """Make the change `operation` describes for `request`, in one transaction."""
        lease_duration = lease.requested(request)
        operation.check(request)

        def mutate(current: M, tx: Tx) -> M:
            new = operation.change(request, current, tx.now)
            assert isinstance(new, kind.message)
            return self._leased(kind, current, new, lease_duration, tx)

        return await self.modify(
            kind, tenant, operation.job_id(request), mutate, operation.expected_revision(request)
        )

    # --- the lease (contract/lease.py) --------------------------------------------------

    def _leased(
        self,
        kind: Kind[M],
        current: M,
        new: M,
        lease_duration: duration_pb2.Duration | None,
        tx: Tx,
    ) -> M:
        """`new` with its lease kept up: renewed from now by `lease_duration` (if given)
        while the job can hold one, dropped once it cannot (settled). `current` is
        never changed: a change of the lease is made on a copy."""
        holds = kind.holds_lease(new)
        if holds and lease_duration is None:
            return new  # keeps the lease it has, if any
        if not holds and not lease.has_lease(new):
            return new
        if new is current:
            new = kind.message()
            new.CopyFrom(current)
        if holds:
            assert lease_duration is not None
            lease.renew(new, lease_duration, tx.now)
        else:
            lease.clear(new)
        return new


def _value(message: Message, path: str) -> Any:
    for name in path.split("."):
        message = getattr(message, name)
    return message


def _refuse_if_overridden(
    kind: Kind[M], current: M, resource: M, merge: Merge, paths: Sequence[str]
) -> None:
    """An update that leaves the job as it was is answered as it is (a retry, or a state
    sent again, changes nothing and succeeds), unless it asked for a value the status's
    rules put back (progress 5 on a Done map import, which stays 100): then it fails with
    FAILED_PRECONDITION, reason FIELD_SET_BY_STATUS, naming the fields, so that a runner
    with a bug hears of it instead of reading OK."""
    asked = kind.message()
    asked.CopyFrom(current)
    merge(resource, asked)
    fields = [p for p in paths if _value(asked, p) != _value(current, p)]
    if not fields:
        return
    status = kind.status_of(current)
    kept = ", ".join(f"{p} at {_value(current, p)!r}" for p in fields)
    allowed = kind.transitions.get(status, frozenset())
    settled = (
        f"; a settled job only moves on to {kind.spell_list(allowed)}"
        if status in kind.settled and allowed
        else ""
    )
    raise FailedPrecondition(
        f"this update changes nothing: {kind.display} {kind.job_id(current)!r} is "
        f"{kind.spell(status)}, and in {kind.spell(status)} its rules keep {kept}{settled}",
        reason="FIELD_SET_BY_STATUS",
        metadata={"fields": ",".join(fields), "status": kind.spell(status)},
        subject=",".join(fields),
    )


LIST_TOKENS = PageTokens(b"jobstatus.v1 page token")  # {"k", "s": the statuses, "a"}


def _list_token(kind: Kind[M], statuses: list[int], after: int) -> str:
    return LIST_TOKENS.encode(kind, {"s": statuses}, after)


def _list_after(token: str, kind: Kind[M], statuses: list[int]) -> int:
    """Where the page of a list token starts; INVALID_ARGUMENT for any other token."""
    data = LIST_TOKENS.decode(token, kind)
    if data is None or not isinstance(data.get("s"), list):
        raise invalid("page_token", "is not a page token of this list", "INVALID_PAGE_TOKEN")
    if data["s"] != statuses:
        raise invalid("page_token", "was issued for other statuses", "INVALID_PAGE_TOKEN")
    return int(data["a"])

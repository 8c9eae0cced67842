"""The four job kinds, described as data: message, lifecycle, settled statuses, rules.

The core, the store, the watch and the servicers are generic; everything that differs
between kinds lives here, in one Kind per kind: its message, lifecycle and rules, its
service (the contract's RPC and field names, declared once in the client's table,
jobstatus/kinds.py), and the writes of its own (a dataset's import
run, dataset_run.py).

One concept past 400 lines: the table is the Kind type and a row per kind with the
rules that row names, side by side so that the kinds can be compared; only the
dataset's run, a lifecycle of its own, lives apart.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from operator import attrgetter
from typing import Any, Generic, TypeVar

from google.protobuf import timestamp_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor
from google.protobuf.message import Message

from jobstatus import kinds as client_kinds  # the settled statuses, declared once
from jobstatus.spelling import both, listing, spell
from jobstatus.v1 import (
    catalog_import_pb2 as catalog,
)
from jobstatus.v1 import (
    catalog_import_pb2_grpc,
    dataset_pb2_grpc,
    delivery_pb2_grpc,
    errors_pb2,
    map_import_pb2_grpc,
)
from jobstatus.v1 import (
    dataset_pb2 as dataset,
)
from jobstatus.v1 import (
    delivery_pb2 as delivery,
)
from jobstatus.v1 import (
    map_import_pb2 as map_import,
)
from jobstatus_server.contract import dataset_run, lease
from jobstatus_server.contract.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
)
from jobstatus_server.contract.tenants import DEFAULT_TENANT

M = TypeVar("M", bound=Message)
OUTPUT_ONLY = frozenset({"revision", "create_time", "update_time", lease.EXPIRE_FIELD, lease.FIELD})


@dataclass(frozen=True)
class Context:
    """What a kind's rules may look at while a change is being made."""

    now: datetime
    delivery_cache_lifetime: timedelta
    # The jobs of the same kind and tenant in the given statuses, read in the writing transaction.
    jobs_in: Callable[[Sequence[int]], list[Message]]


Rule = Callable[[Message, Message | None, Context], None]
# Moves a job (a copy, changed in place) to its kind's failed status with a reason, at a time.
Fail = Callable[[Message, str, datetime], None]


def _no_rule(new: Message, old: Message | None, ctx: Context) -> None:
    return None


@dataclass(frozen=True)
class Operation:
    """A write a kind serves beside create and update, by an RPC of its own (a
    dataset's import run): its request names the job; the change is made in one
    transaction, as an update's is."""

    job_id: Callable[[Any], str]  # the request's job id
    expected_revision: Callable[[Any], int]  # the request's expected_revision (0: any)
    check: Callable[[Any], None]  # what the request must hold, checked before the write
    change: Callable[[Any, Any, datetime], Message]  # (request, current, now) -> new state


def _no_revision(request: Any) -> int:
    return 0


def _no_check(request: Any) -> None:
    return None


@dataclass(frozen=True)
class Kind(Generic[M]):
    name: str
    message: type[M]
    id_field: str
    status_enum: EnumDescriptor
    not_found_reason: str
    transitions: Mapping[int, frozenset[int]]
    initial: Sequence[int]  # allowed statuses at creation, the default first
    settled: frozenset[int]
    status_of: Callable[[Message], int]
    api: client_kinds.Kind[Any]  # the service: RPC and field names (the client's table)
    servicer: type  # the generated *Servicer base class of the kind's service
    # How the server fails a job by itself (its lease ran out): the kind's failed status.
    fail: Fail
    new_id: Callable[[], str] | None = None
    output_only: frozenset[str] = OUTPUT_ONLY
    # Kind-specific rules and derived fields, applied to every new state; may raise.
    rule: Rule = _no_rule
    # A status that the server leaves by itself once expire_time passes, and where to.
    timed: tuple[int, int] | None = None
    display: str = ""
    generic_update: bool = True
    # The kind's writes by RPCs of its own, by RPC name.
    operations: Mapping[str, Operation] = field(default_factory=dict)
    # What a job needs to enter a status, said to runners before they fail: in a refused
    # transition, in the README (test_kinds_rules checks that `rule` enforces each).
    needs: Mapping[int, str] = field(default_factory=dict)

    @property
    def descriptor(self) -> Descriptor:
        return self.message.DESCRIPTOR  # type: ignore[return-value]

    def job_id(self, message: Message) -> str:
        return str(getattr(message, self.id_field))

    def spell(self, status: int) -> str:
        return spell(self.status_enum, status)

    def spell_both(self, status: int) -> str:
        """`InProgress (MAP_IMPORT_STATUS_IN_PROGRESS)`: the documented spelling and the
        contract's name, which requests in protobuf JSON (grpcurl) take."""
        return both(self.status_enum, status)

    def spell_list(self, statuses: Iterable[int]) -> str:
        """Statuses in both spellings (`spell_both`), ordered by the documented one."""
        return listing(self.status_enum, statuses)

    def is_settled(self, message: Message) -> bool:
        return self.status_of(message) in self.settled

    def holds_lease(self, message: Message) -> bool:
        """Whether a job in this state can hold a lease (lease.py): one that is not
        settled (for a dataset, one whose run is in progress: status 0 is no run)."""
        status = self.status_of(message)
        return status != 0 and status not in self.settled

    def lease_ran_out(self, message: Message, now: float) -> bool:
        """Whether the job holds a lease whose deadline is `now` (POSIX time) or earlier."""
        deadline = lease.deadline(message) if self.holds_lease(message) else None
        return deadline is not None and deadline <= now

    def expires(self, message: Message) -> float | None:
        """When a job in the kind's timed status leaves it by itself (its expire_time, as
        a POSIX time); None for a job in any other status."""
        if self.timed is None or self.status_of(message) != self.timed[0]:
            return None
        if not message.HasField("expire_time"):
            return None
        stamp: timestamp_pb2.Timestamp = getattr(message, "expire_time")  # noqa: B009
        return float(stamp.seconds) + stamp.nanos / 1e9

    def due(self, message: Message) -> float | None:
        """When the next time-driven transition of `message` fires, as a POSIX time, if it
        has one: its lease's deadline while it holds one, or its timed status's expire_time."""
        due = lease.deadline(message) if self.holds_lease(message) else None
        expires = self.expires(message)
        if expires is None:
            return due
        return expires if due is None else min(due, expires)

    def not_found(self, *job_ids: str, tenant: str = "") -> NotFound:
        """The error of a job (or of several, by a watch) that does not exist: one
        message, reason and metadata for every transport. Given the caller's `tenant`,
        it says where it looked: a caller sees only its own tenant's jobs."""
        looked = (
            f" in tenant {tenant!r} (a caller sees only the jobs of its API key's tenant; "
            f"the open server's callers are tenant {DEFAULT_TENANT!r})"
            if tenant
            else ""
        )
        return NotFound(
            f"no {self.display} with {self.id_field} {', '.join(map(repr, job_ids))}{looked}",
            reason=self.not_found_reason,
            metadata={self.id_field: ",".join(job_ids)},
        )

    def check_transition(self, old: int, new: int) -> None:
        if old == new:
            return
        allowed = self.transitions.get(old, frozenset())
        if new not in allowed:
            names = sorted((self.spell(s) for s in allowed), key=str.lower)
            listed = self.spell_list(allowed) if allowed else "none: it is settled"
            needs = "; ".join(
                f"{self.spell(s)} needs {self.needs[s]}"
                for s in sorted(allowed, key=lambda s: self.spell(s).lower())
                if s in self.needs
            )
            raise FailedPrecondition(
                f"{self.display} cannot go from {self.spell(old)} to {self.spell(new)}; "
                f"allowed next statuses: {listed}" + (f" ({needs})" if needs else ""),
                reason="TRANSITION_NOT_ALLOWED",
                metadata={
                    "from": self.spell(old),
                    "to": self.spell(new),
                    "allowed": ",".join(names),
                },
                subject=f"status:{self.spell(old)}->{self.spell(new)}",
            )


def _lifecycle(enum: Mapping[str, int], table: Mapping[str, str]) -> dict[int, frozenset[int]]:
    """A transition table from `{"From": "To To"}` with the enum's value names."""
    return {enum[a]: frozenset(enum[b] for b in bs.split()) for a, bs in table.items()}


def _require(condition: bool, field_path: str, description: str, reason: str) -> None:
    if not condition:
        raise FailedPrecondition(description, reason=reason, subject=field_path)


# --- map import ------------------------------------------------------------

MS = map_import.MapImportStatus
_MAP = {
    "Draft": MS.MAP_IMPORT_STATUS_DRAFT,
    "Pending": MS.MAP_IMPORT_STATUS_PENDING,
    "Start": MS.MAP_IMPORT_STATUS_START,
    "InProgress": MS.MAP_IMPORT_STATUS_IN_PROGRESS,
    "Pause": MS.MAP_IMPORT_STATUS_PAUSE,
    "Cancel": MS.MAP_IMPORT_STATUS_CANCEL,
    "Error": MS.MAP_IMPORT_STATUS_ERROR,
    "Done": MS.MAP_IMPORT_STATUS_DONE,
    "Discovered": MS.MAP_IMPORT_STATUS_DISCOVERED,
    "Expired": MS.MAP_IMPORT_STATUS_EXPIRED,
    "Archived": MS.MAP_IMPORT_STATUS_ARCHIVED,
}


def _map_rule(new: Message, old: Message | None, ctx: Context) -> None:
    assert isinstance(new, map_import.MapImport)
    meta = new.meta_data
    if not meta.HasField("zoom_level"):
        meta.zoom_level = 1
    entering = old is None or getattr(old, "status") != new.status  # noqa: B009
    if new.status == map_import.MAP_IMPORT_STATUS_DONE:
        missing = [name for name in ("package_url", "footprint") if not getattr(meta, name)]
        _require(
            not missing,
            ",".join(f"meta_data.{m}" for m in missing),
            "a map import is Done only with meta_data.package_url and meta_data.footprint; "
            f"missing: {', '.join(missing)}",
            "DONE_REQUIRES_PACKAGE",
        )
        meta.progress = 100
    if new.status == map_import.MAP_IMPORT_STATUS_ERROR and entering:
        _require(
            bool(new.error.message),
            "error.message",
            "a map import in Error needs error.message with the reason",
            "ERROR_REQUIRES_MESSAGE",
        )
        if new.error.error_code == errors_pb2.ERROR_CODE_UNSPECIFIED:
            new.error.error_code = errors_pb2.ERROR_CODE_MAP_UNKNOWN


def _map_fail(job: Message, reason: str, now: datetime) -> None:
    assert isinstance(job, map_import.MapImport)
    job.status = map_import.MAP_IMPORT_STATUS_ERROR
    job.ClearField("error")
    job.error.message = reason  # the rule gives the code: MAP.unknown


MAP_IMPORT = Kind(
    name="map_import",
    display="map import",
    message=map_import.MapImport,
    id_field="import_request_id",
    status_enum=map_import.MapImportStatus.DESCRIPTOR,
    not_found_reason="MAP.notFound",
    transitions=_lifecycle(
        _MAP,
        {
            "Draft": "Start Cancel",
            "Discovered": "Start Done Archived",
            "Start": "Pending InProgress Done Error Cancel",
            "Pending": "InProgress Pause Error Cancel",
            "InProgress": "Done Pause Error Cancel",
            "Pause": "InProgress Error Cancel",
            "Done": "Expired Archived",
            "Expired": "Archived",
        },
    ),
    initial=(_MAP["Start"], _MAP["Draft"], _MAP["Discovered"]),
    settled=client_kinds.MAP_IMPORT.settled,
    api=client_kinds.MAP_IMPORT,
    servicer=map_import_pb2_grpc.MapImportServiceServicer,
    fail=_map_fail,
    status_of=lambda m: int(getattr(m, "status")),  # noqa: B009
    rule=_map_rule,
    timed=(_MAP["Done"], _MAP["Expired"]),
    needs={
        _MAP["Done"]: "meta_data.package_url and meta_data.footprint",
        _MAP["Error"]: "error.message",
    },
)

# --- prepared delivery -----------------------------------------------------

_DELIVERY = {
    "start": delivery.PREPARED_DELIVERY_STATUS_START,
    "inProgress": delivery.PREPARED_DELIVERY_STATUS_IN_PROGRESS,
    "done": delivery.PREPARED_DELIVERY_STATUS_DONE,
    "error": delivery.PREPARED_DELIVERY_STATUS_ERROR,
    "delete": delivery.PREPARED_DELIVERY_STATUS_DELETE,
    "pending": delivery.PREPARED_DELIVERY_STATUS_PENDING,
}


def _delivery_rule(new: Message, old: Message | None, ctx: Context) -> None:
    assert isinstance(new, delivery.PreparedDelivery)
    entering = old is None or getattr(old, "status") != new.status  # noqa: B009
    keys: set[str] = set()
    for index, artifact in enumerate(new.artifacts):
        if artifact.catalog_id and artifact.catalog_id != new.catalog_id:
            raise InvalidArgument(
                "an artifact belongs to its delivery's catalog id",
                reason="INVALID_ARGUMENT",
                violations=[
                    FieldViolation(
                        f"prepared_delivery.artifacts[{index}].catalog_id",
                        f"must be empty or {new.catalog_id!r}",
                    )
                ],
            )
        if artifact.item_key in keys:
            raise InvalidArgument(
                "item keys are unique within a delivery",
                reason="INVALID_ARGUMENT",
                violations=[
                    FieldViolation(
                        f"prepared_delivery.artifacts[{index}].item_key",
                        f"{artifact.item_key!r} appears twice",
                    )
                ],
            )
        keys.add(artifact.item_key)
        artifact.catalog_id = new.catalog_id
    total = 0
    for index, artifact in enumerate(new.artifacts):
        total += artifact.size
        if total > _INT64_MAX:  # the delivery's size is an int64 too
            raise InvalidArgument(
                f"invalid request: prepared_delivery.artifacts[{index}].size: the artifacts' "
                f"sizes add up past {_INT64_MAX}, the most a delivery's size holds",
                reason="INVALID_ARGUMENT",
                violations=[
                    FieldViolation(
                        f"prepared_delivery.artifacts[{index}].size",
                        f"the sizes up to this artifact add up past {_INT64_MAX}",
                        "OUT_OF_RANGE",
                    )
                ],
            )
    new.size = total
    new.url = ""
    if new.status == delivery.PREPARED_DELIVERY_STATUS_DONE:
        _require(
            len(new.artifacts) > 0,
            "prepared_delivery.artifacts",
            "a prepared delivery is done only with its artifacts",
            "DONE_REQUIRES_ARTIFACTS",
        )
        new.progress = 100
        gpkg = [a for a in new.artifacts if a.artifact_type.lower() == "gpkg"]
        new.url = (gpkg or list(new.artifacts))[0].url
        if entering:
            new.expire_time.FromDatetime(ctx.now + ctx.delivery_cache_lifetime)
    else:
        new.ClearField("expire_time")
    if new.status == delivery.PREPARED_DELIVERY_STATUS_ERROR and entering:
        _require(
            new.error.error_code != errors_pb2.ERROR_CODE_UNSPECIFIED,
            "prepared_delivery.error.error_code",
            "a prepared delivery in error needs error.error_code",
            "ERROR_REQUIRES_CODE",
        )
    if new.status == delivery.PREPARED_DELIVERY_STATUS_START and entering and old is not None:
        new.ClearField("error")
        new.progress = 0


def _delivery_fail(job: Message, reason: str, now: datetime) -> None:
    assert isinstance(job, delivery.PreparedDelivery)
    job.status = delivery.PREPARED_DELIVERY_STATUS_ERROR
    job.error.CopyFrom(
        errors_pb2.Error(error_code=errors_pb2.ERROR_CODE_DELIVERY_UNKNOWN, message=reason)
    )


DELIVERY = Kind(
    name="prepared_delivery",
    display="prepared delivery",
    message=delivery.PreparedDelivery,
    id_field="catalog_id",
    status_enum=delivery.PreparedDeliveryStatus.DESCRIPTOR,
    not_found_reason="DELIVERY.notFound",
    transitions=_lifecycle(
        _DELIVERY,
        {
            "pending": "start inProgress error",
            "start": "inProgress done error",
            "inProgress": "done error",
            "done": "delete error",
            "error": "start",
            "delete": "start",
        },
    ),
    initial=(_DELIVERY["start"], _DELIVERY["pending"]),
    settled=client_kinds.DELIVERY.settled,
    api=client_kinds.DELIVERY,
    servicer=delivery_pb2_grpc.DeliveryServiceServicer,
    fail=_delivery_fail,
    status_of=lambda m: int(getattr(m, "status")),  # noqa: B009
    output_only=OUTPUT_ONLY | {"size", "url", "expire_time"},
    rule=_delivery_rule,
    timed=(_DELIVERY["done"], _DELIVERY["delete"]),
    needs={
        _DELIVERY["done"]: "artifacts (at least one)",
        _DELIVERY["error"]: "error.error_code",
    },
)

# --- catalog import --------------------------------------------------------

_CATALOG = {
    "WAITING": catalog.CATALOG_IMPORT_STATUS_WAITING,
    "BLOCKED": catalog.CATALOG_IMPORT_STATUS_BLOCKED,
    "IN_PROGRESS": catalog.CATALOG_IMPORT_STATUS_IN_PROGRESS,
    "SUCCESS": catalog.CATALOG_IMPORT_STATUS_SUCCESS,
    "FAILURE": catalog.CATALOG_IMPORT_STATUS_FAILURE,
    "ABORTED": catalog.CATALOG_IMPORT_STATUS_ABORTED,
}


_INT64_MAX = 2**63 - 1


def _is_int64(text: str) -> bool:
    """Whether `text` is the decimal spelling of a non-negative int64."""
    return text.isascii() and text.isdigit() and str(int(text)) == text and int(text) <= _INT64_MAX


def _catalog_rule(new: Message, old: Message | None, ctx: Context) -> None:
    assert isinstance(new, catalog.CatalogImport)
    if old is None:
        # The contract's pattern admits any run of up to 19 digits; an id is an int64
        # in its one decimal spelling, so the REST path and the RPCs name it alike.
        if new.id and not _is_int64(new.id):
            raise InvalidArgument(
                "an import id is an int64 in decimal, without leading zeros",
                reason="INVALID_ARGUMENT",
                violations=[
                    FieldViolation(
                        "catalog_import.id",
                        f"must be a decimal int64 from 0 to {_INT64_MAX} without leading zeros",
                        "PATTERN",
                    )
                ],
            )
        if new.type == catalog.CATALOG_IMPORT_TYPE_UNSPECIFIED:
            raise InvalidArgument(
                "an import needs its type",
                reason="INVALID_ARGUMENT",
                violations=[FieldViolation("catalog_import.type", "is required", "REQUIRED")],
            )
        if new.status == catalog.CATALOG_IMPORT_STATUS_WAITING:
            running = ctx.jobs_in([catalog.CATALOG_IMPORT_STATUS_IN_PROGRESS])
            if any(getattr(job, "type") == new.type for job in running):  # noqa: B009
                new.status = catalog.CATALOG_IMPORT_STATUS_BLOCKED
    elif getattr(old, "type") != new.type:  # noqa: B009
        raise InvalidArgument(
            "an import's type cannot change",
            reason="INVALID_ARGUMENT",
            violations=[FieldViolation("catalog_import.type", "cannot change", "IMMUTABLE")],
        )


def _new_catalog_id() -> str:
    return str(secrets.randbelow(2**63 - 10**18) + 10**18)


def _catalog_fail(job: Message, reason: str, now: datetime) -> None:
    assert isinstance(job, catalog.CatalogImport)
    job.status = catalog.CATALOG_IMPORT_STATUS_FAILURE
    job.message = reason


CATALOG_IMPORT = Kind(
    name="catalog_import",
    display="catalog import",
    message=catalog.CatalogImport,
    id_field="id",
    status_enum=catalog.CatalogImportStatus.DESCRIPTOR,
    not_found_reason="IMPORT_NOT_FOUND",
    transitions=_lifecycle(
        _CATALOG,
        {
            "WAITING": "IN_PROGRESS BLOCKED ABORTED",
            "BLOCKED": "WAITING IN_PROGRESS ABORTED FAILURE",
            "IN_PROGRESS": "SUCCESS FAILURE ABORTED",
        },
    ),
    initial=(_CATALOG["WAITING"],),
    settled=client_kinds.CATALOG_IMPORT.settled,
    api=client_kinds.CATALOG_IMPORT,
    servicer=catalog_import_pb2_grpc.CatalogImportServiceServicer,
    fail=_catalog_fail,
    status_of=lambda m: int(getattr(m, "status")),  # noqa: B009
    new_id=_new_catalog_id,
    rule=_catalog_rule,
)

# --- dataset import --------------------------------------------------------


def _dataset_status(message: Message) -> int:
    assert isinstance(message, dataset.Dataset)
    return int(message.latest_run.status) if message.HasField("latest_run") else 0


DATASET = Kind(
    name="dataset",
    display="dataset",
    message=dataset.Dataset,
    id_field="dataset_id",
    status_enum=dataset.DatasetImportStatus.DESCRIPTOR,
    not_found_reason="DATASET_NOT_FOUND",
    transitions={},
    initial=(0,),
    settled=client_kinds.DATASET.settled,
    api=client_kinds.DATASET,
    servicer=dataset_pb2_grpc.DatasetServiceServicer,
    fail=dataset_run.fail_run,
    status_of=_dataset_status,
    new_id=lambda: str(uuid.uuid4()),
    output_only=OUTPUT_ONLY | {"latest_run", "start_request_id"},
    generic_update=False,
    operations={
        "StartDatasetImport": Operation(
            job_id=attrgetter("dataset_id"),
            expected_revision=_no_revision,
            check=_no_check,
            change=dataset_run.start_run,
        ),
        "UpdateDatasetImport": Operation(
            job_id=attrgetter("dataset_id"),
            expected_revision=attrgetter("expected_revision"),
            check=dataset_run.check_step_update,
            change=dataset_run.update_step,
        ),
    },
)

KINDS: dict[str, Kind[Any]] = {k.name: k for k in (MAP_IMPORT, DELIVERY, DATASET, CATALOG_IMPORT)}

"""Typed domain errors and the one table that maps them to gRPC statuses.

Domain code raises these; the gRPC layer turns them into a google.rpc.Status
with ErrorInfo, BadRequest or PreconditionFailure details. Nothing else
reaches a caller: any other exception becomes INTERNAL with no traceback.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2

DOMAIN = "jobstatus.v1"

# How a caller passes an API key, said wherever a call lacks one (API_KEY_MISSING).
HOW_TO_PASS_A_KEY = (
    "send one as x-api-key metadata or authorization: Bearer <key> (gRPC), or as the "
    "X-Api-Key or Authorization: Bearer header (HTTP); the jobstatus command takes "
    "--api-key or JOBSTATUS_API_KEY; `jobstatus-server keys create` makes one"
)


def _pack(detail: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(detail)
    return packed


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str
    reason: str = "INVALID_FIELD"


@dataclass
class JobStatusError(Exception):
    """A failure a caller can act on. `reason` is the documented error code where one fits."""

    message: str
    reason: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    code = grpc.StatusCode.UNKNOWN
    http_status = 500

    def __str__(self) -> str:
        return self.message

    def details(self) -> list[any_pb2.Any]:
        info = error_details_pb2.ErrorInfo(
            reason=self.reason, domain=DOMAIN, metadata=self.metadata
        )
        return [_pack(info)]

    def to_status(self) -> status_pb2.Status:
        return status_pb2.Status(
            code=self.code.value[0], message=self.message, details=self.details()
        )


@dataclass
class InvalidArgument(JobStatusError):
    violations: Sequence[FieldViolation] = ()
    code = grpc.StatusCode.INVALID_ARGUMENT
    http_status = 400

    def details(self) -> list[any_pb2.Any]:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description, reason=v.reason
                )
                for v in self.violations
            ]
        )
        return [*super().details(), _pack(bad)]


@dataclass
class NotFound(JobStatusError):
    code = grpc.StatusCode.NOT_FOUND
    http_status = 404


@dataclass
class AlreadyExists(JobStatusError):
    code = grpc.StatusCode.ALREADY_EXISTS
    http_status = 409


@dataclass
class FailedPrecondition(JobStatusError):
    """A request the job's current state does not allow, such as a forbidden transition."""

    subject: str = ""
    code = grpc.StatusCode.FAILED_PRECONDITION
    http_status = 409

    def details(self) -> list[any_pb2.Any]:
        failure = error_details_pb2.PreconditionFailure(
            violations=[
                error_details_pb2.PreconditionFailure.Violation(
                    type=self.reason, subject=self.subject, description=self.message
                )
            ]
        )
        return [*super().details(), _pack(failure)]


@dataclass
class Aborted(JobStatusError):
    code = grpc.StatusCode.ABORTED
    http_status = 409


@dataclass
class OutOfRange(JobStatusError):
    code = grpc.StatusCode.OUT_OF_RANGE
    http_status = 410


@dataclass
class ResourceExhausted(JobStatusError):
    retry_after: float = 0.0
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    http_status = 429

    def details(self) -> list[any_pb2.Any]:
        out = super().details()
        if self.retry_after > 0:
            delay = duration_pb2.Duration()
            delay.FromNanoseconds(int(self.retry_after * 1e9))
            out.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
        return out


@dataclass
class Unavailable(JobStatusError):
    code = grpc.StatusCode.UNAVAILABLE
    http_status = 503


@dataclass
class Unauthenticated(JobStatusError):
    code = grpc.StatusCode.UNAUTHENTICATED
    http_status = 401


@dataclass
class PermissionDenied(JobStatusError):
    code = grpc.StatusCode.PERMISSION_DENIED
    http_status = 403


def invalid(path: str, description: str, reason: str = "INVALID_FIELD") -> InvalidArgument:
    """INVALID_ARGUMENT for one field, with its violation."""
    return InvalidArgument(
        f"invalid request: {path}: {description}",
        reason="INVALID_ARGUMENT",
        violations=[FieldViolation(path, description, reason)],
    )


def internal_status() -> status_pb2.Status:
    """The status for an unexpected failure: no traceback, no internals."""
    return status_pb2.Status(
        code=code_pb2.INTERNAL, message="internal error; the server log has the details"
    )


def one_line(text: str, limit: int = 300) -> str:
    """`text` fit for one log line: control characters escaped, at most `limit` long."""
    shown = text if text.isprintable() else text.encode("unicode_escape").decode("ascii")
    return shown if len(shown) <= limit else shown[:limit] + "..."


class RefusalLog:
    """One line per refused request, at INFO, and at most `burst` lines per `interval`
    seconds: a flood of bad requests cannot flood the log. The lines left out are
    counted, and the count is logged with the next line after the interval."""

    def __init__(self, logger: logging.Logger, burst: int = 20, interval: float = 10.0) -> None:
        self.logger = logger
        self.burst = burst
        self.interval = interval
        self._lock = threading.Lock()
        self._window_end = 0.0
        self._logged = 0
        self.dropped = 0

    def refused(self, where: str, error: JobStatusError) -> None:
        self.line(
            "%s answered %s (%s): %s", where, error.code.name, error.reason, one_line(error.message)
        )

    def line(self, text: str, *args: object) -> None:
        if not self.logger.isEnabledFor(logging.INFO):
            return
        now = time.monotonic()
        with self._lock:
            dropped = 0
            if now >= self._window_end:
                dropped, self.dropped = self.dropped, 0
                self._window_end = now + self.interval
                self._logged = 0
            if self._logged >= self.burst:
                self.dropped += 1
                return
            self._logged += 1
        if dropped:
            self.logger.info(
                "%d more refused requests were not logged (at most %d lines per %g s)",
                dropped,
                self.burst,
                self.interval,
            )
        self.logger.info(text, *args)


refusals = RefusalLog(logging.getLogger("jobstatus_server.refused"))


class _ClientFaults(logging.Filter):
    """uvicorn's warnings about requests it could not parse are the caller's fault, not
    the server's: they go through the refusal log (INFO, rate-limited) instead."""

    WORDS = ("Invalid HTTP request received.", "Unsupported upgrade request.")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR and record.getMessage() in self.WORDS:
            refusals.line("HTTP refused a request uvicorn could not parse: %s", record.getMessage())
            return False
        return True


def quiet_client_faults() -> None:
    """Route uvicorn's per-request warnings about bad requests through `refusals`."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _ClientFaults) for f in logger.filters):
        logger.addFilter(_ClientFaults())

"""JobStatusError: one error type for every failed call, with the server's details decoded.

The server answers a failure with a google.rpc.Status whose details carry an
ErrorInfo (the reason: a documented error code such as `MAP.notFound`, or one
of jobstatus's own such as `TRANSITION_NOT_ALLOWED`), a BadRequest (field
violations), a PreconditionFailure or a RetryInfo. JobStatusError exposes them
as plain attributes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import cast

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status


class JobStatusError(Exception):
    """A failed jobstatus call.

    `code` is the gRPC status code; `reason`, `domain` and `metadata` come from
    the ErrorInfo detail; `field_violations` from BadRequest as (field,
    description); `precondition_violations` from PreconditionFailure as (type,
    subject, description); `retry_delay` (seconds) from RetryInfo; `details` is
    the raw list of the google.rpc.Status details.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str = "",
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
        field_violations: Sequence[tuple[str, str]] = (),
        precondition_violations: Sequence[tuple[str, str, str]] = (),
        retry_delay: float | None = None,
        details: Sequence[any_pb2.Any] = (),
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.metadata: dict[str, str] = dict(metadata or {})
        self.field_violations = list(field_violations)
        self.precondition_violations = list(precondition_violations)
        self.retry_delay = retry_delay
        self.details = list(details)

    def __str__(self) -> str:
        reason = f" {self.reason}" if self.reason and self.reason != self.code.name else ""
        return f"{self.code.name}{reason}: {self.message}"

    @classmethod
    def from_status(cls, status: status_pb2.Status) -> JobStatusError:
        """The error that a google.rpc.Status describes."""
        code = _CODES.get(status.code, grpc.StatusCode.UNKNOWN)
        return _build(code, status.message, status.details)

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> JobStatusError:
        """The error of a failed call (grpc.RpcError or grpc.aio.AioRpcError)."""
        if not callable(getattr(error, "code", None)):  # a bare RpcError carries no status
            return JobStatusError(grpc.StatusCode.UNKNOWN, str(error) or "unknown RPC error")
        code = error.code()
        message = error.details() or ""
        try:
            status = rpc_status.from_call(cast(grpc.Call, error))
        except ValueError:  # details inconsistent with the call's status: trust the call
            status = None
        return _build(code, message, status.details if status is not None else ())


class DeadlineExceeded(JobStatusError, TimeoutError):
    """DEADLINE_EXCEEDED: a call, watch() or wait() outlived its timeout.

    It is both a JobStatusError and a TimeoutError, so either except clause works.
    """


_CODES = {code.value[0]: code for code in grpc.StatusCode}


def _build(code: grpc.StatusCode, message: str, details: Sequence[any_pb2.Any]) -> JobStatusError:
    info = error_details_pb2.ErrorInfo()
    bad = error_details_pb2.BadRequest()
    precondition = error_details_pb2.PreconditionFailure()
    retry = error_details_pb2.RetryInfo()
    has_info = has_retry = False
    for detail in details:
        name = detail.TypeName()
        if name == info.DESCRIPTOR.full_name and not has_info:
            has_info = detail.Unpack(info)
        elif name == bad.DESCRIPTOR.full_name:
            part = error_details_pb2.BadRequest()
            detail.Unpack(part)
            bad.MergeFrom(part)
        elif name == precondition.DESCRIPTOR.full_name:
            failure = error_details_pb2.PreconditionFailure()
            detail.Unpack(failure)
            precondition.MergeFrom(failure)
        elif name == retry.DESCRIPTOR.full_name:
            has_retry = detail.Unpack(retry)
    error_type = DeadlineExceeded if code == grpc.StatusCode.DEADLINE_EXCEEDED else JobStatusError
    return error_type(
        code,
        message,
        reason=info.reason,
        domain=info.domain,
        metadata=info.metadata,
        field_violations=[(v.field, v.description) for v in bad.field_violations],
        precondition_violations=[
            (v.type, v.subject, v.description) for v in precondition.violations
        ],
        retry_delay=retry.retry_delay.ToTimedelta().total_seconds() if has_retry else None,
        details=details,
    )

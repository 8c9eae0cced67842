"""Call an RPC that must fail, and read the google.rpc.Status details it carries."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


@dataclass
class Failure:
    """A failed call: its code and message, and the typed details of its status."""

    code: grpc.StatusCode
    message: str
    info: error_details_pb2.ErrorInfo | None = None
    bad_request: error_details_pb2.BadRequest | None = None
    precondition: error_details_pb2.PreconditionFailure | None = None
    retry: error_details_pb2.RetryInfo | None = None
    other_details: list[str] = field(default_factory=list)

    @property
    def fields(self) -> list[str]:
        """The fields named by the BadRequest field violations."""
        if self.bad_request is None:
            return []
        return [v.field for v in self.bad_request.field_violations]

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self.info.metadata) if self.info is not None else {}


def failure_of(error: grpc.RpcError) -> Failure:
    assert isinstance(error, grpc.Call), error
    status = rpc_status.from_call(error)
    result = Failure(code=error.code(), message=error.details() or "")
    if status is None:
        return result
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            result.info = error_details_pb2.ErrorInfo()
            detail.Unpack(result.info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            result.bad_request = error_details_pb2.BadRequest()
            detail.Unpack(result.bad_request)
        elif detail.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
            result.precondition = error_details_pb2.PreconditionFailure()
            detail.Unpack(result.precondition)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            result.retry = error_details_pb2.RetryInfo()
            detail.Unpack(result.retry)
        else:
            result.other_details.append(detail.type_url)
    return result


def fails(call: Callable[[], object]) -> Failure:
    """Run `call`, which must raise grpc.RpcError; return what the error says."""
    try:
        result = call()
    except grpc.RpcError as error:
        return failure_of(error)
    raise AssertionError(f"the call succeeded with {result!r}; it was expected to fail")

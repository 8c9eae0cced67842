"""One interceptor for every jobstatus RPC: authenticate the caller, validate the
request, map errors to statuses.

The caller's API key (`x-api-key` metadata or `authorization: Bearer`) is checked
before anything else, and the scope the method needs (auth.py); the servicer then
finds the caller's tenant in `auth.CALLER`. Servicers raise typed errors
(errors.py) and never touch the status; this is the only place where an
exception becomes a gRPC status, so nothing unmapped leaks: any other exception
is logged and answered INTERNAL without details.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import Message
from google.rpc import status_pb2
from grpc_status import rpc_status

from jobstatus_server.auth import CALLER, Authenticator, bearer, method_scope
from jobstatus_server.errors import JobStatusError, internal_status
from jobstatus_server.metrics import RPC_SECONDS, RPCS
from jobstatus_server.validation import validate

log = logging.getLogger(__name__)
PREFIX = "/jobstatus.v1."
CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def _status_of(error: BaseException, method: str) -> status_pb2.Status:
    if isinstance(error, JobStatusError):
        status: status_pb2.Status = error.to_status()
        return status
    log.error("%s failed", method, exc_info=error)
    internal: status_pb2.Status = internal_status()
    return internal


async def _abort(context: grpc.aio.ServicerContext[Any, Any], status: status_pb2.Status) -> None:
    converted = rpc_status.to_status(status)
    await context.abort(converted.code, converted.details, converted.trailing_metadata)


async def _authenticate(
    auth: Authenticator, context: grpc.aio.ServicerContext[Any, Any], scope: str
) -> None:
    """Find the caller, check the method's scope, and make the caller the servicer's."""
    metadata = context.invocation_metadata() or ()
    values = {key.lower(): value for key, value in metadata if isinstance(value, str)}
    caller = await auth.authenticate(values.get("x-api-key"), bearer(values.get("authorization")))
    auth.authorize(caller, scope)
    CALLER.set(caller)


class ErrorInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(self, auth: Authenticator) -> None:
        self.auth = auth

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or not method.startswith(PREFIX):
            return handler
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _unary(handler.unary_unary, method, self.auth),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _stream(handler.unary_stream, method, self.auth),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


def _unary(inner: Any, method: str, auth: Authenticator) -> Any:
    name = method.rsplit("/", 1)[-1]
    scope = method_scope(method)
    seconds = RPC_SECONDS.labels(name)
    ok = RPCS.labels(name, "OK")

    async def call(request: Message, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        started = time.perf_counter()
        try:
            await _authenticate(auth, context, scope)
            validate(request)
            response = await inner(request, context)
            ok.inc()
            seconds.observe(time.perf_counter() - started)
            return response
        except Exception as error:  # every failure becomes a status, none a traceback
            status = _status_of(error, method)
        RPCS.labels(name, CODE_NAMES.get(status.code, "UNKNOWN")).inc()
        seconds.observe(time.perf_counter() - started)
        await _abort(context, status)

    return call


def _stream(inner: Any, method: str, auth: Authenticator) -> Any:
    if not inspect.isasyncgenfunction(inner):
        return _unary(inner, method, auth)  # a streaming handler that writes with context.write
    scope = method_scope(method)

    async def call(
        request: Message, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        try:
            await _authenticate(auth, context, scope)
            validate(request)
            async for response in inner(request, context):
                yield response
            return
        except Exception as error:
            status = _status_of(error, method)
        await _abort(context, status)

    return call

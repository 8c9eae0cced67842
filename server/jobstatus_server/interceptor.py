"""One interceptor for every jobstatus RPC: validate the request, map errors to statuses.

Servicers raise typed errors (errors.py) and never touch the status; this is
the only place where an exception becomes a gRPC status, so nothing unmapped
leaks: any other exception is logged and answered INTERNAL without details.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import Message
from google.rpc import status_pb2
from grpc_status import rpc_status

from jobstatus_server.errors import JobStatusError, internal_status
from jobstatus_server.validation import validate

log = logging.getLogger(__name__)
PREFIX = "/jobstatus.v1."


def _status_of(error: BaseException, method: str) -> status_pb2.Status:
    if isinstance(error, JobStatusError):
        return error.to_status()
    log.error("%s failed", method, exc_info=error)
    return internal_status()


async def _abort(context: grpc.aio.ServicerContext[Any, Any], status: status_pb2.Status) -> None:
    await context.abort_with_status(rpc_status.to_status(status))


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or not method.startswith(PREFIX):
            return handler
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _unary(handler.unary_unary, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _stream(handler.unary_stream, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


def _unary(inner: Any, method: str) -> Any:
    async def call(request: Message, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            validate(request)
            return await inner(request, context)
        except Exception as error:  # every failure becomes a status, none a traceback
            status = _status_of(error, method)
        await _abort(context, status)

    return call


def _stream(inner: Any, method: str) -> Any:
    if not inspect.isasyncgenfunction(inner):
        return _unary(inner, method)  # a streaming handler that writes with context.write

    async def call(
        request: Message, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        try:
            validate(request)
            async for response in inner(request, context):
                yield response
            return
        except Exception as error:
            status = _status_of(error, method)
        await _abort(context, status)

    return call

"""Server reflection that finds every symbol, so `grpcurl describe` works for each
service, method, message, field, enum and enum value.

grpc_reflection asks the descriptor pool for the file containing a symbol. The
upb pool (protobuf's default runtime) answers for services, messages and enums
but not for a method (`jobstatus.v1.MapImportService.WatchMapImportStatus`),
a field or an enum value: grpcurl then fails with "Symbol not found". The pool
below answers those from their parent's descriptor, and delegates everything
else to the default pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from jobstatus_server.grpc_api.interceptor import GenericOnly


class SymbolPool:
    """A descriptor pool whose FindFileContainingSymbol also finds members."""

    def __init__(self, pool: Any = None) -> None:
        self._pool = pool if pool is not None else descriptor_pool.Default()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)

    def FindFileContainingSymbol(self, symbol: str) -> FileDescriptor:
        try:
            found: FileDescriptor = self._pool.FindFileContainingSymbol(symbol)
            return found
        except KeyError:
            pass
        parent, _, member = symbol.rpartition(".")
        if parent:
            for find, members in (
                (self._pool.FindServiceByName, "methods_by_name"),
                (self._pool.FindMessageTypeByName, "fields_by_name"),
                (self._pool.FindMessageTypeByName, "oneofs_by_name"),
                (self._pool.FindEnumTypeByName, "values_by_name"),
            ):
                try:
                    descriptor = find(parent)
                except KeyError:
                    continue
                if member in getattr(descriptor, members):
                    file: FileDescriptor = descriptor.file
                    return file
        raise KeyError(symbol)


def enable(service_names: Sequence[str], server: grpc.aio.Server) -> None:
    """Serve reflection for `service_names` (include reflection's own) on `server`, as
    reflection.enable_server_reflection does for a grpc.aio server, registered as a
    generic handler only (interceptor.GenericOnly)."""
    pool: Any = SymbolPool()  # duck-typed: only the lookups reflection makes
    # reflection.aio is public (in the module's __all__); its type stubs do not list it.
    aio: Any = reflection.aio  # type: ignore[attr-defined]
    servicer = aio.ReflectionServicer(tuple(service_names), pool=pool)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, GenericOnly(server))

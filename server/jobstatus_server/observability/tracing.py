"""OpenTelemetry tracing, off unless the standard OTEL_* variables switch it on.

Tracing is on when OTEL_TRACES_EXPORTER names an exporter (`otlp`, `otlp_proto_http`
or `console`; a comma-separated list for several) and OTEL_SDK_DISABLED is not `true`.
Then the server makes

- a span per RPC (kind SERVER, named by its gRPC path, such as
  `/jobstatus.v1.MapImportService/GetMapImportStatus`: opentelemetry-instrumentation-grpc's
  aio server interceptor),
- a span per HTTP request (kind SERVER, named by its method: opentelemetry-instrumentation-asgi
  around the whole app),
- a child span per store operation (`store.get`, `store.transact`, ...) of a traced
  request,

each continuing the caller's trace context (the `traceparent` gRPC metadata or HTTP
header; OTEL_PROPAGATORS picks other formats). The SDK reads the rest of its standard
variables itself: OTEL_SERVICE_NAME (default `jobstatus`), OTEL_RESOURCE_ATTRIBUTES,
OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG, OTEL_BSP_* (the batch processor), and
OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT and _HEADERS for the
OTLP exporter, which speaks http/protobuf.

When tracing is off, nothing of it is imported or installed: no interceptor, no
middleware, no wrapper around the store; the serving path is the same code as without
this module. The OpenTelemetry packages are the `tracing` extra of jobstatus-server.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any, TypeVar, cast

if TYPE_CHECKING:
    import grpc
    from opentelemetry.sdk.trace import TracerProvider

T = TypeVar("T")

# OTLP names the protocol-neutral exporter; this server ships the http/protobuf one.
ALIASES = {"otlp": "otlp_proto_http"}
HTTP_PROTOBUF = "http/protobuf"


class TracingError(Exception):
    """Tracing is switched on but cannot work as configured; the message says why."""


def exporter_names(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The exporters OTEL_TRACES_EXPORTER names; none means tracing is off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = [n.strip().lower() for n in environ.get("OTEL_TRACES_EXPORTER", "").split(",")]
    return [n for n in names if n and n != "none"]


def enabled(environ: Mapping[str, str] = os.environ) -> bool:
    return bool(exporter_names(environ))


@dataclass
class Tracing:
    provider: TracerProvider

    def grpc_interceptors(self) -> list[grpc.aio.ServerInterceptor[Any, Any]]:
        from opentelemetry.instrumentation.grpc import aio_server_interceptor

        interceptor: grpc.aio.ServerInterceptor[Any, Any]
        interceptor = aio_server_interceptor(tracer_provider=self.provider)  # type: ignore[no-untyped-call]
        return [interceptor]

    def wrap_http(self, app: Any) -> Any:
        """The ASGI app with a span per request around it (none for /healthz and
        /metrics unless OTEL_PYTHON_ASGI_EXCLUDED_URLS says otherwise), without the
        middleware's extra span per ASGI send and receive."""
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        return OpenTelemetryMiddleware(
            app,
            excluded_urls=os.environ.get("OTEL_PYTHON_ASGI_EXCLUDED_URLS", "/healthz,/metrics"),
            tracer_provider=self.provider,
            exclude_spans=["receive", "send"],
        )

    def traced(self, target: T, name: str, attributes: Mapping[str, str]) -> T:
        """`target` seen through a Traced proxy: a child span named `name.method` around
        each of its public coroutine methods (but start and close), made only inside a
        traced request, so background work (compaction, timers, health checks) makes no
        root spans of its own. Composition hands the proxy to the target's users; the
        target itself is not changed."""
        return cast(
            T,
            Traced(target, self.provider.get_tracer(f"jobstatus_server.{name}"), name, attributes),
        )

    def shutdown(self) -> None:
        """Export what is left (the batch processor's queue) and stop."""
        self.provider.shutdown()


class Traced:
    """A proxy of one object whose public coroutine methods run in a child span.

    Every other attribute, read or set, is the target's own."""

    def __init__(self, target: Any, tracer: Any, name: str, attributes: Mapping[str, str]) -> None:
        object.__setattr__(self, "_target", target)
        methods = {}
        for method_name, method in inspect.getmembers(target, inspect.iscoroutinefunction):
            if not method_name.startswith("_") and method_name not in ("start", "close"):
                methods[method_name] = _span_around(
                    method, tracer, f"{name}.{method_name}", dict(attributes)
                )
        object.__setattr__(self, "_methods", methods)

    def __getattr__(self, name: str) -> Any:
        methods: dict[str, Any] = object.__getattribute__(self, "_methods")
        if name in methods:
            return methods[name]
        return getattr(object.__getattribute__(self, "_target"), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(object.__getattribute__(self, "_target"), name, value)


def _span_around(
    method: Callable[..., Any], tracer: Any, span_name: str, attributes: dict[str, str]
) -> Callable[..., Any]:
    from opentelemetry import trace

    @functools.wraps(method)
    async def call(*args: Any, **kwargs: Any) -> Any:
        if not trace.get_current_span().is_recording():
            return await method(*args, **kwargs)
        with tracer.start_as_current_span(
            span_name, kind=trace.SpanKind.INTERNAL, attributes=attributes
        ):
            return await method(*args, **kwargs)

    return call


def _exporter(name: str, environ: Mapping[str, str]) -> Any:
    name = ALIASES.get(name, name)
    if name == "otlp_proto_http":
        protocol = environ.get(
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", HTTP_PROTOBUF),
        )
        if protocol != HTTP_PROTOBUF:
            raise TracingError(
                f"OTEL_EXPORTER_OTLP_PROTOCOL {protocol!r}: this server exports OTLP "
                f"as {HTTP_PROTOBUF} only"
            )
    group = "opentelemetry_traces_exporter"
    found = metadata.entry_points(group=group, name=name)
    if not found:
        known = sorted({*ALIASES, *metadata.entry_points(group=group).names})
        raise TracingError(
            f"OTEL_TRACES_EXPORTER {name!r} is not an installed exporter "
            f"({', '.join(known) or 'none installed'})"
        )
    return next(iter(found)).load()()


def setup(environ: Mapping[str, str] = os.environ) -> Tracing | None:
    """Tracing as the OTEL_* variables ask, or None when they leave it off."""
    names = exporter_names(environ)
    if not names:
        return None
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise TracingError(
            "OTEL_TRACES_EXPORTER is set but OpenTelemetry is not installed: "
            "pip install 'jobstatus-server[tracing]'"
        ) from None
    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win; jobstatus is the default name.
    named = "OTEL_SERVICE_NAME" in environ or "service.name=" in environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    resource = Resource.create({} if named else {SERVICE_NAME: "jobstatus"})
    provider = TracerProvider(resource=resource)  # the sampler from OTEL_TRACES_SAMPLER
    for name in names:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name, environ)))
    trace.set_tracer_provider(provider)
    return Tracing(provider)

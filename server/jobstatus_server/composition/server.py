"""The server: gRPC services, health, reflection, timers, and a graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from jobstatus_server.access.auth import Authenticator, is_loopback
from jobstatus_server.access.limits import CallerLimits
from jobstatus_server.composition.config import Settings
from jobstatus_server.contract.errors import Unavailable, quiet_client_faults
from jobstatus_server.grpc_api import reflect
from jobstatus_server.grpc_api.counts import SERVICE_NAME as COUNT_SERVICE_NAME
from jobstatus_server.grpc_api.counts import add_count_service
from jobstatus_server.grpc_api.interceptor import GenericOnly, Rpc
from jobstatus_server.grpc_api.services import SERVICE_NAMES, add_services
from jobstatus_server.http_api import dashboard, openapi
from jobstatus_server.http_api.app import (
    HttpServer,
    http_server,
    limited_protocol,
    listen,
    make_app,
)
from jobstatus_server.http_api.counts import CountsRoute
from jobstatus_server.http_api.fast_path import CallerGuard, DocumentedGets
from jobstatus_server.http_api.history import HistoryRoute
from jobstatus_server.http_api.rest import Limits, Rest
from jobstatus_server.http_api.sse import Watch
from jobstatus_server.observability import tracing
from jobstatus_server.observability.metrics import HUB_LAG, STORAGE_UP, refresh_on_scrape
from jobstatus_server.state.store import Store
from jobstatus_server.state.view import View
from jobstatus_server.state.watch import Hub, WatchSettings
from jobstatus_server.usecases.counts import refresh_jobs_gauge
from jobstatus_server.usecases.jobs import Core
from jobstatus_server.usecases.retention import Retention

log = logging.getLogger(__name__)
# Every jobstatus service: each has its health status and is listed by reflection.
SERVICES = (*SERVICE_NAMES, COUNT_SERVICE_NAME)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Refused(Exception):
    """The server will not start as configured; the message says why."""


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as error:
        raise Refused(f"cannot read {path}: {error.strerror}") from None


def check_tls(settings: Settings) -> None:
    if bool(settings.tls_cert) != bool(settings.tls_key):
        raise Refused("--tls-cert and --tls-key go together")
    if settings.tls_client_ca and not settings.tls_cert:
        raise Refused("--tls-client-ca needs --tls-cert and --tls-key")


def grpc_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS for the gRPC listener from the certificate files, if configured."""
    if not settings.tls_cert:
        return None
    client_ca = _read(settings.tls_client_ca) if settings.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(_read(settings.tls_key), _read(settings.tls_cert))],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def grpc_options(settings: Settings) -> list[tuple[str, int]]:
    return [
        # Ping idle clients, and accept their pings on idle watch streams.
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_ping_strikes", 0),
        # Long streams move between replicas: connections age out, with a finite grace.
        ("grpc.max_connection_age_ms", int(settings.max_connection_age * 1000)),
        ("grpc.max_connection_age_grace_ms", int(settings.max_connection_age_grace * 1000)),
        # Many watchers open at once: the defaults refuse bursts beyond 1,000.
        ("grpc.server.max_pending_requests", 20_000),
        ("grpc.server.max_pending_requests_hard_limit", 40_000),
        # Twice the limit: the method wrapper refuses (and counts) what lies between.
        ("grpc.max_receive_message_length", 2 * settings.max_request_bytes),
        # A second server on a taken port fails to start (gRPC's default SO_REUSEPORT
        # would let it share the port, the kernel splitting connections between two
        # servers and perhaps two databases).
        ("grpc.so_reuseport", 0),
    ]


@dataclass
class Server:
    settings: Settings
    store: Store = field(init=False)
    core: Core = field(init=False)
    hub: Hub = field(init=False)
    view: View = field(init=False)
    grpc_server: grpc.aio.Server = field(init=False)
    auth: Authenticator = field(init=False)
    health: health_aio.HealthServicer = field(init=False)
    limits: CallerLimits = field(init=False)
    port: int = 0
    http: HttpServer | None = None
    counts_route: CountsRoute | None = None
    tracing: tracing.Tracing | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _draining: bool = False
    _storage_ok: bool = True

    async def start(self) -> None:
        check_tls(self.settings)
        try:
            self.tracing = tracing.setup()  # None unless OTEL_TRACES_EXPORTER asks for it
        except tracing.TracingError as error:
            raise Refused(str(error)) from None
        http_sockets = self._listen()  # first: a refusal has opened nothing yet to close
        self.store = Store(self.settings.database_url, self.settings.sqlite_synchronous)
        if self.tracing is not None:
            system = "sqlite" if self.store.is_sqlite else "postgresql"
            self.store = self.tracing.traced(self.store, "store", {"db.system": system})
        await self.store.start()
        self.auth = Authenticator(self.store, self.settings.key_refresh)
        await self.auth.start()
        exposed = [
            a for a in (self.settings.grpc_addr, self.settings.http_addr) if not is_loopback(a)
        ]
        if self.auth.open and exposed and not self.settings.allow_open:
            await self.auth.close()
            await self.store.close()
            raise Refused(
                f"no API key is active, so every caller would be tenant 'default' with read "
                f"and write, and {', '.join(exposed)} is not loopback: create a key "
                "(jobstatus-server keys create --tenant T --scope read,write), listen on "
                "loopback, or pass --allow-open"
            )
        self.core = Core(self.store, self.settings.delivery_cache_lifetime)
        self.hub = Hub(
            self.store,
            WatchSettings(
                buffer=self.settings.watch_buffer,
                heartbeat=self.settings.heartbeat,
                history_count=self.settings.history_count,
                history_age=self.settings.history_age,
                snapshot_streams=self.settings.watch_snapshot_streams,
                snapshot_stall=self.settings.watch_snapshot_stall,
            ),
        )
        await self.hub.start()
        self.view = View(self.store, self.settings.view_budget, self.settings.view_wait)
        self.view.start(self.hub.revision)
        self.hub.listeners.append(self.view.apply)
        self.store.known = self.view.known
        self.limits = CallerLimits(
            max_request_bytes=self.settings.max_request_bytes,
            max_header_bytes=self.settings.max_header_bytes,
            max_streams_per_key=self.settings.max_streams_per_key,
            max_streams_per_connection=self.settings.max_streams_per_connection,
            max_concurrent_calls=self.settings.max_concurrent_calls,
        )
        limits = self.limits
        self.auth.on_reload(lambda: limits.recheck(self.auth))
        rpc = Rpc(self.auth, self.limits)
        add_services(self.grpc_server, self.core, self.hub, self.view, rpc)
        add_count_service(self.grpc_server, self.store, self.view, rpc)
        self.health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, GenericOnly(self.grpc_server))
        reflect.enable((*SERVICES, health.SERVICE_NAME, reflection.SERVICE_NAME), self.grpc_server)
        await self.grpc_server.start()
        await self._set_health(SERVING)
        store = self.store
        refresh_on_scrape("jobstatus_jobs", lambda: refresh_jobs_gauge(store))
        HUB_LAG.set_function(lambda: max(0, self.store.revision - self.hub.revision))
        rest = Rest(
            self.core,
            self.auth,
            Limits(self.settings.dataset_rate_interval, self.settings.dataset_quota),
            self.view,
        )
        self.counts_route = CountsRoute(self.store, self.view, self.auth, self.limits)
        routes = [
            *rest.routes(),
            *Watch(self.hub, self.auth, self.limits).routes(),
            *HistoryRoute(self.store, self.auth).routes(),
            *self.counts_route.routes(),
            *openapi.routes(self.auth),
            *dashboard.routes(self.auth, self.store),
        ]
        app = make_app(routes, self.serving, rest.paths())
        self.http = http_server(
            CallerGuard(
                self.tracing.wrap_http(app) if self.tracing else app,
                self.limits,
                None if self.tracing or not isinstance(app, DocumentedGets) else app,
            ),
            self.settings.http_addr,
            tls_cert=self.settings.tls_cert,
            tls_key=self.settings.tls_key,
            tls_client_ca=self.settings.tls_client_ca,
        )
        self.http.config.http = limited_protocol(self.settings.max_header_bytes, self.grpc_address)
        quiet_client_faults()
        http_task = asyncio.create_task(
            self.http.serve(sockets=http_sockets), name="jobstatus-http"
        )
        while not self.http.started:
            if http_task.done():
                http_task.result()
                raise RuntimeError(f"HTTP listener on {self.settings.http_addr} did not start")
            await asyncio.sleep(0.01)
        # What start-up made lives as long as the process: out of the collector's way.
        gc.collect()
        gc.freeze()
        self._tasks = [
            http_task,
            asyncio.create_task(self._every(self.settings.timer_interval, self._timers)),
            asyncio.create_task(self._every(self.settings.health_interval, self._check_storage)),
            asyncio.create_task(self._every(self.settings.compact_interval, self._compact)),
        ]
        if self.settings.retention_age > 0:
            self._tasks.append(
                asyncio.create_task(self._every(self.settings.compact_interval, self._retain))
            )

    def _listen(self) -> list[socket.socket]:
        """Bind the gRPC port (to the gRPC server, which serves on it once started) and
        the HTTP port (the returned sockets, for uvicorn), or refuse to start."""
        self.grpc_server = grpc.aio.server(
            interceptors=self.tracing.grpc_interceptors() if self.tracing else None,
            options=grpc_options(self.settings),
        )
        credentials = grpc_credentials(self.settings)
        try:
            if credentials is None:
                self.port = self.grpc_server.add_insecure_port(self.settings.grpc_addr)
            else:
                self.port = self.grpc_server.add_secure_port(self.settings.grpc_addr, credentials)
        except RuntimeError:  # grpcio's "Failed to bind to address …"
            raise Refused(
                f"cannot listen for gRPC on {self.settings.grpc_addr}: the port is taken "
                "(another server?) or the host is not this machine's; choose another "
                "with --grpc-addr"
            ) from None
        try:
            return listen(self.settings.http_addr)
        except OSError as error:
            raise Refused(
                f"cannot listen for HTTP on {self.settings.http_addr}: "
                f"{error.strerror or error}; choose another with --http-addr"
            ) from None

    def serving(self) -> bool:
        return self._storage_ok and not self._draining

    @property
    def grpc_address(self) -> str:
        host = self.settings.grpc_addr.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    async def _set_health(
        self, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType
    ) -> None:
        for name in ("", *SERVICES):
            await self.health.set(name, status)

    async def _every(self, interval: float, step: Callable[[], Awaitable[None]]) -> None:
        while True:
            try:
                await step()
            except Unavailable:
                pass
            except Exception:
                log.exception("background step failed")
            await asyncio.sleep(interval)

    async def _timers(self) -> None:
        moved = await self.core.expire_due()
        if moved:
            log.info("time-driven transitions: %d", moved)

    async def _retain(self) -> None:
        deleted = await Retention(self.store, self.settings.retention_age).delete_expired()
        if deleted:
            log.info("retention: deleted %d settled jobs", deleted)

    async def _compact(self) -> None:
        compacted = await self.store.compact(self.settings.history_count, self.settings.history_age)
        self.hub.compacted = max(self.hub.compacted, compacted)

    async def _check_storage(self) -> None:
        try:
            await self.store.ping()
            ok = True
        except Unavailable:
            ok = False
        STORAGE_UP.set(1 if ok else 0)
        if ok != self._storage_ok and not self._draining:
            log.warning("storage is %s", "back" if ok else "unreachable")
            await self._set_health(SERVING if ok else NOT_SERVING)
        self._storage_ok = ok

    async def stop(self) -> None:
        """Drain: health NOT_SERVING, watch streams end with UNAVAILABLE and their
        resume revision, unary calls get the grace period, then stop."""
        self._draining = True
        await self.health.enter_graceful_shutdown()
        await self.hub.close()
        if self.counts_route is not None:
            self.counts_route.close()
        await self.grpc_server.stop(self.settings.grace)
        if self.http is not None:
            self.http.should_exit = True
            await self._tasks[0]
        for task in self._tasks[1:]:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.auth.close()
        await self.store.close()
        if self.tracing is not None:
            self.tracing.shutdown()


async def serve(settings: Settings) -> int:
    server = Server(settings)
    try:
        await server.start()
    except Refused as refused:
        print(f"jobstatus: refusing to start: {refused}", file=sys.stderr, flush=True)
        return 2
    if server.auth.open:
        print(
            "jobstatus: no API keys are configured: the server is OPEN, every caller is "
            "tenant 'default' with read and write"
            + ("" if not settings.allow_open else " (--allow-open: also beyond loopback)"),
            flush=True,
        )
    scheme = "HTTPS" if settings.tls_cert else "HTTP"
    print(
        f"jobstatus: serving gRPC on {server.grpc_address} and {scheme} on {settings.http_addr} "
        f"(database {settings.database_url})",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping: draining for up to %.1f s", settings.grace)
    await server.stop()
    print("jobstatus: stopped", flush=True)
    return 0

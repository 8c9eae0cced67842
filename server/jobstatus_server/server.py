"""The server: gRPC services, health, reflection, timers, and a graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from jobstatus_server.config import Settings
from jobstatus_server.core import Core
from jobstatus_server.errors import Unavailable
from jobstatus_server.interceptor import ErrorInterceptor
from jobstatus_server.services import SERVICE_NAMES, add_services
from jobstatus_server.store import Store

log = logging.getLogger(__name__)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

GRPC_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.max_receive_message_length", 4 * 1024 * 1024),
]


@dataclass
class Server:
    settings: Settings
    store: Store = field(init=False)
    core: Core = field(init=False)
    grpc_server: grpc.aio.Server = field(init=False)
    health: health.aio.HealthServicer = field(init=False)
    port: int = 0
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _draining: bool = False
    _storage_ok: bool = True

    async def start(self) -> None:
        self.store = Store(self.settings.database_url, self.settings.sqlite_synchronous)
        await self.store.start()
        self.core = Core(self.store, self.settings.delivery_cache_lifetime)
        self.grpc_server = grpc.aio.server(interceptors=[ErrorInterceptor()], options=GRPC_OPTIONS)
        add_services(self.grpc_server, self.core)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc_server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), self.grpc_server
        )
        self.port = self.grpc_server.add_insecure_port(self.settings.grpc_addr)
        await self.grpc_server.start()
        await self._set_health(SERVING)
        self._tasks = [
            asyncio.create_task(self._every(self.settings.timer_interval, self._timers)),
            asyncio.create_task(self._every(self.settings.health_interval, self._check_storage)),
        ]

    @property
    def grpc_address(self) -> str:
        host = self.settings.grpc_addr.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    async def _set_health(self, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType) -> None:
        for name in ("", *SERVICE_NAMES):
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

    async def _check_storage(self) -> None:
        try:
            await self.store.ping()
            ok = True
        except Unavailable:
            ok = False
        if ok != self._storage_ok and not self._draining:
            log.warning("storage is %s", "back" if ok else "unreachable")
            await self._set_health(SERVING if ok else NOT_SERVING)
        self._storage_ok = ok

    async def stop(self) -> None:
        """Drain: health NOT_SERVING, calls get the grace period, then stop."""
        self._draining = True
        await self.health.enter_graceful_shutdown()
        await self.grpc_server.stop(self.settings.grace)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.store.close()


async def serve(settings: Settings) -> None:
    server = Server(settings)
    await server.start()
    print(
        f"jobstatus: serving gRPC on {server.grpc_address} "
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

"""Settings from flags and the environment; a flag wins over its variable."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from datetime import timedelta

DEFAULT_DATABASE_URL = "sqlite:///data/jobstatus.db"


@dataclass(frozen=True)
class Settings:
    grpc_addr: str = "127.0.0.1:50051"
    http_addr: str = "127.0.0.1:8080"
    database_url: str = DEFAULT_DATABASE_URL
    delivery_cache_lifetime: timedelta = timedelta(hours=168)
    sqlite_synchronous: str = "FULL"
    grace: float = 5.0
    timer_interval: float = 1.0
    health_interval: float = 1.0
    heartbeat: float = 15.0
    watch_buffer: int = 1024
    history_count: int = 100_000
    history_age: float = 24 * 3600.0
    compact_interval: float = 10.0
    retention_age: float = 0.0  # seconds; 0: settled jobs are kept for ever
    max_connection_age: float = 1800.0
    max_connection_age_grace: float = 60.0
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    allow_open: bool = False
    key_refresh: float = 1.0
    dataset_rate_interval: float = 5.0
    dataset_quota: int = 0
    max_request_bytes: int = 4 * 1024 * 1024
    max_header_bytes: int = 64 * 1024
    max_streams_per_key: int = 20_000
    max_streams_per_connection: int = 1_000
    max_concurrent_calls: int = 1_000
    view_budget: int = 64 * 1024 * 1024
    view_wait: float = 5.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument(
        "--grpc-addr",
        default=env("JOBSTATUS_GRPC_ADDR", Settings.grpc_addr),
        help="host:port of the gRPC listener; port 0 picks a free one (JOBSTATUS_GRPC_ADDR)",
    )
    parser.add_argument(
        "--http-addr",
        default=env("JOBSTATUS_HTTP_ADDR", Settings.http_addr),
        help="host:port of the REST listener (JOBSTATUS_HTTP_ADDR)",
    )
    parser.add_argument(
        "--database-url",
        default=env("JOBSTATUS_DATABASE_URL", DEFAULT_DATABASE_URL),
        help="SQLAlchemy URL of the store (JOBSTATUS_DATABASE_URL)",
    )
    parser.add_argument(
        "--delivery-cache-lifetime",
        type=float,
        default=float(env("JOBSTATUS_DELIVERY_CACHE_LIFETIME", "604800")),
        help="seconds a done delivery stays in the cache before it becomes delete "
        "(JOBSTATUS_DELIVERY_CACHE_LIFETIME, default 168 hours)",
    )
    parser.add_argument(
        "--sqlite-synchronous",
        choices=["FULL", "NORMAL"],
        default=env("JOBSTATUS_SQLITE_SYNCHRONOUS", "FULL"),
        help="SQLite synchronous mode: FULL survives power loss, NORMAL only process crashes",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=float(env("JOBSTATUS_GRACE", "5")),
        help="seconds open calls get to finish on shutdown",
    )

    parser.add_argument(
        "--heartbeat",
        type=float,
        default=float(env("JOBSTATUS_HEARTBEAT", "15")),
        help="seconds between heartbeats on an idle watch stream, unless the request asks",
    )
    parser.add_argument(
        "--watch-buffer",
        type=int,
        default=int(env("JOBSTATUS_WATCH_BUFFER", "1024")),
        help="events queued per watch stream before a slow consumer is cut off",
    )
    parser.add_argument(
        "--history-count",
        type=int,
        default=int(env("JOBSTATUS_HISTORY_COUNT", "100000")),
        help="how many recent changes the event log keeps for resuming watches",
    )
    parser.add_argument(
        "--history-age",
        type=float,
        default=float(env("JOBSTATUS_HISTORY_AGE", "86400")),
        help="how many seconds of changes the event log keeps for resuming watches",
    )
    parser.add_argument(
        "--compact-interval",
        type=float,
        default=float(env("JOBSTATUS_COMPACT_INTERVAL", "10")),
        help="seconds between compactions of the event log",
    )
    parser.add_argument(
        "--retention-age",
        type=_age,
        default=_age(env("JOBSTATUS_RETENTION_AGE", "0")),
        help="delete jobs settled longer than this, with their history: seconds, or a "
        "number with s, m, h or d (30d); 0, the default: keep them (JOBSTATUS_RETENTION_AGE)",
    )
    parser.add_argument(
        "--max-connection-age",
        type=float,
        default=float(env("JOBSTATUS_MAX_CONNECTION_AGE", "1800")),
        help="seconds before a connection is asked to go away, so streams rebalance",
    )
    parser.add_argument(
        "--tls-cert",
        default=env("JOBSTATUS_TLS_CERT", ""),
        help="PEM certificate (chain) for TLS on both listeners (JOBSTATUS_TLS_CERT)",
    )
    parser.add_argument(
        "--tls-key",
        default=env("JOBSTATUS_TLS_KEY", ""),
        help="PEM private key of --tls-cert (JOBSTATUS_TLS_KEY)",
    )
    parser.add_argument(
        "--tls-client-ca",
        default=env("JOBSTATUS_TLS_CLIENT_CA", ""),
        help="PEM CA bundle; clients must present a certificate it signed "
        "(JOBSTATUS_TLS_CLIENT_CA)",
    )
    parser.add_argument(
        "--allow-open",
        action="store_true",
        default=env("JOBSTATUS_ALLOW_OPEN", "") in ("1", "true", "yes"),
        help="serve without API keys on a non-loopback address (JOBSTATUS_ALLOW_OPEN=1)",
    )
    parser.add_argument(
        "--key-refresh",
        type=float,
        default=float(env("JOBSTATUS_KEY_REFRESH", "1")),
        help="seconds between re-reads of the API keys: a revocation holds within this",
    )
    parser.add_argument(
        "--dataset-rate-interval",
        type=float,
        default=float(env("JOBSTATUS_DATASET_RATE_INTERVAL", "5")),
        help="seconds between two dataset status requests of one key; 0: no limit",
    )
    parser.add_argument(
        "--dataset-quota",
        type=int,
        default=int(env("JOBSTATUS_DATASET_QUOTA", "0")),
        help="dataset status requests per key per UTC day before 402; 0: no quota",
    )
    parser.add_argument(
        "--view-budget",
        type=int,
        default=int(env("JOBSTATUS_VIEW_BUDGET", str(Settings.view_budget))),
        help="bytes of job state kept in memory for reads; settled and least recently "
        "read jobs are dropped first (JOBSTATUS_VIEW_BUDGET, default 64 MiB)",
    )
    parser.add_argument(
        "--view-wait",
        type=float,
        default=float(env("JOBSTATUS_VIEW_WAIT", str(Settings.view_wait))),
        help="seconds a read without a deadline waits for this server to reach the "
        "revision it needs (X-Min-Revision, or its own latest write) (JOBSTATUS_VIEW_WAIT)",
    )

    limits = (
        (
            "--max-request-bytes",
            Settings.max_request_bytes,
            "bytes in one gRPC message or HTTP body",
        ),
        (
            "--max-header-bytes",
            Settings.max_header_bytes,
            "bytes of an HTTP request line and headers",
        ),
        (
            "--max-streams-per-key",
            Settings.max_streams_per_key,
            "open watch streams (gRPC and SSE) "
            "of one API key (of one IP address on the open server)",
        ),
        (
            "--max-streams-per-connection",
            Settings.max_streams_per_connection,
            "open watch streams on one connection",
        ),
        (
            "--max-concurrent-calls",
            Settings.max_concurrent_calls,
            "calls of one API key (one IP "
            "address on the open server) served at once, watch streams aside",
        ),
    )
    for flag, default, what in limits:
        variable = "JOBSTATUS_" + flag.removeprefix("--").replace("-", "_").upper()
        parser.add_argument(
            flag,
            type=_positive,
            default=_positive(env(variable, str(default))),
            help=f"the most {what}; beyond it RESOURCE_EXHAUSTED or 429 ({variable})",
        )


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {text}")
    return value


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _age(text: str) -> float:
    """Seconds from `90`, `90s`, `15m`, `12h` or `30d`; 0 or more."""
    number, unit = (text[:-1], _UNITS[text[-1]]) if text[-1:] in _UNITS else (text, 1)
    try:
        value = float(number) * unit
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a number of seconds or 30d-like age: {text!r}"
        ) from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def from_arguments(args: argparse.Namespace) -> Settings:
    return Settings(
        grpc_addr=args.grpc_addr,
        http_addr=args.http_addr,
        database_url=args.database_url,
        delivery_cache_lifetime=timedelta(seconds=args.delivery_cache_lifetime),
        sqlite_synchronous=args.sqlite_synchronous,
        grace=args.grace,
        heartbeat=args.heartbeat,
        watch_buffer=args.watch_buffer,
        history_count=args.history_count,
        history_age=args.history_age,
        compact_interval=args.compact_interval,
        retention_age=args.retention_age,
        max_connection_age=args.max_connection_age,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        allow_open=args.allow_open,
        key_refresh=args.key_refresh,
        dataset_rate_interval=args.dataset_rate_interval,
        dataset_quota=args.dataset_quota,
        max_request_bytes=args.max_request_bytes,
        max_header_bytes=args.max_header_bytes,
        max_streams_per_key=args.max_streams_per_key,
        max_streams_per_connection=args.max_streams_per_connection,
        max_concurrent_calls=args.max_concurrent_calls,
        view_budget=args.view_budget,
        view_wait=args.view_wait,
    )

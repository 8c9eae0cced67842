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


def from_arguments(args: argparse.Namespace) -> Settings:
    return Settings(
        grpc_addr=args.grpc_addr,
        http_addr=args.http_addr,
        database_url=args.database_url,
        delivery_cache_lifetime=timedelta(seconds=args.delivery_cache_lifetime),
        sqlite_synchronous=args.sqlite_synchronous,
        grace=args.grace,
    )

"""Settings from flags and the environment; a flag wins over its variable.

OPTIONS is the one table of the server's settings: each row is a flag, its
environment variable, its default and what it means. The command line
(`add_arguments`, so `--help`) and the README's configuration tables
(`markdown_table`, compared with README.md by tests/composition/test_config.py)
are both generated from it, so they cannot drift apart.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

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
    watch_snapshot_streams: int = 4
    watch_snapshot_stall: float = 30.0
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


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {text}")
    return value


def _seconds(value: float) -> str:
    return f"{value:g}"


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


# The sections of the README that hold a table of options each.
SERVING, ACCESS = "serving", "access"


@dataclass(frozen=True)
class Option:
    """One setting: `--flag`, JOBSTATUS_<FLAG> and the Settings field of the same name."""

    flag: str
    meaning: str  # markdown: backticks are dropped for --help
    parse: Callable[[str], Any] = str
    choices: Sequence[str] = ()
    note: str = ""  # said after the default, such as "168 hours"
    section: str = SERVING
    switch: bool = False  # a flag without a value; its variable is on when 1, true or yes
    setting: bool = True  # False: not a field of Settings (--log-level)
    default_text: str = ""  # the default as shown, when Settings has none (--log-level)
    to_setting: Callable[[Any], Any] = lambda value: value

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")

    @property
    def variable(self) -> str:
        return "JOBSTATUS_" + self.dest.upper()

    @property
    def default(self) -> str:
        """The default as a flag or variable would spell it."""
        if self.default_text or not self.setting:
            return self.default_text
        value = getattr(Settings, self.dest)
        if isinstance(value, timedelta):
            return _seconds(value.total_seconds())
        if isinstance(value, float):
            return _seconds(value)
        return str(value)

    def shown_default(self) -> str:
        if self.switch:
            return "off"
        if not self.default:
            return "none"
        return self.default + (f", that is {self.note}" if self.note else "")

    def help(self) -> str:
        meaning = self.meaning.replace("`", "")
        variable = f"{self.variable}=1" if self.switch else self.variable
        return f"{meaning} ({variable}; default {self.shown_default()})".replace("%", "%%")


_LIMIT = "; beyond it `RESOURCE_EXHAUSTED` or `429`"

OPTIONS: tuple[Option, ...] = (
    Option(
        "--grpc-addr",
        "gRPC listener, `host:port`; port 0 picks a free port; a port in use is refused",
    ),
    Option(
        "--http-addr",
        "HTTP listener, `host:port`: the REST paths, the SSE watch, `/openapi.json`, "
        "`/metrics`, `/healthz`, the dashboard; a port in use is refused",
    ),
    Option(
        "--database-url",
        "SQLAlchemy URL of the store; the default is relative to the working directory",
    ),
    Option(
        "--delivery-cache-lifetime",
        "seconds a `done` prepared delivery stays cached before it becomes `delete` by itself",
        parse=float,
        note="168 hours",
        to_setting=lambda seconds: timedelta(seconds=seconds),
    ),
    Option(
        "--sqlite-synchronous",
        "`FULL` survives power loss; `NORMAL` survives only process crashes, and writes faster",
        choices=("FULL", "NORMAL"),
    ),
    Option("--grace", "seconds open calls get to finish on shutdown (SIGTERM or Ctrl-C)", float),
    Option(
        "--heartbeat",
        "seconds between heartbeats on an idle watch stream, unless the request sets "
        "`heartbeat_interval`",
        float,
    ),
    Option(
        "--watch-buffer",
        "events queued per watch stream before a slow consumer is cut off with "
        "`RESOURCE_EXHAUSTED`",
        int,
    ),
    Option(
        "--watch-snapshot-streams",
        "watch streams reading and sending their initial state (start revision 0) at once, "
        "a page of jobs at a time; the others wait their turn, with heartbeats at their "
        "resume point (0: no state yet)",
        int,
    ),
    Option(
        "--watch-snapshot-stall",
        "seconds an event of a watch's initial state may wait on its client before the "
        "stream is cut off with `RESOURCE_EXHAUSTED` and resume revision 0",
        float,
    ),
    Option(
        "--history-count", "how many recent changes the event log keeps for resuming watches", int
    ),
    Option(
        "--history-age",
        "how many seconds of changes the event log keeps for resuming watches",
        float,
        note="24 hours",
    ),
    Option("--compact-interval", "seconds between compactions of the event log", float),
    Option(
        "--retention-age",
        "delete jobs settled with no change for longer than this (seconds, or `90s`, `15m`, "
        "`12h`, `30d`), with their history, every `--compact-interval`; watchers get a "
        "`DELETED` event with the job's last state, then its id is unknown",
        _age,
        note="off",
    ),
    Option(
        "--max-connection-age",
        "seconds before a connection is asked to go away, so streams rebalance across replicas",
        float,
    ),
    Option(
        "--max-request-bytes",
        "the most bytes of one gRPC request message or HTTP request body" + _LIMIT,
        _positive,
        note="4 MiB",
    ),
    Option(
        "--max-header-bytes",
        "the most bytes of an HTTP request line and headers" + _LIMIT,
        _positive,
        note="64 KiB",
    ),
    Option(
        "--max-streams-per-key",
        "the most open watch streams (gRPC and SSE together) of one API key; of one IP "
        "address on the open server" + _LIMIT,
        _positive,
    ),
    Option(
        "--max-streams-per-connection",
        "the most open watch streams on one connection" + _LIMIT,
        _positive,
    ),
    Option(
        "--max-concurrent-calls",
        "the most calls of one API key (one IP address on the open server) in progress at "
        "once; watch streams count only against the stream limits, and an HTTP request only "
        "until its response starts" + _LIMIT,
        _positive,
    ),
    Option(
        "--view-budget",
        "bytes of job state kept in memory for Get and the REST paths; settled, then least "
        "recently read jobs are dropped first, and read again from the database when asked",
        int,
        note="64 MiB",
    ),
    Option(
        "--view-wait",
        "seconds a read without a deadline (REST) waits for this server to reach the revision "
        "it needs (`X-Min-Revision`, or its own latest write) before `504`",
        float,
    ),
    Option(
        "--log-level",
        "Python logging level: `DEBUG`, `INFO`, `WARNING` or `ERROR`",
        str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
        setting=False,
        default_text="INFO",
    ),
    Option(
        "--tls-cert",
        "PEM certificate (chain) for TLS on both listeners; needs `--tls-key`",
        section=ACCESS,
    ),
    Option("--tls-key", "PEM private key of `--tls-cert`", section=ACCESS),
    Option(
        "--tls-client-ca",
        "PEM CA bundle: clients must present a certificate this CA signed",
        section=ACCESS,
    ),
    Option(
        "--allow-open",
        "serve without API keys on a non-loopback address",
        section=ACCESS,
        switch=True,
    ),
    Option(
        "--key-refresh",
        "seconds between re-reads of the keys: a revocation holds within this",
        float,
        section=ACCESS,
    ),
    Option(
        "--dataset-rate-interval",
        "seconds between two dataset status requests of one key (`429` before that); 0: no limit",
        float,
        section=ACCESS,
    ),
    Option(
        "--dataset-quota",
        "dataset status requests per key per UTC day before `402`; 0: no quota",
        int,
        section=ACCESS,
    ),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every option of OPTIONS as a flag whose default is its variable, else the table's."""
    for option in OPTIONS:
        raw = os.environ.get(option.variable)
        if option.switch:
            on = (raw or "").lower() in ("1", "true", "yes")
            parser.add_argument(option.flag, action="store_true", default=on, help=option.help())
            continue
        default: Any = option.default
        if raw is not None:
            try:
                default = option.parse(raw)
            except (ValueError, argparse.ArgumentTypeError) as error:
                parser.error(f"{option.variable}={raw!r}: {error}")
        elif option.parse is not str:
            default = option.parse(option.default)
        if option.choices and default not in option.choices:
            parser.error(f"{option.variable}={raw!r}: one of {', '.join(option.choices)}")
        parser.add_argument(
            option.flag,
            type=option.parse,
            default=default,
            choices=option.choices or None,
            metavar=option.dest.upper() if option.choices else None,
            help=option.help(),
        )


def from_arguments(args: argparse.Namespace) -> Settings:
    return Settings(
        **{
            option.dest: option.to_setting(getattr(args, option.dest))
            for option in OPTIONS
            if option.setting
        }
    )


def markdown_table(section: str) -> str:
    """The README's table of the options of `section`, one row per option."""
    lines = [
        "| flag | environment variable | default | meaning |",
        "|---|---|---|---|",
    ]
    for option in OPTIONS:
        if option.section != section:
            continue
        variable = f"`{option.variable}=1`" if option.switch else f"`{option.variable}`"
        shown = option.shown_default()
        if option.default and not option.switch:
            shown = f"`{option.default}`" + (f" ({option.note})" if option.note else "")
        lines.append(f"| `{option.flag}` | {variable} | {shown} | {option.meaning} |")
    return "\n".join(lines)

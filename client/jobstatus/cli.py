"""jobstatus: the command line of the jobstatus service.

    jobstatus get map-import m-1
    jobstatus list delivery --status inProgress --status start
    jobstatus get dataset 0b6e… --json
    jobstatus watch map-import m-1 m-2 --until-settled
    jobstatus demo

A subcommand is one entry of COMMANDS: its help line, a function that adds its
arguments, and a function that runs it with a connected Client. Statuses are
read and printed in their documented spelling. A failure prints one line to
stderr and exits non-zero: 3 for NOT_FOUND, 2 for bad usage, 1 otherwise.
`watch --until-settled` exits 0 when every watched job succeeded and 4 when
one failed (see live.SUCCEEDED); Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC
from importlib.metadata import version
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from rich.console import Console
from rich.live import Live
from rich.table import Table

from jobstatus import demo
from jobstatus.errors import JobStatusError
from jobstatus.kinds import KINDS, Kind
from jobstatus.live import Outcome, WatchView, event_json, outcome
from jobstatus.options import (
    ADDR_VARIABLE,
    DEFAULT_TARGET,
    KEY_VARIABLE,
    key_or_default,
    target_or_default,
)
from jobstatus.spelling import listing, parse, spell
from jobstatus.sync import Client

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_FAILED = 4  # watch --until-settled: a watched job ended failed, cancelled or aborted
EXIT_INTERRUPTED = 130  # Ctrl-C

DEFAULT_TIMEOUT = 30.0

# The KIND argument: the command-line name of each kind, and its name in kinds.py.
KIND_NAMES = {
    "map-import": "map_import",
    "delivery": "prepared_delivery",
    "dataset": "dataset",
    "catalog-import": "catalog_import",
}
# What `list` shows besides id, status, revision and update time, as field paths.
LIST_COLUMNS: dict[str, tuple[str, ...]] = {
    "map_import": ("meta_data.progress",),
    "prepared_delivery": ("progress",),
    "dataset": ("name",),
    "catalog_import": ("type",),
}
_WELL_KNOWN = {"google.protobuf.Timestamp", "google.protobuf.Duration"}


class UsageError(Exception):
    """Bad arguments that argparse cannot catch, such as an unknown status spelling."""


@dataclass(frozen=True)
class Command:
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[Client, argparse.Namespace, Console], int]


# --- rendering --------------------------------------------------------------------


# Field descriptors are typed `Any` here: protobuf's stubs type them as a union of the
# pure-Python and the upb descriptor classes, which share the attributes used below.
def plain(value: Any, field: Any) -> Any:
    """A field's value for people and JSON: enums spelled, times in ISO 8601, messages as dicts."""
    if field.is_repeated:
        return [_plain_one(item, field) for item in value]
    return _plain_one(value, field)


def _plain_one(value: Any, field: Any) -> Any:
    if field.enum_type is not None:
        return spell(field.enum_type, value)
    if field.message_type is None:
        return value
    name = field.message_type.full_name
    if name == "google.protobuf.Timestamp":
        return value.ToDatetime(tzinfo=UTC).isoformat()
    if name == "google.protobuf.Duration":
        return f"{value.ToTimedelta().total_seconds():g}s"
    return {f.name: plain(v, f) for f, v in value.ListFields()}


def rows(message: Message, prefix: str = "") -> Iterable[tuple[str, Any]]:
    """(path, value) for every populated field; single nested messages are flattened."""
    for field, value in message.ListFields():
        path = prefix + field.name
        nested = (
            field.message_type is not None
            and not field.is_repeated
            and field.message_type.full_name not in _WELL_KNOWN
        )
        if nested:
            yield from rows(value, path + ".")
        else:
            yield path, plain(value, field)


def text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def field_value(message: Message, path: str) -> str:
    """The value at a dotted field path, for a table cell."""
    *parents, last = path.split(".")
    for name in parents:
        message = getattr(message, name)
    return text(plain(getattr(message, last), message.DESCRIPTOR.fields_by_name[last]))


def job_table(kind: Kind[Any], job: Message) -> Table:
    table = Table(show_header=False, box=None, padding=(0, 2, 0, 0))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for path, value in rows(job):
        table.add_row(path, text(value))
    return table


def list_table(kind: Kind[Any], jobs: Sequence[Message]) -> Table:
    extra = LIST_COLUMNS.get(kind.name, ())
    table = Table(caption=f"{len(jobs)} {kind.name.replace('_', ' ')}(s)")
    table.add_column(kind.id_field, no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("revision", justify="right")
    for path in extra:
        table.add_column(path.rsplit(".", 1)[-1])
    table.add_column("updated", no_wrap=True)
    for job in jobs:
        table.add_row(
            kind.job_id(job),
            spell(kind.status_enum, kind.status_of(job)) if kind.status_of(job) else "-",
            field_value(job, "revision"),
            *(field_value(job, path) for path in extra),
            field_value(job, "update_time"),
        )
    return table


def parse_statuses(kind: Kind[Any], spelled: Sequence[str]) -> list[int]:
    """Status numbers from their names in any spelling (spelling.parse: `InProgress`,
    `in_progress`, `MAP_IMPORT_STATUS_IN_PROGRESS`, in any case)."""
    numbers = []
    for status in spelled:
        number = parse(kind.status_enum, status)
        if number is None:
            known = [n for n in kind.status_enum.values_by_number if n]
            raise UsageError(
                f"unknown status {status!r} for {kind.name}; one of: "
                f"{listing(kind.status_enum, known)}"
            )
        numbers.append(number)
    return numbers


# --- commands ---------------------------------------------------------------------


def _kind_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "kind", choices=list(KIND_NAMES), metavar="KIND", help=", ".join(KIND_NAMES)
    )


def _kind(args: argparse.Namespace) -> Kind[Any]:
    return KINDS[KIND_NAMES[args.kind]]


def _configure_get(parser: argparse.ArgumentParser) -> None:
    _kind_argument(parser)
    parser.add_argument("id", help="the job's id")


def _run_get(client: Client, args: argparse.Namespace, out: Console) -> int:
    kind = _kind(args)
    job = client.kinds[kind.name].get(args.id, timeout=args.timeout)
    if args.json:
        print(json_format.MessageToJson(job))
    else:
        out.print(job_table(kind, job))
    return EXIT_OK


def _configure_list(parser: argparse.ArgumentParser) -> None:
    _kind_argument(parser)
    parser.add_argument(
        "--status",
        action="append",
        default=[],
        metavar="S",
        help="only jobs in this status, in either spelling, in any case (InProgress, "
        "in_progress, MAP_IMPORT_STATUS_IN_PROGRESS); repeat for several",
    )
    parser.add_argument("--page-size", type=int, default=0, help="jobs per call (server default)")


def _run_list(client: Client, args: argparse.Namespace, out: Console) -> int:
    kind = _kind(args)
    statuses = parse_statuses(kind, args.status)
    jobs = list(
        client.kinds[kind.name].list(
            statuses=statuses, page_size=args.page_size, timeout=args.timeout
        )
    )
    if args.json:
        print(json.dumps([json_format.MessageToDict(job) for job in jobs], indent=2))
    else:
        out.print(list_table(kind, jobs))
    if not jobs and args.api_key:
        _error(
            f"no {kind.name.replace('_', ' ')} found: an API key sees only its own tenant's "
            "jobs; those made while the server was open belong to tenant default "
            "(`jobstatus-server keys list` shows the tenant of each key)"
        )
    return EXIT_OK


def revision(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"a revision is 0 or more, not {text}")
    return value


def seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def _configure_watch(parser: argparse.ArgumentParser) -> None:
    _kind_argument(parser)
    parser.add_argument(
        "ids", nargs="*", metavar="ID", help="the jobs to watch; every job of the kind when none"
    )
    parser.add_argument(
        "--until-settled",
        action="store_true",
        help="exit once every watched job is settled: 0 when all succeeded, "
        f"{EXIT_FAILED} when one failed, was cancelled or aborted",
    )
    parser.add_argument(
        "--from-revision",
        type=revision,
        default=0,
        metavar="R",
        help="only the changes after revision R (default: the current state, then every change)",
    )
    parser.add_argument(
        "--heartbeat",
        type=seconds,
        default=None,
        metavar="S",
        help="seconds between heartbeats on a quiet stream (the server's default when unset)",
    )


def _run_watch(client: Client, args: argparse.Namespace, out: Console) -> int:
    kind = _kind(args)
    jobs = client.kinds[kind.name]
    ids = list(dict.fromkeys(args.ids))
    # The watch reconnects by itself, so fail first, with one line, on what a retry cannot
    # mend: an unknown id (NOT_FOUND), an unreachable server, a refused key. The jobs read
    # here also tell how a job ended that settled before --from-revision and sends nothing.
    before: dict[str, Message] = {}
    for job_id in ids:
        before[job_id] = jobs.get(job_id, timeout=args.timeout)
    if not ids:
        jobs.list_page(page_size=1, timeout=args.timeout)
    view = WatchView(kind, ids, until_settled=args.until_settled)
    events = jobs.watch(
        ids,
        start_revision=args.from_revision,
        until_settled=args.until_settled,
        heartbeat_interval=args.heartbeat,
    )
    with closing(events):
        if args.json:
            for event in events:
                view.apply(event)
                print(json.dumps(event_json(kind, event), ensure_ascii=False), flush=True)
        elif out.is_interactive:
            rows = max(out.size.height - 4, 1)
            with Live(view.render(rows), console=out, refresh_per_second=8) as live:
                for event in events:
                    view.apply(event)
                    live.update(view.render(rows))
        else:  # into a file or a pipe: the jobs as they ended (--json streams every event)
            try:
                for event in events:
                    view.apply(event)
            finally:
                out.print(view.render(detail_width=None))
    if not args.until_settled:
        return EXIT_OK
    ended = {
        job_id: result if result is not None else outcome(kind, before[job_id])
        for job_id, result in view.outcomes().items()
        if result is not None or job_id in before
    }
    if Outcome.FAILED in ended.values():
        return EXIT_FAILED
    if Outcome.RUNNING in ended.values():
        raise JobStatusError(
            grpc.StatusCode.UNKNOWN, "the watch ended before every watched job settled"
        )
    return EXIT_OK


# Adding a subcommand is adding an entry here.
COMMANDS: dict[str, Command] = {
    "get": Command("show one job", _configure_get, _run_get),
    "list": Command("list jobs, every page, oldest first", _configure_list, _run_list),
    "watch": Command(
        "show jobs live with a progress bar each; --until-settled exits when they settle",
        _configure_watch,
        _run_watch,
    ),
    "demo": Command(
        "drive sample jobs of every kind through their lifecycles (about a minute)",
        demo.configure,
        demo.run,
    ),
}


# --- main -------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--addr",
        default=target_or_default(None),
        help=f"host:port of the server's gRPC listener, not its HTTP one "
        f"({ADDR_VARIABLE}, default {DEFAULT_TARGET})",
    )
    common.add_argument(
        "--api-key",
        default=key_or_default(None),
        help=f"the API key, sent as x-api-key metadata ({KEY_VARIABLE}; default none, "
        "which only an open server, one without keys, accepts)",
    )
    common.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds per call (default {DEFAULT_TIMEOUT:g})",
    )
    common.add_argument(
        "--json", action="store_true", help="print protobuf JSON (watch: one JSON line per event)"
    )
    parser = argparse.ArgumentParser(
        prog="jobstatus", description="Read and watch the status of jobstatus jobs."
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {version('jobstatus-client')}"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        sub = commands.add_parser(name, parents=[common], help=command.help)
        command.configure(sub)
    return parser


def _console() -> Console:
    """A console for stdout. Into a pipe, tables keep their natural width unless COLUMNS says
    otherwise, so that no id is cut short for the program that reads them."""
    wide = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(width=10_000 if wide else None, soft_wrap=False)


ADDRESS_FLAGS = f"--addr or {ADDR_VARIABLE} sets the address"


def hint(error: JobStatusError, addr: str) -> str:
    """What to do about a failure the server could not explain itself: nothing answers
    at the address, or something that is not a gRPC server does."""
    if error.code != grpc.StatusCode.UNAVAILABLE:
        return ""
    if "http1.x server" in error.message:
        return (
            f"; {addr} answers HTTP/1, not gRPC: is it an HTTP port? {ADDRESS_FLAGS} "
            f"(the gRPC port, {DEFAULT_TARGET} by default)"
        )
    if "Connection refused" in error.message or "failed to connect" in error.message:
        return f"; nothing answers at {addr}: is the server running? {ADDRESS_FLAGS}"
    return ""


def _error(message: str) -> None:
    print(f"jobstatus: {' '.join(message.split())}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = COMMANDS[args.command]
    try:
        with Client(args.addr, api_key=args.api_key or None) as client:
            return command.run(client, args, _console())
    except JobStatusError as error:
        _error(str(error) + hint(error, args.addr))
        return EXIT_NOT_FOUND if error.code == grpc.StatusCode.NOT_FOUND else EXIT_ERROR
    except UsageError as error:
        _error(str(error))
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`jobstatus list … | head`): say nothing more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    except Exception as error:  # never a traceback: one line, as for every other failure
        _error(f"unexpected error: {type(error).__name__}: {error}")
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())

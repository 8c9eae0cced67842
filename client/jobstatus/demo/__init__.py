"""jobstatus demo: sample jobs of all four kinds through realistic lifecycles.

    jobstatus demo                 # about a minute against 127.0.0.1:50051
    jobstatus demo --speed 20      # the same in about three seconds

It plays the job runners (an exporter, a delivery cache, a dataset importer, a
catalog importer) against a running server through the client library, so a
newcomer sees live data in `jobstatus watch` a minute after `make run`:

- map imports: Start → InProgress with progress steps → Done with package_url
  and footprint; one pauses on the way; one fails (Error, MAP.exportMapFailed);
  one is queued (Pending) and cancelled (Cancel);
- prepared deliveries: start → inProgress → done with a gpkg (SHA256Hex hash)
  and a json artifact; one fails with DELIVERY.unableClearCache;
- datasets: an import run with log lines (info, warning) through fetch and
  import; one run fails in import with an error line;
- catalog imports: WAITING → IN_PROGRESS → SUCCESS; a second import of the same
  type created while the first runs starts BLOCKED and runs once it is done;
  one ends in FAILURE with a message.

Every run uses fresh ids (a random run tag), so it can be run again and again.
It prints one line per action and a summary. Ctrl-C settles the jobs still
running (Cancel, error, failed, ABORTED) before it exits.

This module is the command; stage.py the clock, the printing and the settling;
scenarios.py the story of each kind's jobs.
"""

from __future__ import annotations

import argparse

from rich.console import Console

from jobstatus.demo import scenarios
from jobstatus.demo.stage import Demo
from jobstatus.sync import Client

DEFAULT_JOBS = 4

# --- the command ------------------------------------------------------------------------


def factor(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {text}")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--jobs",
        type=count,
        default=DEFAULT_JOBS,
        metavar="N",
        help=f"jobs of each kind (default {DEFAULT_JOBS}; the failures need 3 or more)",
    )
    parser.add_argument(
        "--speed",
        type=factor,
        default=1.0,
        metavar="X",
        help="play X times faster (default 1: about a minute)",
    )


def run(client: Client, args: argparse.Namespace, out: Console) -> int:
    """Drive the demo's jobs; 0 when every step went through, 1 when one was refused."""
    # Fail fast, with one line, when the server is not there.
    client.map_imports.list_page(page_size=1, timeout=args.timeout)
    demo = Demo(client, out, args.speed, args.json, args.timeout)
    plan = scenarios.plan(demo, args.jobs)
    if not args.json:
        seconds = (scenarios.START_WINDOW + 15) / args.speed
        out.print(
            f"jobstatus demo: run {demo.tag} against {args.addr}: {4 * args.jobs} jobs "
            f"for about {seconds:.0f} s. In another terminal: "
            "jobstatus watch map-import (or delivery, dataset, catalog-import)",
            soft_wrap=True,
        )
    try:
        demo.play(plan)
    except KeyboardInterrupt:
        demo.settle_the_rest("interrupted")
        raise
    demo.settle_the_rest("stopped early")  # only after a refused step: leave nothing running
    demo.summary()
    return 1 if demo.errors else 0

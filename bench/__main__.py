"""`python -m bench`: run the benchmark suite and write bench/results/bench.{md,json}."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench import suite


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes: proves every scenario works, measures nothing worth reading",
    )
    parser.add_argument(
        "--only", action="append", default=[], metavar="NAME", help="run only this scenario"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"where results go (default {suite.RESULTS.relative_to(suite.ROOT)}; "
        "a smoke run needs one)",
    )
    parser.add_argument("--rounds", type=int, default=None, help="rounds per case")
    parser.add_argument(
        "--no-profile", action="store_true", help="do not profile cases that miss a target"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch databases")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument(
        "--render",
        action="store_true",
        help="measure nothing: write bench.md again from bench.json and bench/findings.md",
    )
    args = parser.parse_args(argv)
    if args.list:
        for scenario in suite.scenarios():
            note = f"  [{scenario.todo}]" if scenario.todo else ""
            print(f"{scenario.name:24} {scenario.title}{note}")
        return 0
    if args.render:
        print(f"wrote {suite.rerender(args.out or suite.RESULTS)}")
        return 0
    mode = "smoke" if args.smoke else "full"
    if args.smoke and args.out is None:
        parser.error("--smoke needs --out: a smoke run must not replace the real results")
    report = suite.run(
        suite.sizes_for(mode, rounds=args.rounds),
        mode,
        args.out or suite.RESULTS,
        only=args.only,
        profiling=not args.no_profile and not args.smoke,
        keep=args.keep,
    )
    return 1 if report.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

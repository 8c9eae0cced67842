"""`jobstatus-server`: serve, or manage the database."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from jobstatus_server import config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="jobstatus-server", description="jobstatus: a gRPC status service for long-running jobs"
    )
    config.add_arguments(parser)
    parser.add_argument("--log-level", default="INFO")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="serve gRPC (the default)")
    db = commands.add_parser("db", help="manage the database")
    db.add_argument("action", choices=["upgrade"], help="apply every migration")
    args = parser.parse_args(argv)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = config.from_arguments(args)
    if args.command == "db":
        from jobstatus_server.migrations import upgrade

        upgrade(settings.database_url)
        print(f"jobstatus: database at {settings.database_url} is up to date")
        return 0
    from jobstatus_server.server import serve

    asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())

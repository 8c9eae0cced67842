"""What an HTTP route reads of a request, declared once and parsed before its handler runs.

A route declares each query parameter, header and path segment it reads as a
`Param`; `parse` reads them all from the ASGI scope (no framework object
needed) and returns their values, or raises the first problem as a typed error
(errors.py) that the route answers in its documented error body. Nothing else
of the request reaches a handler.

Every text goes through the same checks as a string field of a gRPC request
(validation.py): at most DEFAULT_MAX_LEN characters unless declared otherwise,
and no NUL (no database stores one). The typed parsers below take only what
their type's canonical spelling allows: a revision is 1 to 19 ASCII digits and
fits an int64 (not `²`, not 4,301 digits), seconds are an ASCII decimal, a flag
is one of a few words.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import Scope

from jobstatus_server.contract.errors import NotFound, one_line
from jobstatus_server.contract.errors import invalid as invalid  # the routes' refusal, re-exported
from jobstatus_server.contract.kinds import KINDS, Kind
from jobstatus_server.contract.validation import DEFAULT_MAX_LEN

INT64_MAX = 2**63 - 1
MAX_QUERY_FIELDS = 100  # query parameters in one request, repeated ones included
QUERY, HEADER, PATH = "query", "header", "path"
_REVISION = re.compile(r"[0-9]{1,19}")
_DECIMAL = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,9})?")
_TRUE = ("true", "1", "yes")
_FALSE = ("", "false", "0", "no")


class Invalid(ValueError):
    """A value its parser refuses; the text says what it must be."""


def text(value: str) -> str:
    return value


def revision(value: str) -> int:
    """A revision: 0 or more, in ASCII digits, within int64."""
    stripped = value.strip(" \t")
    if not _REVISION.fullmatch(stripped) or int(stripped) > INT64_MAX:
        raise Invalid(f"must be a revision: a whole number from 0 to {INT64_MAX}")
    return int(stripped)


MIN_REVISION_HEADER = "x-min-revision"
MIN_REVISION_INVALID = "X-Min-Revision must be a revision: a non-negative integer"


def min_revision(raw: str | None) -> int | None:
    """The documented REST paths' `X-Min-Revision` header (latin-1 text): 0 when absent,
    None when it is not a revision (up to 18 ASCII digits, whitespace around them)."""
    if raw is None:
        return 0
    raw = raw.strip()
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        return None
    return int(raw)


def flag(value: str) -> bool:
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise Invalid("must be true or false")


def seconds(low: float, high: float) -> Callable[[str], float]:
    """Seconds as an ASCII decimal, more than `low` and at most `high`."""

    def parse(value: str) -> float:
        stripped = value.strip(" \t")
        number = float(stripped) if _DECIMAL.fullmatch(stripped) else -1.0
        if not low < number <= high:
            raise Invalid(f"must be seconds, more than {low:g} and at most {high:g}")
        return number

    return parse


def kind(value: str) -> Kind[Any]:
    """A kind's name in a path: an unknown one is NOT_FOUND."""
    found = KINDS.get(value)
    if found is None:
        raise NotFound(
            f"no kind {one_line(value, 100)!r}; kinds: {', '.join(KINDS)}",
            reason="KIND_NOT_FOUND",
        )
    return found


def comma_list(value: str) -> list[str]:
    """Comma-separated parts, stripped, empty ones dropped."""
    return [part.strip() for part in value.split(",") if part.strip()]


@dataclass(frozen=True)
class Param:
    """One thing a route reads: `name` as on the wire (a header in lower case), where it
    is, how it is parsed. `many`: every occurrence of a query parameter, as a list."""

    name: str
    where: str = QUERY
    parse: Callable[[str], Any] = text
    default: Any = None
    many: bool = False
    max_len: int = DEFAULT_MAX_LEN
    key: str = ""  # the name the handler gets it by; the wire name when empty
    blank: bool = False  # a blank value means absent: the default

    @property
    def label(self) -> str:
        """How a refusal names it: `start_revision`, `Last-Event-ID` (as headers are written)."""
        if self.where == HEADER:
            return "-".join(
                part.upper() if part == "id" else part.title() for part in self.name.split("-")
            )
        return self.name

    def value(self, raw: str) -> Any:
        if len(raw) > self.max_len:
            raise invalid(
                self.label, f"at most {self.max_len} characters, got {len(raw)}", "TOO_LONG"
            )
        if "\x00" in raw:
            raise invalid(self.label, "must not contain NUL characters", "NUL_CHARACTER")
        try:
            return self.parse(raw)
        except Invalid as error:
            raise invalid(self.label, str(error)) from None


def query_pairs(scope: Scope) -> list[tuple[str, str]]:
    """The query string's pairs, decoded as Starlette does (latin-1, then UTF-8 with
    replacement), refusing more than MAX_QUERY_FIELDS of them."""
    query: bytes = scope.get("query_string", b"")
    if not query:
        return []
    try:
        return parse_qsl(
            query.decode("latin-1"), keep_blank_values=True, max_num_fields=MAX_QUERY_FIELDS
        )
    except ValueError:
        raise invalid("query", f"at most {MAX_QUERY_FIELDS} parameters", "TOO_MANY") from None


def parse(
    scope: Scope, params: Sequence[Param], path_params: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Every declared value of the request, by its key; the first problem raised."""
    query: dict[str, list[str]] = {}
    if any(p.where == QUERY for p in params):
        for name, value in query_pairs(scope):
            query.setdefault(name, []).append(value)
    headers: dict[str, str] = {}
    if any(p.where == HEADER for p in params):
        wanted = {p.name.encode("latin-1") for p in params if p.where == HEADER}
        for name, raw in scope.get("headers", ()):
            if name in wanted and name.decode("latin-1") not in headers:  # the first wins
                headers[name.decode("latin-1")] = raw.decode("latin-1")
    path = path_params if path_params is not None else scope.get("path_params", {})
    values: dict[str, Any] = {}
    for param in params:
        key = param.key or param.name
        if param.where == QUERY:
            found = query.get(param.name)
            if param.many:
                values[key] = [param.value(v) for v in found or ()]
                continue
            raw = found[-1] if found else None  # the last wins, as in Starlette
        elif param.where == HEADER:
            raw = headers.get(param.name)
        else:
            raw = path.get(param.name)
        if raw is None or (param.blank and not raw.strip(" \t")):
            values[key] = param.default
        else:
            values[key] = param.value(raw)
    return values

"""Signed page tokens: where the next page of a list or a history starts.

A page token is base64url(check + json), without padding: the check is a digest of
the json under the token's purpose (`PageTokens(purpose)`: a list's tokens are not a
history's), so a token that was cut, edited or made up is refused rather than read
from a wrong place. It is not a secret: what a token pages through is the caller's
own anyway. Each use says what its json holds; every token holds the kind ("k") and
the revision the next page starts after ("a").
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from typing import Any

from jobstatus_server.contract.kinds import Kind

CHECK_BYTES = 12
MAX_REVISION = 2**63  # a revision is an int64, as the database keeps it


class PageTokens:
    """The tokens of one purpose (one kind of page): made and read back."""

    def __init__(self, purpose: bytes) -> None:
        self.label = purpose + b"\0"

    def _check(self, raw: bytes) -> bytes:
        return hashlib.sha256(self.label + raw).digest()[:CHECK_BYTES]

    def encode(self, kind: Kind[Any], fields: dict[str, Any], after: int) -> str:
        """The token of the page after revision `after`; `fields` bind it to its list."""
        body = {"k": kind.name, **fields, "a": after}
        raw = json.dumps(body, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(self._check(raw) + raw).decode().rstrip("=")

    def decode(self, token: str, kind: Kind[Any]) -> dict[str, Any] | None:
        """The fields of a token this server made for `kind`, its revision ("a") checked;
        None for anything else."""
        data: object = None
        try:
            blob = base64.urlsafe_b64decode((token + "=" * (-len(token) % 4)).encode())
            check, raw = blob[:CHECK_BYTES], blob[CHECK_BYTES:]
            if hmac.compare_digest(check, self._check(raw)):
                data = json.loads(raw)
        except (ValueError, binascii.Error):
            data = None
        if (
            not isinstance(data, dict)
            or data.get("k") != kind.name
            or not isinstance(data.get("a"), int)
            or not 0 <= data["a"] < MAX_REVISION
        ):
            return None
        return data

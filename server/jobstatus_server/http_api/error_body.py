"""jobstatus's own JSON error body over HTTP, on its own paths (SSE watch, history, the
limits' 429); the documented REST paths answer in their documents' styles (rest.py).

`{"error": {"code": "RESOURCE_EXHAUSTED", "reason": "...", "message": "...",
"metadata": {...}}}`: the gRPC status code's name, and the ErrorInfo a gRPC call
would carry.
"""

from __future__ import annotations

import json
from typing import Any

from jobstatus_server.contract.errors import JobStatusError, ResourceExhausted


def error_body(error: JobStatusError) -> dict[str, Any]:
    """The body of a jobstatus error on jobstatus's own paths (not the documented ones)."""
    return {
        "error": {
            "code": error.code.name,
            "reason": error.reason,
            "message": error.message,
            "metadata": dict(error.metadata),
        }
    }


def limit_refusal(error: ResourceExhausted) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """The 429 of a per-caller limit (limits.py): status, headers and body."""
    body = json.dumps(error_body(error)).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", b"1"),
    ]
    return 429, headers, body

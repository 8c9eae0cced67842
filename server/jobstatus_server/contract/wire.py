"""Protobuf wire helpers: responses and watch events built from a job's stored bytes.

The contract's Get, Create and Update responses hold the job as field 1, and its
Watch*Response messages hold (type, revision, job) as fields 1-3: both can be built
as bytes around the job's serialized bytes, byte for byte what SerializeToString
gives, without parsing or copying the job.
"""

from __future__ import annotations

# Every Get, Create and Update response of the contract holds the job and nothing else,
# as field 1 (length-delimited: tag 0x0A): its bytes are the job's, behind a prefix.
RESPONSE_TAG = b"\x0a"


def job_response(data: bytes) -> bytes:
    """The serialized Get/Create/Update response holding the job serialized as `data`."""
    return RESPONSE_TAG + varint(len(data)) + data


def varint(value: int) -> bytes:
    """`value` (not negative) as a protobuf varint."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_event(event_type: int, revision: int, job: bytes | None) -> bytes:
    """A Watch*Response of any kind, serialized: byte for byte what SerializeToString
    gives (fields in number order, zero scalars left out, the job as its own bytes)."""
    head = (b"\x08" + varint(event_type) if event_type else b"") + (
        b"\x10" + varint(revision) if revision else b""
    )
    if job is None:
        return head
    return head + b"\x1a" + varint(len(job)) + job

"""A gRPC client that dialled the HTTP listener: told so, in gRPC's own terms.

A gRPC client opens with the HTTP/2 connection preface, which an HTTP/1.1 server
can only refuse (`Expected SETTINGS frame`, or a dial that never completes). The
HTTP listener recognises the preface on a new connection and hands the
connection to `GrpcOnHttpPort`: it speaks just enough HTTP/2 (SETTINGS, PING,
GOAWAY, and a trailers-only response to every call) to end each call with
UNAVAILABLE and a grpc-message that names the port to use instead.
"""

from __future__ import annotations

import asyncio

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_DATA, _HEADERS, _SETTINGS, _PING, _GOAWAY = 0x0, 0x1, 0x4, 0x6, 0x7
_ACK = 0x1
_END_STREAM, _END_HEADERS = 0x1, 0x4
_MOST_BUFFERED = 64 * 1024
_UNAVAILABLE = b"14"


def hint(grpc_address: str) -> str:
    """What a gRPC client that reached the HTTP listener is told."""
    return (
        "this is jobstatus's HTTP port (--http-addr, JOBSTATUS_HTTP_ADDR: REST, server-sent "
        f"events, the dashboard); gRPC is served on {grpc_address} (--grpc-addr, "
        "JOBSTATUS_GRPC_ADDR; the jobstatus CLI: --addr)"
    )


def is_http2(first: bytes) -> bool:
    """Whether the first bytes of a connection are the start of HTTP/2's preface."""
    return first.startswith(PREFACE[:16]) or (len(first) < 16 and PREFACE.startswith(first))


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return (
        len(payload).to_bytes(3, "big") + bytes((kind, flags)) + stream.to_bytes(4, "big") + payload
    )


def _integer(value: int) -> bytes:
    """An HPACK integer with a 7-bit prefix (RFC 7541, 5.1), the H bit clear."""
    if value < 127:
        return bytes((value,))
    out = bytearray((127,))
    value -= 127
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    out.append(value)
    return bytes(out)


def _literal(name: bytes, value: bytes) -> bytes:
    """A header as a literal without indexing, with a new name (RFC 7541, 6.2.2)."""
    return b"\x00" + _integer(len(name)) + name + _integer(len(value)) + value


def _percent_encoded(message: str) -> bytes:
    """grpc-message's encoding: bytes outside printable ASCII, and `%`, as %XX."""
    return b"".join(
        bytes((byte,)) if 0x20 <= byte <= 0x7E and byte != 0x25 else b"%%%02X" % byte
        for byte in message.encode()
    )


def trailers_only(message: str) -> bytes:
    """The header block of a call that ends at once with UNAVAILABLE and `message`."""
    return (
        b"\x88"  # :status 200, from the static table
        + _literal(b"content-type", b"application/grpc")
        + _literal(b"grpc-status", _UNAVAILABLE)
        + _literal(b"grpc-message", _percent_encoded(message))
    )


class GrpcOnHttpPort:
    """The rest of a connection that began with HTTP/2's preface: each call it opens is
    answered UNAVAILABLE with `message`; then the connection is told to go away."""

    def __init__(self, transport: asyncio.Transport, message: str) -> None:
        self.transport = transport
        self.answer = trailers_only(message)
        self.message = message.encode()
        self.buffer = b""
        self.preface = True
        transport.write(_frame(_SETTINGS, 0, 0, b""))

    def feed(self, data: bytes) -> None:
        self.buffer += data
        if self.preface:
            if len(self.buffer) < len(PREFACE):
                return
            if not self.buffer.startswith(PREFACE):
                self.transport.close()
                return
            self.buffer = self.buffer[len(PREFACE) :]
            self.preface = False
        while len(self.buffer) >= 9:
            length = int.from_bytes(self.buffer[:3], "big")
            if len(self.buffer) < 9 + length:
                break
            kind, flags = self.buffer[3], self.buffer[4]
            stream = int.from_bytes(self.buffer[5:9], "big") & 0x7FFFFFFF
            payload = self.buffer[9 : 9 + length]
            self.buffer = self.buffer[9 + length :]
            self._frame(kind, flags, stream, payload)
        if len(self.buffer) > _MOST_BUFFERED:
            self.transport.close()

    def _frame(self, kind: int, flags: int, stream: int, payload: bytes) -> None:
        if kind == _SETTINGS and not flags & _ACK:
            self.transport.write(_frame(_SETTINGS, _ACK, 0, b""))
        elif kind == _PING and not flags & _ACK:
            self.transport.write(_frame(_PING, _ACK, 0, payload))
        elif kind == _HEADERS and stream:
            self.transport.write(_frame(_HEADERS, _END_STREAM | _END_HEADERS, stream, self.answer))
            goaway = stream.to_bytes(4, "big") + (0).to_bytes(4, "big") + self.message
            self.transport.write(_frame(_GOAWAY, 0, 0, goaway))
            self.transport.close()

"""The renderings of one committed change: every form the change is sent in, each built
once, when first asked, and shared by every stream and reader of the change.

A `Renderings` belongs to one change (a `Change` of the feed, and the view's `Entry`
of it). Its forms are fields, not keys of a mapping:

- the parsed job message (`message`), which the other forms render from;
- the serialized Get response (`response_bytes`);
- the watch event frames (`watch_frame`): STATE and CHANGE events as gRPC bytes
  (`grpc_event_bytes`, from the stored bytes, without parsing them) and as the kind's response
  messages (the SSE streams render those);
- the documented JSON bodies (`documented_json`), one per `Form`;
- the ready HTTP answers (`ready_answers`), one per `Form`, made by the HTTP fast path
  from the documented body (`keep_ready_answer`).

Its `size` is the exact count of the bytes it holds: `OVERHEAD` (the object, its lists
and the ready answers' two small dicts) plus the length of each bytes object it keeps
(the job's stored bytes, the response, the wire frames, the documented bodies; a ready
answer's body is the documented body, counted once). The protobuf messages it keeps
(the parsed job and the message frames) are not bytes: each is counted at the length
of the stored bytes it was parsed from. When the view holds the renderings, their
growth is added to the view's size as each form is built (`account`).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum
from typing import Any, Protocol

from google.protobuf.message import Message

from jobstatus.v1 import watch_pb2
from jobstatus_server.contract.kinds import Kind
from jobstatus_server.contract.wire import Respond, encode_event, grpc_event_bytes, job_response

OVERHEAD = 200  # bytes the object, its lists and the ready answers' dicts take
STATE = watch_pb2.WATCH_EVENT_TYPE_STATE


class Form(IntEnum):
    """The documented JSON bodies of a change (and the ready HTTP answers made of them)."""

    MAP_V1 = 0
    MAP_V2 = 1
    DELIVERY = 2
    DATASET_RUN = 3
    CATALOG = 4


_FORMS = len(Form)
_WIRE_STATE, _WIRE_CHANGE, _MESSAGE_STATE, _MESSAGE_CHANGE = range(4)  # watch frames


class Account(Protocol):
    """What counts the renderings' bytes (the view): its size grows as forms are built."""

    size: int


class Renderings:
    """Every form one change is sent in, each built once when first asked."""

    __slots__ = (
        "_documented",
        "_frames",
        "_message",
        "_message_respond",
        "_response",
        "account",
        "data",
        "ready_answers",
        "size",
    )

    def __init__(self, data: bytes, message: Message | None = None) -> None:
        self.data = data  # the job's serialized protobuf message, as stored
        self.size = OVERHEAD + len(data)
        self.account: Account | None = None
        self._message = message
        if message is not None:
            self.size += len(data)  # a message is counted at the length it was parsed from
        self._response: bytes | None = None
        # The watch event frames, by _WIRE_STATE, _WIRE_CHANGE, _MESSAGE_STATE and
        # _MESSAGE_CHANGE (made on the first frame: most changes are never watched).
        self._frames: list[Any] | None = None
        self._message_respond: Respond | None = None
        self._documented: list[bytes | None] | None = None
        # The ready HTTP answers by Form, None until the first is kept: read by the fast
        # path as a field (an attribute and an index, no call, per request).
        self.ready_answers: list[Any] | None = None

    def _grow(self, size: int) -> None:
        self.size += size
        account = self.account
        if account is not None:
            account.size += size

    def message(self, kind: Kind[Any]) -> Any:
        """The parsed job."""
        job = self._message
        if job is None:
            job = self._message = kind.message.FromString(self.data)
            self._grow(len(self.data))
        return job

    def response_bytes(self) -> bytes:
        """The serialized Get response (wire.job_response)."""
        response = self._response
        if response is None:
            response = self._response = job_response(self.data)
            self._grow(len(response))
        return response

    def watch_frame(self, respond: Respond, kind: Kind[Any], event_type: int, revision: int) -> Any:
        """A STATE or CHANGE event of the change at `revision`, as `respond` builds it
        (for `grpc_event_bytes`: bytes from the stored bytes, without parsing them). A
        change has one kind, so one responder of messages besides `grpc_event_bytes`;
        another is answered unkept."""
        frames = self._frames
        if frames is None:
            frames = self._frames = [None, None, None, None]
        if respond is grpc_event_bytes:
            slot = _WIRE_STATE if event_type == STATE else _WIRE_CHANGE
            frame = frames[slot]
            if frame is None:
                frame = frames[slot] = encode_event(event_type, revision, self.data)
                self._grow(len(frame))
            return frame
        if self._message_respond is not respond:
            if self._message_respond is not None:
                return respond(event_type, revision, self.message(kind))
            self._message_respond = respond
        slot = _MESSAGE_STATE if event_type == STATE else _MESSAGE_CHANGE
        frame = frames[slot]
        if frame is None:
            frame = frames[slot] = respond(event_type, revision, self.message(kind))
            self._grow(len(self.data))
        return frame

    def documented_json(self, form: Form, render: Callable[[Renderings], bytes]) -> bytes:
        """The documented JSON body `form`, as `render(self)` makes it."""
        documented = self._documented
        if documented is None:
            documented = self._documented = [None] * _FORMS
        body = documented[form]
        if body is None:
            body = documented[form] = render(self)
            self._grow(len(body))
        return body

    def keep_ready_answer(self, form: Form, answer: Any) -> None:
        """Keep the ready HTTP answer of `form`; its body is the documented body, counted
        there, and its two small dicts are in OVERHEAD."""
        ready = self.ready_answers
        if ready is None:
            ready = self.ready_answers = [None] * _FORMS
        ready[form] = answer

"""The renderings of one committed change: every form the change is sent in, each built
once, when first asked, and shared by every stream and reader of the change.

A `Renderings` belongs to one change (a `Change` of the feed, and the view's `Entry`
of it). Its forms are fields, not keys of a mapping:

- the serialized Get response (`response_bytes`);
- the watch event frames (`watch_frame`): a STATE and a CHANGE event per `WatchForm`
  (gRPC's serialized Watch*Response, SSE's event of the documented body, with or
  without the envelope), each built by the stream's `Framing`;
- the documented JSON bodies (`documented_json`), one per `Form`;
- the ready HTTP answers (`ready_answers`), one per `Form`, made by the HTTP fast path
  from the documented body (`keep_ready_answer`).

Everything it keeps is bytes, or a ready answer whose size its maker states: the parsed
job (`message`) is parsed again when a form is built, not kept. So `size` is exact: the
`sys.getsizeof` of the object, of each list it made and of each bytes object it keeps
(the job's stored bytes, the response, the frames, the documented bodies), plus the
ready answers' own size (their body is the documented body, counted once). When the view
holds the renderings, their growth is added to the view's size as each form is built
(`account`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from enum import IntEnum
from typing import Any, Protocol

from google.protobuf.message import Message

from jobstatus.v1 import watch_pb2
from jobstatus_server.contract.kinds import Kind
from jobstatus_server.contract.wire import job_response

STATE = watch_pb2.WATCH_EVENT_TYPE_STATE


class Form(IntEnum):
    """The documented JSON bodies of a change (and the ready HTTP answers made of them)."""

    MAP_V1 = 0
    MAP_V2 = 1
    DELIVERY = 2
    DATASET_RUN = 3
    CATALOG = 4


class WatchForm(IntEnum):
    """The forms a watch event of a change is sent in: one per kind of stream."""

    GRPC = 0  # a serialized Watch*Response (grpc_api)
    SSE = 1  # a server-sent event of the documented body (http_api.sse)
    SSE_ENVELOPE = 2  # the same, in the envelope of revision and update time


class Framing(Protocol):
    """How one kind of watch stream frames its events (a transport's, given to the hub)."""

    form: WatchForm

    def job_event(self, event_type: int, revision: int, renderings: Renderings) -> bytes:
        """A STATE or CHANGE event of the change at `revision` (kept by the renderings)."""
        ...

    def marker(self, event_type: int, revision: int) -> bytes:
        """A SYNCED or HEARTBEAT event at `revision` (no job)."""
        ...


class Account(Protocol):
    """What counts the renderings' bytes (the view): its size grows as forms are built."""

    size: int


_FORMS = len(Form)
_FRAMES = 2 * len(WatchForm)  # a STATE and a CHANGE frame per watch form
_FORMS_LIST = sys.getsizeof([None] * _FORMS)
_FRAMES_LIST = sys.getsizeof([None] * _FRAMES)
OVERHEAD = 0  # the object itself, its slots: measured below, once the class exists


class Renderings:
    """Every form one change is sent in, each built once when first asked."""

    __slots__ = (
        "_documented",
        "_frames",
        "_response",
        "account",
        "data",
        "ready_answers",
        "size",
    )

    def __init__(self, data: bytes) -> None:
        self.data = data  # the job's serialized protobuf message, as stored
        self.size = OVERHEAD + sys.getsizeof(data)
        self.account: Account | None = None
        self._response: bytes | None = None
        # The watch event frames, by 2 * WatchForm + (0 for STATE, 1 for CHANGE); made
        # on the first frame (most changes are never watched).
        self._frames: list[bytes | None] | None = None
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
        """The parsed job (parsed on each call: a form is built from it once, and kept)."""
        job: Message = kind.message.FromString(self.data)
        return job

    def response_bytes(self) -> bytes:
        """The serialized Get response (wire.job_response)."""
        response = self._response
        if response is None:
            response = self._response = job_response(self.data)
            self._grow(sys.getsizeof(response))
        return response

    def watch_frame(self, framing: Framing, event_type: int, revision: int) -> bytes:
        """The STATE, CHANGE or DELETED event of the change at `revision`, in `framing`'s
        form (a change is sent as CHANGE or DELETED, never both: they share a slot)."""
        frames = self._frames
        if frames is None:
            frames = self._frames = [None] * _FRAMES
            self._grow(_FRAMES_LIST)
        slot = 2 * framing.form + (event_type != STATE)
        frame = frames[slot]
        if frame is None:
            frame = frames[slot] = framing.job_event(event_type, revision, self)
            self._grow(sys.getsizeof(frame))
        return frame

    def documented_json(self, form: Form, render: Callable[[Renderings], bytes]) -> bytes:
        """The documented JSON body `form`, as `render(self)` makes it."""
        documented = self._documented
        if documented is None:
            documented = self._documented = [None] * _FORMS
            self._grow(_FORMS_LIST)
        body = documented[form]
        if body is None:
            body = documented[form] = render(self)
            self._grow(sys.getsizeof(body))
        return body

    def keep_ready_answer(self, form: Form, answer: Any, size: int) -> None:
        """Keep the ready HTTP answer of `form`, which takes `size` bytes of its own (its
        maker knows its shape; its body is the documented body, counted there)."""
        ready = self.ready_answers
        if ready is None:
            ready = self.ready_answers = [None] * _FORMS
            self._grow(_FORMS_LIST)
        if ready[form] is None:
            self._grow(size)
        ready[form] = answer


OVERHEAD = sys.getsizeof(Renderings(b""))

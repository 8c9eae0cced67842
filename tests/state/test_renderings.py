"""A change's renderings: each form built once and shared, its size the exact count of
what it keeps (sys.getsizeof of each object), and the growth added to what counts it
(the view)."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from bench.jobs import map_import
from jobstatus.v1 import map_import_pb2 as mi
from jobstatus.v1 import watch_pb2
from jobstatus_server.contract.kinds import MAP_IMPORT
from jobstatus_server.contract.wire import encode_event, job_response
from jobstatus_server.grpc_api.services import GRPC_EVENTS
from jobstatus_server.http_api.fast_path import READY_SIZE
from jobstatus_server.http_api.sse import FRAMINGS
from jobstatus_server.state.renderings import OVERHEAD, Form, Renderings, WatchForm

STATE = watch_pb2.WATCH_EVENT_TYPE_STATE
CHANGE = watch_pb2.WATCH_EVENT_TYPE_CHANGE


@dataclass
class Counter:
    size: int = 0


def test_each_form_is_built_once_and_its_bytes_counted_exactly() -> None:
    data = map_import("job-1", 42).SerializeToString()
    renderings = Renderings(data)
    account = Counter()
    renderings.account = account
    assert sys.getsizeof(renderings) == OVERHEAD
    assert renderings.size == sys.getsizeof(renderings) + sys.getsizeof(data)
    kept = renderings.size

    response = renderings.response_bytes()
    assert response == job_response(data)
    assert renderings.response_bytes() is response
    kept += sys.getsizeof(response)
    assert renderings.size == kept

    # Watch frames: a STATE and a CHANGE per watch form, in one list made on the first.
    state = renderings.watch_frame(GRPC_EVENTS, STATE, 42)
    change = renderings.watch_frame(GRPC_EVENTS, CHANGE, 42)
    assert (state, change) == (encode_event(STATE, 42, data), encode_event(CHANGE, 42, data))
    assert renderings.watch_frame(GRPC_EVENTS, STATE, 42) is state
    frames_list = sys.getsizeof([None] * 2 * len(WatchForm))
    kept += frames_list + sys.getsizeof(state) + sys.getsizeof(change)
    assert renderings.size == kept

    sse = renderings.watch_frame(FRAMINGS[MAP_IMPORT.name, False], CHANGE, 42)
    enveloped = renderings.watch_frame(FRAMINGS[MAP_IMPORT.name, True], CHANGE, 42)
    assert sse.startswith(b"id: 42\nevent: change\ndata: {") and b'"revision"' not in sse
    assert enveloped.startswith(b'id: 42\nevent: change\ndata: {"revision":')
    assert renderings.watch_frame(FRAMINGS[MAP_IMPORT.name, False], CHANGE, 42) is sse
    assert renderings.watch_frame(GRPC_EVENTS, CHANGE, 42) is change  # its own slot
    kept += sys.getsizeof(sse) + sys.getsizeof(enveloped)
    assert renderings.size == kept

    calls: list[Renderings] = []

    def render(r: Renderings) -> bytes:
        calls.append(r)
        return b'{"id":"job-1"}'

    body = renderings.documented_json(Form.MAP_V2, render)
    assert renderings.documented_json(Form.MAP_V2, render) is body
    assert calls == [renderings]
    forms_list = sys.getsizeof([None] * len(Form))
    kept += forms_list + sys.getsizeof(body)
    assert renderings.size == kept

    # A ready answer adds the size its maker states (its body is the documented body),
    # once per form, and its list on the first.
    assert renderings.ready_answers is None
    answer = ({"type": "http.response.start"}, {"type": "http.response.body", "body": body})
    renderings.keep_ready_answer(Form.MAP_V2, answer, READY_SIZE)
    renderings.keep_ready_answer(Form.MAP_V2, answer, READY_SIZE)
    assert renderings.ready_answers is not None
    assert renderings.ready_answers[Form.MAP_V2] is answer
    kept += forms_list + READY_SIZE
    assert renderings.size == kept
    # What was counted after the view took the renderings reached the view too.
    assert account.size == kept - OVERHEAD - sys.getsizeof(data)


def test_the_parsed_job_is_not_kept() -> None:
    job = map_import("job-2", 7)
    data = job.SerializeToString()
    renderings = Renderings(data)
    size = renderings.size
    parsed = renderings.message(MAP_IMPORT)
    assert parsed == mi.MapImport.FromString(data)
    assert renderings.message(MAP_IMPORT) is not parsed
    assert renderings.size == size

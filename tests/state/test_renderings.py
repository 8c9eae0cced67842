"""A change's renderings: each form built once and shared, its size the exact count of
the bytes it keeps, and the growth added to what counts it (the view)."""

from __future__ import annotations

from dataclasses import dataclass

from bench.jobs import map_import
from jobstatus.v1 import map_import_pb2 as mi
from jobstatus.v1 import watch_pb2
from jobstatus_server.contract.kinds import MAP_IMPORT
from jobstatus_server.contract.wire import encode_event, grpc_event_bytes, job_response
from jobstatus_server.state.renderings import OVERHEAD, Form, Renderings

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
    assert renderings.size == OVERHEAD + len(data)

    response = renderings.response_bytes()
    assert response == job_response(data)
    assert renderings.response_bytes() is response
    state = renderings.watch_frame(grpc_event_bytes, MAP_IMPORT, STATE, 42)
    change = renderings.watch_frame(grpc_event_bytes, MAP_IMPORT, CHANGE, 42)
    assert (state, change) == (encode_event(STATE, 42, data), encode_event(CHANGE, 42, data))
    assert renderings.watch_frame(grpc_event_bytes, MAP_IMPORT, STATE, 42) is state
    calls: list[Renderings] = []

    def render(r: Renderings) -> bytes:
        calls.append(r)
        return b'{"id":"job-1"}'

    body = renderings.documented_json(Form.MAP_V2, render)
    assert renderings.documented_json(Form.MAP_V2, render) is body
    assert calls == [renderings]
    kept = OVERHEAD + len(data) + len(response) + len(state) + len(change) + len(body)
    assert renderings.size == kept
    assert account.size == kept - OVERHEAD - len(data)  # the growth after it was counted

    # The parsed job and a message frame are counted at the length they were parsed from.
    job = renderings.message(MAP_IMPORT)
    assert job == mi.MapImport.FromString(data)
    frame = renderings.watch_frame(MAP_IMPORT.respond, MAP_IMPORT, CHANGE, 42)
    assert renderings.watch_frame(MAP_IMPORT.respond, MAP_IMPORT, CHANGE, 42) is frame
    assert renderings.size == kept + 2 * len(data)

    # A ready answer's body is the documented body: it adds nothing.
    assert renderings.ready_answers is None
    renderings.keep_ready_answer(Form.MAP_V2, ({}, {"body": body}))
    assert renderings.ready_answers is not None
    assert renderings.ready_answers[Form.MAP_V2] == ({}, {"body": body})
    assert renderings.size == kept + 2 * len(data)


def test_a_parsed_job_given_at_the_start_is_kept_and_counted() -> None:
    job = map_import("job-2", 7)
    data = job.SerializeToString()
    renderings = Renderings(data, job)
    assert renderings.message(MAP_IMPORT) is job
    assert renderings.size == OVERHEAD + 2 * len(data)

"""Watch events built from the job's stored bytes are byte for byte the messages'."""

from __future__ import annotations

import pytest
from google.protobuf.message import Message

from bench.jobs import map_import
from jobstatus.v1 import catalog_import_pb2 as cat
from jobstatus.v1 import dataset_pb2 as ds
from jobstatus.v1 import delivery_pb2 as dl
from jobstatus.v1 import map_import_pb2 as mi
from jobstatus.v1 import watch_pb2
from jobstatus_server.contract.wire import encode_event

RESPONSES: list[tuple[type[Message], str, Message]] = [
    (mi.WatchMapImportStatusResponse, "map_import", map_import("job-1", 42)),
    (mi.WatchMapImportStatusResponse, "map_import", mi.MapImport()),
    (
        dl.WatchPreparedDeliveryStatusResponse,
        "prepared_delivery",
        dl.PreparedDelivery(catalog_id="c" * 300),
    ),
    (ds.WatchDatasetStatusResponse, "dataset", ds.Dataset(dataset_id="d")),
    (cat.WatchImportStatusResponse, "catalog_import", cat.CatalogImport(id="9223372036854775807")),
]
TYPES = [
    watch_pb2.WATCH_EVENT_TYPE_UNSPECIFIED,
    watch_pb2.WATCH_EVENT_TYPE_STATE,
    watch_pb2.WATCH_EVENT_TYPE_SYNCED,
    watch_pb2.WATCH_EVENT_TYPE_CHANGE,
    watch_pb2.WATCH_EVENT_TYPE_HEARTBEAT,
]


@pytest.mark.parametrize(("response", "field", "job"), RESPONSES)
@pytest.mark.parametrize("event_type", TYPES)
@pytest.mark.parametrize("revision", [0, 1, 127, 128, 300, 2**40, 2**63 - 1])
def test_an_event_from_the_job_bytes_is_the_serialized_message(
    response: type[Message], field: str, job: Message, event_type: int, revision: int
) -> None:
    expected = response(**{"type": event_type, "revision": revision, field: job})
    built = encode_event(event_type, revision, job.SerializeToString())
    assert built == expected.SerializeToString()
    assert response.FromString(built) == expected
    bare = response(type=event_type, revision=revision)
    assert encode_event(event_type, revision, None) == bare.SerializeToString()

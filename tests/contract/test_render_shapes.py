"""The documented JSON (render.Shape), in-process: the bodies and their JSON Schema.

The REST tests check these bodies through a server; here `Shape.render` and
`Shape.schema` are called directly on the documented shapes of rest.py and on small
shapes over well-known types (for the scalar kinds the contract's bodies do not use),
with the exact JSON expected, so that a changed rule of render.py fails in
milliseconds (and mutmut, tests/mutants/tool.py, sees which line no test holds).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, timestamp_pb2, wrappers_pb2

from jobstatus.v1 import dataset_pb2 as ds
from jobstatus.v1 import delivery_pb2 as dl
from jobstatus.v1 import errors_pb2
from jobstatus.v1 import map_import_pb2 as mi
from jobstatus_server.contract.render import Key, Shape
from jobstatus_server.http_api import rest

WHEN = timestamp_pb2.Timestamp()
WHEN.FromDatetime(datetime(2026, 3, 1, 12, 30, 5, tzinfo=UTC))


def test_an_empty_map_import_has_its_always_keys() -> None:
    assert rest.MAP_V2.render(mi.MapImport()) == {
        "importRequestId": "",
        "status": None,
        "metaData": {"jobId": 0, "progress": 0, "size": 0, "area": 0, "zoomLevel": 0},
    }


def test_a_full_map_import() -> None:
    job = mi.MapImport(
        import_request_id="job-1",
        status=mi.MAP_IMPORT_STATUS_IN_PROGRESS,
        error=errors_pb2.Error(error_code=errors_pb2.ERROR_CODE_MAP_UNKNOWN, message="m"),
        meta_data=mi.MapImportMetaData(
            job_id=2**40,
            export_start=WHEN,
            progress=55,
            size=9,
            area=3,
            footprint="POLYGON",
            zoom_level=12,
            package_url="https://p",
            file_name="f.gpkg",
        ),
    )
    assert rest.MAP_V2.render(job) == {
        "importRequestId": "job-1",
        "status": "InProgress",
        "error": {"errorCode": "MAP.unknown", "message": "m"},
        "metaData": {
            "jobId": 2**40,
            "exportStart": "2026-03-01T12:30:05Z",
            "progress": 55,
            "size": 9,
            "area": 3,
            "footprint": "POLYGON",
            "zoomLevel": 12,
            "packageUrl": "https://p",
            "fileName": "f.gpkg",
        },
    }


def test_an_unknown_enum_number_renders_as_null() -> None:
    assert rest.MAP_V2.render(mi.MapImport(status=99))["status"] is None  # type: ignore[arg-type]
    # Not an always key: an unset error leaves no key; a set but empty one renders its keys.
    assert "error" not in rest.MAP_V2.render(mi.MapImport())
    empty = mi.MapImport()
    empty.error.SetInParent()
    assert rest.MAP_V2.render(empty)["error"] == {}
    assert rest.MAP_NOT_FOUND.render(mi.MapImport()) == {
        "error": {"errorCode": None, "message": ""}
    }


def test_a_delivery_lists_its_artifacts_in_order() -> None:
    job = dl.PreparedDelivery(
        catalog_id="c",
        status=dl.PREPARED_DELIVERY_STATUS_DONE,
        progress=100,
        size=2**33,
        url="https://b",
        artifacts=[
            dl.Artifact(catalog_id="c", id=1, item_key="a", url="https://a", size=2**33),
            dl.Artifact(
                catalog_id="c",
                id=2,
                item_key="b",
                artifact_type="gpkg",
                url="https://b",
                hash=dl.ArtifactHash(algorithm=dl.HASH_ALGORITHM_SHA256_HEX, hash="ab"),
                is_executable=True,
                arguments="--x",
            ),
        ],
    )
    assert rest.DELIVERY_BODY.render(job) == {
        "catalogId": "c",
        "status": "done",
        "progress": 100,
        "size": 2**33,
        "url": "https://b",
        "artifacts": [
            {"catalogId": "c", "id": 1, "itemKey": "a", "url": "https://a", "size": 2**33},
            {
                "catalogId": "c",
                "id": 2,
                "itemKey": "b",
                "artifactType": "gpkg",
                "url": "https://b",
                "size": 0,
                "hash": {"algorithm": "SHA256Hex", "hash": "ab"},
                "isExecutable": True,
                "arguments": "--x",
            },
        ],
    }
    assert rest.DELIVERY_BODY.render(dl.PreparedDelivery()) == {
        "catalogId": "",
        "status": None,
        "progress": 0,
        "size": 0,
        "artifacts": [],
    }


def test_an_unset_always_date_time_is_null() -> None:
    step = ds.DatasetImportStep(start=WHEN)
    run = ds.DatasetImportRun(id="r", steps=[step])
    assert rest.DATASET_RUN.render(run) == {
        "id": "r",
        "steps": [
            {
                "name": None,
                "start": "2026-03-01T12:30:05Z",
                "end": None,
                "entries": [],
                "status": None,
            }
        ],
        "status": None,
    }


def test_a_repeated_key_not_always_appears_only_when_it_has_items() -> None:
    shape = Shape(dl.PreparedDelivery.DESCRIPTOR, (Key("artifacts", shape=rest.ARTIFACT),))
    assert shape.render(dl.PreparedDelivery()) == {}
    rendered = shape.render(dl.PreparedDelivery(artifacts=[dl.Artifact(item_key="k")]))
    assert rendered == {
        "artifacts": [{"catalogId": "", "id": 0, "itemKey": "k", "url": "", "size": 0}]
    }


def test_a_field_with_presence_renders_when_set_even_to_zero() -> None:
    shape = Shape(mi.MapImportMetaData.DESCRIPTOR, (Key("zoom_level"), Key("progress")))
    assert shape.render(mi.MapImportMetaData()) == {}
    assert shape.render(mi.MapImportMetaData(zoom_level=0, progress=0)) == {"zoomLevel": 0}
    assert shape.render(mi.MapImportMetaData(zoom_level=3, progress=4)) == {
        "zoomLevel": 3,
        "progress": 4,
    }
    proto2 = Shape(descriptor_pb2.FieldDescriptorProto.DESCRIPTOR, (Key("number"), Key("name")))
    assert proto2.render(descriptor_pb2.FieldDescriptorProto()) == {}
    assert proto2.render(descriptor_pb2.FieldDescriptorProto(number=0, name="")) == {
        "number": 0,
        "name": "",
    }


@pytest.mark.parametrize(
    ("message", "expected", "schema"),
    [
        (wrappers_pb2.DoubleValue(value=1.5), 1.5, {"type": "number"}),
        (wrappers_pb2.FloatValue(value=0.25), 0.25, {"type": "number"}),
        (wrappers_pb2.BoolValue(value=True), True, {"type": "boolean"}),
        (wrappers_pb2.UInt32Value(value=7), 7, {"type": "integer", "format": "int64"}),
        (wrappers_pb2.Int32Value(value=-7), -7, {"type": "integer", "format": "int32"}),
        (
            wrappers_pb2.UInt64Value(value=2**64 - 1),
            2**64 - 1,
            {"type": "integer", "format": "int64"},
        ),
        (wrappers_pb2.StringValue(value="s"), "s", {"type": "string"}),
    ],
)
def test_scalar_kinds_render_as_json_types(message: Any, expected: Any, schema: Any) -> None:
    shape = Shape(message.DESCRIPTOR, (Key("value"),))
    rendered = shape.render(message)
    assert rendered == {"value": expected}
    assert type(rendered["value"]) is type(expected)
    assert shape.schema() == {
        "type": "object",
        "properties": {"value": schema},
        "additionalProperties": False,
    }
    always = Shape(message.DESCRIPTOR, (Key("value", always=True),))
    unset = always.render(type(message)())
    assert unset == {"value": type(expected)()}
    assert type(unset["value"]) is type(expected)


def test_a_shape_checks_its_keys_against_the_descriptor() -> None:
    with pytest.raises(ValueError, match=r"^jobstatus\.v1\.MapImport has no field nope$"):
        Shape(mi.MapImport.DESCRIPTOR, (Key("nope"),))
    with pytest.raises(ValueError, match=r"^jobstatus\.v1\.MapImport\.meta_data needs its Shape$"):
        Shape(mi.MapImport.DESCRIPTOR, (Key("meta_data"),))
    with pytest.raises(ValueError, match=r"^jobstatus\.v1\.MapImport\.error needs its Shape$"):
        Shape(mi.MapImport.DESCRIPTOR, (Key("error", shape=rest.MAP_META),))
    # A date-time is no nested object: it needs no Shape.
    Shape(mi.MapImport.DESCRIPTOR, (Key("expire_time"),))


def test_the_v1_schema_leaves_out_the_statuses_it_never_reports() -> None:
    schema = rest.MAP_V1.schema()
    assert schema["required"] == ["importRequestId", "status", "metaData"]
    assert schema["additionalProperties"] is False
    assert schema["type"] == "object"
    assert schema["properties"]["importRequestId"] == {"type": "string"}
    assert schema["properties"]["status"] == {
        "type": "string",
        "enum": [
            "Pending",
            "Start",
            "InProgress",
            "Pause",
            "Cancel",
            "Error",
            "Done",
            "Expired",
            "Archived",
        ],
    }
    v2 = rest.MAP_V2.schema()["properties"]["status"]["enum"]
    assert v2[:3] == ["Draft", "Pending", "Start"] and "Discovered" in v2
    error = schema["properties"]["error"]
    assert error["description"] == "Present only when the import has an error."
    assert error["type"] == "object" and "required" not in error
    assert error["properties"]["message"] == {"type": "string"}
    meta = schema["properties"]["metaData"]
    assert meta["required"] == ["jobId", "progress", "size", "area", "zoomLevel"]
    assert meta["properties"]["jobId"] == {"type": "integer", "format": "int64"}
    assert meta["properties"]["progress"] == {"type": "integer", "format": "int32"}
    assert meta["properties"]["exportStart"] == {"type": "string", "format": "date-time"}
    assert meta["additionalProperties"] is False


def test_the_schema_of_lists_and_of_null_date_times() -> None:
    run = rest.DATASET_RUN.schema()
    steps = run["properties"]["steps"]
    assert steps["type"] == "array"
    step = steps["items"]
    assert step["required"] == ["name", "start", "end", "entries", "status"]
    assert step["properties"]["start"] == {
        "type": "string",
        "format": "date-time",
        "nullable": True,
    }
    assert step["properties"]["end"] == {
        "type": "string",
        "format": "date-time",
        "nullable": True,
        "description": "null while the step runs.",
    }
    entries = step["properties"]["entries"]
    assert entries["type"] == "array"
    assert entries["items"]["properties"]["created_at"]["nullable"] is True
    # A nested object always present is not nullable: it renders its own keys.
    assert "nullable" not in rest.MAP_V1.schema()["properties"]["metaData"]
    delivery = rest.DELIVERY_BODY.schema()["properties"]
    assert delivery["artifacts"]["type"] == "array"
    assert delivery["artifacts"]["items"]["properties"]["hash"]["required"] == [
        "algorithm",
        "hash",
    ]
    assert delivery["url"]["description"].startswith("Deprecated")

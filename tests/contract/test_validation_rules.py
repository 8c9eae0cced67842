"""The contract's field rules, applied in-process: each violation with its exact text.

tests/contract/test_validation_quick.py holds the quick check to the full walk; this holds the
full walk to the rules: the field path, the description and the reason a client is
shown for each kind of rule, and the edges where a value passes. It runs in
milliseconds, so mutmut (tests/mutants/tool.py) tries it before the slow quick test.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    message_factory,
    timestamp_pb2,
)
from google.protobuf.message import Message

from jobstatus.v1 import catalog_import_pb2 as cat
from jobstatus.v1 import dataset_pb2 as ds
from jobstatus.v1 import delivery_pb2 as dl
from jobstatus.v1 import map_import_pb2 as mi
from jobstatus.v1 import options_pb2
from jobstatus_server.contract import validation
from jobstatus_server.contract.errors import FieldViolation, InvalidArgument
from jobstatus_server.contract.validation import (
    MAX_DURATION_SECONDS,
    MAX_TIMESTAMP_SECONDS,
    MIN_TIMESTAMP_SECONDS,
)

V = FieldViolation


@pytest.fixture(autouse=True)
def fresh_rules() -> Iterator[None]:
    """Each test compiles the checkers afresh (they are cached per message type), so it
    runs the compile step too, not only the checkers an earlier test left behind."""
    validation._checker.cache_clear()
    validation._quick.cache_clear()
    yield


def _probe() -> Any:
    """A message type the contract has not: the rules it declares nowhere yet (bytes, a
    pattern without a description, a required number, a required list, a double)."""
    file = descriptor_pb2.FileDescriptorProto(
        name="tests/validation_probe.proto",
        package="tests.probe",
        syntax="proto3",
        dependency=[options_pb2.DESCRIPTOR.name],
    )
    message = file.message_type.add(name="Probe")
    t = descriptor_pb2.FieldDescriptorProto
    fields: list[tuple[str, int, int, dict[str, Any]]] = [
        ("blob", t.TYPE_BYTES, t.LABEL_OPTIONAL, {"max_len": 4}),
        ("code", t.TYPE_STRING, t.LABEL_OPTIONAL, {"pattern": "^a+$"}),
        ("count", t.TYPE_INT32, t.LABEL_OPTIONAL, {"required": True}),
        ("tags", t.TYPE_STRING, t.LABEL_REPEATED, {"required": True, "max_len": 2}),
        ("data", t.TYPE_BYTES, t.LABEL_OPTIONAL, {}),
        ("ratio", t.TYPE_DOUBLE, t.LABEL_OPTIONAL, {"min": -1, "max": 2}),
        ("cap", t.TYPE_INT32, t.LABEL_OPTIONAL, {"max": 10}),
        # proto3 `optional`: checked only when set.
        ("floor", t.TYPE_INT32, t.LABEL_OPTIONAL, {"min": 1}),
        ("need", t.TYPE_INT32, t.LABEL_OPTIONAL, {"required": True}),
    ]
    for number, (name, type_, label, rules) in enumerate(fields, 1):
        field = message.field.add(name=name, number=number, type=type_, label=label)
        if name in ("floor", "need"):
            field.proto3_optional = True
            field.oneof_index = len(message.oneof_decl)
            message.oneof_decl.add(name=f"_{name}")
        if rules:
            field.options.Extensions[options_pb2.rules].CopyFrom(options_pb2.FieldRules(**rules))
    pool = descriptor_pool.Default()
    pool.AddSerializedFile(file.SerializeToString())
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tests.probe.Probe"))


Probe = _probe()


def found(message: Message) -> list[FieldViolation]:
    listed = list(validation.violations_of(message))
    # The quick check says yes exactly when the walk finds nothing.
    assert validation._quick(message.DESCRIPTOR)(message) == (not listed)
    return listed


def create_map(**meta: Any) -> mi.CreateMapImportRequest:
    return mi.CreateMapImportRequest(
        map_import=mi.MapImport(import_request_id="job-1", meta_data=mi.MapImportMetaData(**meta))
    )


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            mi.GetMapImportStatusRequest(),
            [V("import_request_id", "is required", "REQUIRED")],
        ),
        (
            mi.GetMapImportStatusRequest(import_request_id="a\x00b"),
            [V("import_request_id", "must not contain NUL characters", "NUL_CHARACTER")],
        ),
        (
            mi.ListMapImportsRequest(page_token="x" * 513),
            [V("page_token", "at most 512 characters, got 513", "TOO_LONG")],
        ),
        (
            mi.ListMapImportsRequest(page_size=-1),
            [V("page_size", "must be at least 0, got -1", "OUT_OF_RANGE")],
        ),
        (
            mi.ListMapImportsRequest(statuses=[mi.MAP_IMPORT_STATUS_DONE, 99]),  # type: ignore[list-item]
            [V("statuses[1]", "99 is not a value of jobstatus.v1.MapImportStatus", "UNKNOWN_ENUM")],
        ),
        (
            mi.WatchMapImportStatusRequest(import_request_ids=["a\x00"] * 1001),
            [V("import_request_ids", "at most 1000 elements, got 1001")],
        ),
        (
            mi.WatchMapImportStatusRequest(import_request_ids=["ok", "a\x00"]),
            [
                V(
                    "import_request_ids[1]",
                    "must not contain NUL characters",
                    "NUL_CHARACTER",
                )
            ],
        ),
        (mi.CreateMapImportRequest(), [V("map_import", "is required", "REQUIRED")]),
        (
            create_map(progress=101, job_id=-1),
            [
                V("map_import.meta_data.job_id", "must be at least 0, got -1", "OUT_OF_RANGE"),
                V("map_import.meta_data.progress", "must be at most 100, got 101", "OUT_OF_RANGE"),
            ],
        ),
        (
            create_map(zoom_level=31),
            [V("map_import.meta_data.zoom_level", "must be at most 30, got 31", "OUT_OF_RANGE")],
        ),
        (
            create_map(file_name="x" * 1025),
            [V("map_import.meta_data.file_name", "at most 1024 characters, got 1025", "TOO_LONG")],
        ),
        (
            mi.CreateMapImportRequest(map_import=mi.MapImport(import_request_id="-x")),
            [
                V(
                    "map_import.import_request_id",
                    "must be letters, digits and . _ : - not starting with a punctuation mark",
                    "PATTERN",
                )
            ],
        ),
        (
            cat.CreateImportRequest(catalog_import=cat.CatalogImport(id="12a")),
            [V("catalog_import.id", "must be a decimal int64", "PATTERN")],
        ),
        (
            ds.UpdateDatasetImportRequest(
                dataset_id="d",
                step=ds.DATASET_IMPORT_STEP_NAME_FETCH,
                entries=[
                    ds.DatasetLogEntry(detail="fine", level=ds.DATASET_LOG_LEVEL_INFO),
                    ds.DatasetLogEntry(),
                ],
            ),
            [
                V("entries[1].detail", "is required", "REQUIRED"),
                V("entries[1].level", "is required", "REQUIRED"),
            ],
        ),
        (
            ds.UpdateDatasetImportRequest(dataset_id="d", step=99),  # type: ignore[arg-type]
            [
                V(
                    "step",
                    "99 is not a value of jobstatus.v1.DatasetImportStepName",
                    "UNKNOWN_ENUM",
                )
            ],
        ),
    ],
)
def test_each_rule_names_the_field_with_its_reason(
    message: Message, expected: list[FieldViolation]
) -> None:
    assert found(message) == expected


@pytest.mark.parametrize(
    "message",
    [
        mi.GetMapImportStatusRequest(import_request_id="job-1"),
        mi.ListMapImportsRequest(page_token="x" * 512, page_size=0),
        mi.WatchMapImportStatusRequest(import_request_ids=["a"] * 1000),
        create_map(progress=100, job_id=0, file_name="x" * 1024, zoom_level=30),
        create_map(zoom_level=0),
        create_map(),  # an unset zoom_level is not checked
        cat.CreateImportRequest(catalog_import=cat.CatalogImport(id="12")),
        ds.UpdateDatasetImportRequest(
            dataset_id="d",
            step=ds.DATASET_IMPORT_STEP_NAME_FETCH,
            entries=[ds.DatasetLogEntry(detail="fine", level=ds.DATASET_LOG_LEVEL_INFO)],
        ),
        dl.CreatePreparedDeliveryRequest(prepared_delivery=dl.PreparedDelivery(catalog_id="c")),
    ],
)
def test_values_at_the_edges_pass(message: Message) -> None:
    assert found(message) == []
    validation.validate(message)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {},
            [V("count", "is required", "REQUIRED"), V("tags", "is required", "REQUIRED")],
        ),
        ({"count": 1, "tags": ["a"]}, []),
        ({"count": -1, "tags": ["a", "b"], "blob": b"1234", "data": b"x" * 1024}, []),
        ({"count": 1, "tags": ["a"], "blob": b"12345"}, [V("blob", "at most 4 bytes", "TOO_LONG")]),
        (
            {"count": 1, "tags": ["a"], "data": b"x" * 1025},
            [V("data", "at most 1024 bytes", "TOO_LONG")],
        ),
        ({"count": 1, "tags": ["a"], "code": "aa"}, []),
        (
            {"count": 1, "tags": ["a"], "code": "ab"},
            [V("code", "must be match ^a+$", "PATTERN")],
        ),
        ({"count": 1, "tags": ["a", "b", "c"]}, [V("tags", "at most 2 elements, got 3")]),
        (
            {"count": 1, "tags": ["a", "b\x00"]},
            [V("tags[1]", "must not contain NUL characters", "NUL_CHARACTER")],
        ),
        ({"count": 1, "tags": ["a"], "ratio": -1.0}, []),
        ({"count": 1, "tags": ["a"], "ratio": 2.0}, []),
        (
            {"count": 1, "tags": ["a"], "ratio": -1.5},
            [V("ratio", "must be at least -1, got -1.5", "OUT_OF_RANGE")],
        ),
        (
            {"count": 1, "tags": ["a"], "ratio": 2.5},
            [V("ratio", "must be at most 2, got 2.5", "OUT_OF_RANGE")],
        ),
        ({"count": 1, "tags": ["a"], "cap": -5}, []),
        (
            {"count": 1, "tags": ["a"], "cap": 11},
            [V("cap", "must be at most 10, got 11", "OUT_OF_RANGE")],
        ),
        ({"count": 1, "tags": ["a"], "floor": 1, "need": 2}, []),
        (
            {"count": 1, "tags": ["a"], "floor": 0},
            [V("floor", "must be at least 1, got 0", "OUT_OF_RANGE")],
        ),
        ({"count": 1, "tags": ["a"], "need": 0}, [V("need", "is required", "REQUIRED")]),
    ],
)
def test_rules_the_contract_does_not_use_yet(
    fields: dict[str, Any], expected: list[FieldViolation]
) -> None:
    assert found(Probe(**fields)) == expected


def stamped(seconds: int, nanos: int = 0) -> mi.CreateMapImportRequest:
    request = create_map()
    request.map_import.meta_data.export_start.CopyFrom(
        timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)
    )
    return request


@pytest.mark.parametrize(
    ("seconds", "nanos", "description"),
    [
        (MIN_TIMESTAMP_SECONDS, 0, None),
        (MAX_TIMESTAMP_SECONDS, 999_999_999, None),
        (MIN_TIMESTAMP_SECONDS - 1, 0, "must lie between years 1 and 9999"),
        (MAX_TIMESTAMP_SECONDS + 1, 0, "must lie between years 1 and 9999"),
        (0, 1_000_000_000, "nanos must be 0 to 999999999"),
        (0, -1, "nanos must be 0 to 999999999"),
    ],
)
def test_a_timestamp_lies_between_years_1_and_9999(
    seconds: int, nanos: int, description: str | None
) -> None:
    expected = (
        []
        if description is None
        else [V("map_import.meta_data.export_start", description, "INVALID_TIMESTAMP")]
    )
    assert found(stamped(seconds, nanos)) == expected


@pytest.mark.parametrize(
    ("seconds", "nanos", "description"),
    [
        (MAX_DURATION_SECONDS, 999_999_999, None),
        (-MAX_DURATION_SECONDS, -999_999_999, None),
        (3, 0, None),
        (0, -5, None),
        (MAX_DURATION_SECONDS + 1, 0, "is not a valid duration"),
        (-MAX_DURATION_SECONDS - 1, 0, "is not a valid duration"),
        (0, 1_000_000_000, "is not a valid duration"),
        (0, -1_000_000_000, "is not a valid duration"),
        (3, -5, "seconds and nanos must have the same sign"),
        (-3, 5, "seconds and nanos must have the same sign"),
    ],
)
def test_a_duration_is_valid(seconds: int, nanos: int, description: str | None) -> None:
    request = mi.WatchMapImportStatusRequest(
        heartbeat_interval=duration_pb2.Duration(seconds=seconds, nanos=nanos)
    )
    expected = (
        [] if description is None else [V("heartbeat_interval", description, "INVALID_DURATION")]
    )
    assert found(request) == expected


def test_a_timestamp_or_duration_checked_alone_has_no_path() -> None:
    assert found(timestamp_pb2.Timestamp(nanos=-1)) == [
        V("", "nanos must be 0 to 999999999", "INVALID_TIMESTAMP")
    ]
    assert found(duration_pb2.Duration(seconds=1, nanos=-1)) == [
        V("", "seconds and nanos must have the same sign", "INVALID_DURATION")
    ]
    assert found(timestamp_pb2.Timestamp(seconds=5)) == []


def test_validate_raises_with_the_first_five_violations_in_its_message() -> None:
    request = create_map(progress=101, job_id=-1, size=-1, area=-1, file_name="x" * 1025)
    request.map_import.import_request_id = ""
    request.map_import.meta_data.export_start.nanos = -1
    with pytest.raises(InvalidArgument) as caught:
        validation.validate(request)
    error = caught.value
    assert error.reason == "INVALID_ARGUMENT"
    assert [v.field for v in error.violations] == [
        "map_import.meta_data.job_id",
        "map_import.meta_data.export_start",
        "map_import.meta_data.progress",
        "map_import.meta_data.size",
        "map_import.meta_data.area",
        "map_import.meta_data.file_name",
    ]
    assert error.message == (
        "invalid request: map_import.meta_data.job_id: must be at least 0, got -1; "
        "map_import.meta_data.export_start: nanos must be 0 to 999999999; "
        "map_import.meta_data.progress: must be at most 100, got 101; "
        "map_import.meta_data.size: must be at least 0, got -1; "
        "map_import.meta_data.area: must be at least 0, got -1"
    )


def test_a_prefix_goes_before_every_path() -> None:
    listed = list(validation.violations_of(mi.GetMapImportStatusRequest(), "request."))
    assert listed == [V("request.import_request_id", "is required", "REQUIRED")]
    with pytest.raises(InvalidArgument) as caught:
        validation.validate(mi.GetMapImportStatusRequest(), "request.")
    assert caught.value.message == "invalid request: request.import_request_id: is required"


def test_compile_all_builds_the_checker_of_every_contained_type() -> None:
    validation._checker.cache_clear()
    validation.compile_all([mi.CreateMapImportRequest.DESCRIPTOR])
    # request, job, error, meta, Timestamp, Duration (lease_duration)
    assert validation._checker.cache_info().currsize == 6
    validation.compile_all([mi.CreateMapImportRequest.DESCRIPTOR, mi.MapImport.DESCRIPTOR])
    assert validation._checker.cache_info().currsize == 6

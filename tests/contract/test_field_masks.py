"""The compiled field-mask merge does what FieldMask.MergeMessage does (replacing
message and repeated fields), for the masks an update may carry."""

from __future__ import annotations

import pytest
from google.protobuf import field_mask_pb2

from bench.jobs import map_import
from jobstatus.v1 import delivery_pb2 as dl
from jobstatus.v1 import map_import_pb2 as mi
from jobstatus_server.usecases.jobs import mask_merger

MAP_MASKS = [
    ("status",),
    ("status", "meta_data.progress"),
    ("meta_data",),
    ("meta_data.progress", "meta_data"),
    ("meta_data", "meta_data.progress"),
    ("meta_data.export_start",),
    ("meta_data.footprint", "meta_data.zoom_level", "error"),
    ("error.message", "error.error_code"),
]


def _source() -> mi.MapImport:
    source = mi.MapImport(
        import_request_id="j",
        status=mi.MAP_IMPORT_STATUS_IN_PROGRESS,
        meta_data=mi.MapImportMetaData(progress=77, footprint="POLYGON EMPTY"),
    )
    source.error.message = "boom"
    return source


@pytest.mark.parametrize("paths", MAP_MASKS)
@pytest.mark.parametrize("source", [_source(), mi.MapImport(import_request_id="j")])
def test_map_import_masks(paths: tuple[str, ...], source: mi.MapImport) -> None:
    current = map_import("j", 5)
    expected, got = mi.MapImport(), mi.MapImport()
    expected.CopyFrom(current)
    got.CopyFrom(current)
    field_mask_pb2.FieldMask(paths=paths).MergeMessage(
        source, expected, replace_message_field=True, replace_repeated_field=True
    )
    mask_merger(mi.MapImport.DESCRIPTOR, paths)(source, got)
    assert got == expected


@pytest.mark.parametrize(
    "paths", [("artifacts",), ("status", "artifacts"), ("url", "progress", "error")]
)
def test_repeated_fields_are_replaced(paths: tuple[str, ...]) -> None:
    fields = {f.name for f in dl.PreparedDelivery.DESCRIPTOR.fields}
    if not set(p.split(".")[0] for p in paths) <= fields:
        pytest.fail(f"PreparedDelivery has no {paths}: fields are {sorted(fields)}")
    current = dl.PreparedDelivery(catalog_id="c")
    source = dl.PreparedDelivery(catalog_id="c")
    for message in (current, source):
        message.artifacts.add()
    expected, got = dl.PreparedDelivery(), dl.PreparedDelivery()
    expected.CopyFrom(current)
    got.CopyFrom(current)
    field_mask_pb2.FieldMask(paths=paths).MergeMessage(
        source, expected, replace_message_field=True, replace_repeated_field=True
    )
    mask_merger(dl.PreparedDelivery.DESCRIPTOR, paths)(source, got)
    assert got == expected

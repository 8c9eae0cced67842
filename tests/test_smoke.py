from __future__ import annotations

from jobstatus.v1 import map_import_pb2 as mi
from tests.conftest import Stubs


def test_create_and_get(stubs: Stubs, uid: str) -> None:
    created = stubs.maps.CreateMapImport(
        mi.CreateMapImportRequest(map_import=mi.MapImport(import_request_id=uid))
    ).map_import
    assert created.status == mi.MAP_IMPORT_STATUS_START
    got = stubs.maps.GetMapImportStatus(mi.GetMapImportStatusRequest(import_request_id=uid))
    assert got.map_import == created

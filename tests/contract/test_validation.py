"""Bad input: INVALID_ARGUMENT with a BadRequest field violation naming the field, and no change.

The table holds malformed requests for every kind. Each is sent through the
typed stubs; a few are sent as JSON through the real grpcurl binary too, both
JSON that grpcurl cannot encode (refused on the client side) and JSON that
encodes but breaks the contract's rules (refused by the server).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import grpc
import pytest
from google.protobuf import field_mask_pb2, timestamp_pb2
from google.protobuf.message import Message

from jobstatus.v1 import catalog_import_pb2 as cat
from jobstatus.v1 import dataset_pb2 as ds
from jobstatus.v1 import delivery_pb2 as dl
from jobstatus.v1 import errors_pb2 as er
from jobstatus.v1 import map_import_pb2 as mi
from tests.conftest import Stubs
from tests.rpcerrors import fails
from tests.serverproc import ROOT, ServerProcess

M = TypeVar("M", bound=Message)
GRPCURL = ROOT / ".venv" / "bin" / "grpcurl"
MIB = 1024 * 1024
MAP_ID = "v-map"
DELIVERY_ID = "v-delivery"


@pytest.fixture(scope="module")
def server(database_url: str) -> Iterator[ServerProcess]:
    """This module's server. Not about durability: SQLite skips the fsync per commit."""
    proc = ServerProcess(database_url, ["--sqlite-synchronous", "NORMAL"]).start()
    yield proc
    proc.stop()


@dataclass(frozen=True)
class Existing:
    """Jobs that the bad requests aim at, so a leak would show as a change."""

    dataset_id: str
    catalog_id: str


@pytest.fixture(scope="module")
def existing(stubs: Stubs) -> Existing:
    stubs.maps.CreateMapImport(
        mi.CreateMapImportRequest(map_import=mi.MapImport(import_request_id=MAP_ID))
    )
    stubs.deliveries.CreatePreparedDelivery(
        dl.CreatePreparedDeliveryRequest(
            prepared_delivery=dl.PreparedDelivery(catalog_id=DELIVERY_ID)
        )
    )
    dataset_id = stubs.datasets.CreateDataset(
        ds.CreateDatasetRequest(dataset=ds.Dataset(name="v"))
    ).dataset.dataset_id
    stubs.datasets.StartDatasetImport(ds.StartDatasetImportRequest(dataset_id=dataset_id))
    catalog_id = stubs.catalog.CreateImport(
        cat.CreateImportRequest(catalog_import=cat.CatalogImport(type=cat.CATALOG_IMPORT_TYPE_ADS))
    ).catalog_import.id
    return Existing(dataset_id=dataset_id, catalog_id=catalog_id)


def _snapshot(stubs: Stubs) -> dict[str, list[Message]]:
    """Every stored job of every kind, as listed."""
    out: dict[str, list[Message]] = {}
    token = ""
    maps: list[Message] = []
    while True:
        page = stubs.maps.ListMapImports(mi.ListMapImportsRequest(page_size=1000, page_token=token))
        maps.extend(page.map_imports)
        if not (token := page.next_page_token):
            break
    out["maps"] = maps
    deliveries: list[Message] = []
    while True:
        dpage = stubs.deliveries.ListPreparedDeliveries(
            dl.ListPreparedDeliveriesRequest(page_size=1000, page_token=token)
        )
        deliveries.extend(dpage.prepared_deliveries)
        if not (token := dpage.next_page_token):
            break
    out["deliveries"] = deliveries
    datasets: list[Message] = []
    while True:
        spage = stubs.datasets.ListDatasets(
            ds.ListDatasetsRequest(page_size=1000, page_token=token)
        )
        datasets.extend(spage.datasets)
        if not (token := spage.next_page_token):
            break
    out["datasets"] = datasets
    imports: list[Message] = []
    while True:
        cpage = stubs.catalog.ListImports(cat.ListImportsRequest(page_size=1000, page_token=token))
        imports.extend(cpage.catalog_imports)
        if not (token := cpage.next_page_token):
            break
    out["imports"] = imports
    return out


# --- request builders -------------------------------------------------------------


def _mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


def create_map(job: mi.MapImport, request_id: str = "") -> Callable[[Stubs, Existing], object]:
    request = mi.CreateMapImportRequest(request_id=request_id, map_import=job)
    return lambda s, e: s.maps.CreateMapImport(request)


def update_map(
    job: mi.MapImport, *paths: str, expected: int = 0
) -> Callable[[Stubs, Existing], object]:
    if not job.import_request_id:
        job.import_request_id = MAP_ID
    request = mi.UpdateMapImportRequest(
        map_import=job, update_mask=_mask(*paths), expected_revision=expected
    )
    return lambda s, e: s.maps.UpdateMapImport(request)


def fill(message: M, **fields: object) -> M:
    """Set fields by name, unchecked: how the tests put unknown enum numbers in a message."""
    for name, value in fields.items():
        target = getattr(message, name)
        if isinstance(value, Message):
            target.CopyFrom(value)
        elif isinstance(value, list):
            del target[:]
            target.extend(value)
        else:
            setattr(message, name, value)
    return message


def new_map(**fields: object) -> mi.MapImport:
    return fill(mi.MapImport(import_request_id="v-new"), **fields)


def stamp(seconds: int, nanos: int = 0) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


def create_delivery(job: dl.PreparedDelivery) -> Callable[[Stubs, Existing], object]:
    if not job.catalog_id:
        job.catalog_id = "v-new-delivery"
    request = dl.CreatePreparedDeliveryRequest(prepared_delivery=job)
    return lambda s, e: s.deliveries.CreatePreparedDelivery(request)


def update_delivery(job: dl.PreparedDelivery, *paths: str) -> Callable[[Stubs, Existing], object]:
    job.catalog_id = DELIVERY_ID
    request = dl.UpdatePreparedDeliveryRequest(prepared_delivery=job, update_mask=_mask(*paths))
    return lambda s, e: s.deliveries.UpdatePreparedDelivery(request)


def artifact(**fields: object) -> dl.Artifact:
    return fill(dl.Artifact(item_key="a.gpkg", url="https://x.example/a.gpkg"), **fields)


def update_dataset(**fields: object) -> Callable[[Stubs, Existing], object]:
    def call(s: Stubs, e: Existing) -> object:
        request = ds.UpdateDatasetImportRequest(
            dataset_id=e.dataset_id,
            step=ds.DATASET_IMPORT_STEP_NAME_FETCH,
            entries=[ds.DatasetLogEntry(detail="x", level=ds.DATASET_LOG_LEVEL_INFO)],
        )
        return s.datasets.UpdateDatasetImport(fill(request, **fields))

    return call


def create_import(job: cat.CatalogImport) -> Callable[[Stubs, Existing], object]:
    request = cat.CreateImportRequest(catalog_import=job)
    return lambda s, e: s.catalog.CreateImport(request)


def update_import(job: cat.CatalogImport, *paths: str) -> Callable[[Stubs, Existing], object]:
    def call(s: Stubs, e: Existing) -> object:
        sent = cat.CatalogImport()
        sent.CopyFrom(job)
        sent.id = e.catalog_id
        return s.catalog.UpdateImport(
            cat.UpdateImportRequest(catalog_import=sent, update_mask=_mask(*paths))
        )

    return call


def watch_maps(request: mi.WatchMapImportStatusRequest) -> Callable[[Stubs, Existing], object]:
    return lambda s, e: list(s.maps.WatchMapImportStatus(request, timeout=10))


# --- the table ----------------------------------------------------------------------

CASES: list[tuple[str, Callable[[Stubs, Existing], object], str]] = [
    # missing ids and messages
    ("map-create-no-id", create_map(mi.MapImport()), "map_import.import_request_id"),
    (
        "map-create-no-job",
        lambda s, e: s.maps.CreateMapImport(mi.CreateMapImportRequest()),
        "map_import",
    ),
    (
        "map-get-empty-id",
        lambda s, e: s.maps.GetMapImportStatus(mi.GetMapImportStatusRequest()),
        "import_request_id",
    ),
    (
        "map-update-no-id",
        lambda s, e: s.maps.UpdateMapImport(
            mi.UpdateMapImportRequest(
                map_import=mi.MapImport(status=mi.MAP_IMPORT_STATUS_PENDING),
                update_mask=_mask("status"),
            )
        ),
        "map_import.import_request_id",
    ),
    (
        "map-get-nul-in-id",
        lambda s, e: s.maps.GetMapImportStatus(
            mi.GetMapImportStatusRequest(import_request_id="cat\x00alog")
        ),
        "import_request_id",
    ),
    (
        "catalog-get-nul-in-id",
        lambda s, e: s.catalog.GetImportStatus(cat.GetImportStatusRequest(id="12\x0034")),
        "id",
    ),
    (
        "delivery-get-empty-id",
        lambda s, e: s.deliveries.GetPreparedDeliveryStatus(dl.GetPreparedDeliveryStatusRequest()),
        "catalog_id",
    ),
    (
        "dataset-get-empty-id",
        lambda s, e: s.datasets.GetDatasetStatus(ds.GetDatasetStatusRequest()),
        "dataset_id",
    ),
    (
        "dataset-start-empty-id",
        lambda s, e: s.datasets.StartDatasetImport(ds.StartDatasetImportRequest()),
        "dataset_id",
    ),
    (
        "catalog-get-empty-id",
        lambda s, e: s.catalog.GetImportStatus(cat.GetImportStatusRequest()),
        "id",
    ),
    # unknown enum numbers
    ("map-create-status-99", create_map(new_map(status=99)), "map_import.status"),
    (
        "map-update-status-99",
        update_map(fill(mi.MapImport(), status=99), "status"),
        "map_import.status",
    ),
    (
        "map-error-code-999",
        update_map(mi.MapImport(error=fill(er.Error(message="m"), error_code=999)), "error"),
        "map_import.error.error_code",
    ),
    (
        "map-list-status-99",
        lambda s, e: s.maps.ListMapImports(fill(mi.ListMapImportsRequest(), statuses=[99])),
        "statuses[0]",
    ),
    (
        "delivery-update-status-99",
        update_delivery(fill(dl.PreparedDelivery(), status=99), "status"),
        "prepared_delivery.status",
    ),
    (
        "delivery-get-source-9",
        lambda s, e: s.deliveries.GetPreparedDeliveryStatus(
            fill(dl.GetPreparedDeliveryStatusRequest(catalog_id=DELIVERY_ID), source=9)
        ),
        "source",
    ),
    (
        "delivery-hash-algorithm-7",
        update_delivery(
            dl.PreparedDelivery(
                artifacts=[artifact(hash=fill(dl.ArtifactHash(hash="ab"), algorithm=7))]
            ),
            "artifacts",
        ),
        "prepared_delivery.artifacts[0].hash.algorithm",
    ),
    ("dataset-step-9", update_dataset(step=9), "step"),
    (
        "dataset-level-9",
        update_dataset(entries=[fill(ds.DatasetLogEntry(detail="x"), level=9)]),
        "entries[0].level",
    ),
    (
        "catalog-create-type-99",
        create_import(fill(cat.CatalogImport(), type=99)),
        "catalog_import.type",
    ),
    (
        "catalog-update-status-99",
        update_import(fill(cat.CatalogImport(), status=99), "status"),
        "catalog_import.status",
    ),
    # numbers out of range
    (
        "map-progress-101",
        update_map(
            mi.MapImport(meta_data=mi.MapImportMetaData(progress=101)), "meta_data.progress"
        ),
        "map_import.meta_data.progress",
    ),
    (
        "map-progress-minus-1",
        create_map(new_map(meta_data=mi.MapImportMetaData(progress=-1))),
        "map_import.meta_data.progress",
    ),
    (
        "map-zoom-31",
        update_map(
            mi.MapImport(meta_data=mi.MapImportMetaData(zoom_level=31)), "meta_data.zoom_level"
        ),
        "map_import.meta_data.zoom_level",
    ),
    (
        "map-size-negative",
        update_map(mi.MapImport(meta_data=mi.MapImportMetaData(size=-5)), "meta_data.size"),
        "map_import.meta_data.size",
    ),
    (
        "map-expected-revision-negative",
        update_map(mi.MapImport(status=mi.MAP_IMPORT_STATUS_PENDING), "status", expected=-1),
        "expected_revision",
    ),
    (
        "map-list-page-size-negative",
        lambda s, e: s.maps.ListMapImports(mi.ListMapImportsRequest(page_size=-1)),
        "page_size",
    ),
    (
        "delivery-progress-101",
        update_delivery(dl.PreparedDelivery(progress=101), "progress"),
        "prepared_delivery.progress",
    ),
    (
        "delivery-artifact-size-negative",
        update_delivery(dl.PreparedDelivery(artifacts=[artifact(size=-1)]), "artifacts"),
        "prepared_delivery.artifacts[0].size",
    ),
    (
        "map-watch-start-revision-negative",
        watch_maps(mi.WatchMapImportStatusRequest(start_revision=-1)),
        "start_revision",
    ),
    # strings too long: 1 MiB, and one past the limit
    (
        "map-footprint-1mib",
        update_map(
            mi.MapImport(meta_data=mi.MapImportMetaData(footprint="x" * MIB)), "meta_data.footprint"
        ),
        "map_import.meta_data.footprint",
    ),
    (
        "map-footprint-65537",
        create_map(new_map(meta_data=mi.MapImportMetaData(footprint="x" * 65537))),
        "map_import.meta_data.footprint",
    ),
    (
        "map-error-message-1mib",
        update_map(mi.MapImport(error=er.Error(message="m" * MIB)), "error"),
        "map_import.error.message",
    ),
    (
        "map-error-message-4097",
        update_map(mi.MapImport(error=er.Error(message="m" * 4097)), "error.message"),
        "map_import.error.message",
    ),
    (
        "map-id-129",
        create_map(mi.MapImport(import_request_id="a" * 129)),
        "map_import.import_request_id",
    ),
    (
        "map-id-1mib",
        create_map(mi.MapImport(import_request_id="a" * MIB)),
        "map_import.import_request_id",
    ),
    ("map-request-id-129", create_map(new_map(), request_id="r" * 129), "request_id"),
    (
        "map-file-name-1025",
        update_map(
            mi.MapImport(meta_data=mi.MapImportMetaData(file_name="f" * 1025)),
            "meta_data.file_name",
        ),
        "map_import.meta_data.file_name",
    ),
    (
        "map-get-id-1mib",
        lambda s, e: s.maps.GetMapImportStatus(
            mi.GetMapImportStatusRequest(import_request_id="a" * MIB)
        ),
        "import_request_id",
    ),
    (
        "delivery-artifact-url-1mib",
        update_delivery(dl.PreparedDelivery(artifacts=[artifact(url="u" * MIB)]), "artifacts"),
        "prepared_delivery.artifacts[0].url",
    ),
    (
        "delivery-101-artifacts",
        update_delivery(
            dl.PreparedDelivery(artifacts=[artifact(item_key=f"k{n}") for n in range(101)]),
            "artifacts",
        ),
        "prepared_delivery.artifacts",
    ),
    (
        "dataset-name-257",
        lambda s, e: s.datasets.CreateDataset(
            ds.CreateDatasetRequest(dataset=ds.Dataset(name="n" * 257))
        ),
        "dataset.name",
    ),
    (
        "dataset-entry-detail-1mib",
        update_dataset(
            entries=[ds.DatasetLogEntry(detail="d" * MIB, level=ds.DATASET_LOG_LEVEL_INFO)]
        ),
        "entries[0].detail",
    ),
    (
        "dataset-101-entries",
        update_dataset(
            entries=[ds.DatasetLogEntry(detail="d", level=ds.DATASET_LOG_LEVEL_INFO)] * 101
        ),
        "entries",
    ),
    (
        "catalog-message-4097",
        update_import(cat.CatalogImport(message="m" * 4097), "message"),
        "catalog_import.message",
    ),
    # invalid timestamps
    (
        "map-expire-time-year-minus-1200",
        update_map(mi.MapImport(expire_time=stamp(-99999999999)), "expire_time"),
        "map_import.expire_time",
    ),
    (
        "map-expire-time-nanos-2e9",
        update_map(mi.MapImport(expire_time=stamp(1_700_000_000, 2_000_000_000)), "expire_time"),
        "map_import.expire_time",
    ),
    (
        "map-export-start-nanos-negative",
        create_map(new_map(meta_data=mi.MapImportMetaData(export_start=stamp(1_700_000_000, -1)))),
        "map_import.meta_data.export_start",
    ),
    (
        "map-imaging-end-year-10000",
        create_map(new_map(meta_data=mi.MapImportMetaData(imaging_end=stamp(253402300800)))),
        "map_import.meta_data.imaging_end",
    ),
    (
        "dataset-entry-created-at-nanos",
        update_dataset(
            entries=[
                ds.DatasetLogEntry(
                    detail="d", level=ds.DATASET_LOG_LEVEL_INFO, created_at=stamp(0, 2_000_000_000)
                )
            ]
        ),
        "entries[0].created_at",
    ),
    # id patterns
    (
        "map-id-leading-dash",
        create_map(mi.MapImport(import_request_id="-abc")),
        "map_import.import_request_id",
    ),
    (
        "map-id-space",
        create_map(mi.MapImport(import_request_id="a b")),
        "map_import.import_request_id",
    ),
    (
        "map-id-slash",
        create_map(mi.MapImport(import_request_id="a/../b")),
        "map_import.import_request_id",
    ),
    (
        "map-id-unicode",
        create_map(mi.MapImport(import_request_id="m\u00e4p")),
        "map_import.import_request_id",
    ),
    (
        "map-id-newline",
        create_map(mi.MapImport(import_request_id="abc\n")),
        "map_import.import_request_id",
    ),
    (
        "delivery-id-dot-dot",
        create_delivery(dl.PreparedDelivery(catalog_id="../etc")),
        "prepared_delivery.catalog_id",
    ),
    (
        "dataset-id-not-uuid",
        lambda s, e: s.datasets.CreateDataset(
            ds.CreateDatasetRequest(dataset=ds.Dataset(dataset_id="not-a-uuid"))
        ),
        "dataset.dataset_id",
    ),
    (
        "dataset-id-upper-case",
        lambda s, e: s.datasets.CreateDataset(
            ds.CreateDatasetRequest(
                dataset=ds.Dataset(dataset_id="0E8F6A1C-1D2B-4C3D-8E9F-A0B1C2D3E4F5")
            )
        ),
        "dataset.dataset_id",
    ),
    (
        "catalog-id-letters",
        create_import(cat.CatalogImport(id="12a", type=cat.CATALOG_IMPORT_TYPE_ADS)),
        "catalog_import.id",
    ),
    (
        "catalog-id-negative",
        create_import(cat.CatalogImport(id="-12", type=cat.CATALOG_IMPORT_TYPE_ADS)),
        "catalog_import.id",
    ),
    (
        "catalog-id-20-digits",
        create_import(cat.CatalogImport(id="1" * 20, type=cat.CATALOG_IMPORT_TYPE_ADS)),
        "catalog_import.id",
    ),
    (
        "catalog-id-past-int64",
        create_import(cat.CatalogImport(id=str(2**63), type=cat.CATALOG_IMPORT_TYPE_ADS)),
        "catalog_import.id",
    ),
    (
        "catalog-id-leading-zero",
        create_import(cat.CatalogImport(id="0042", type=cat.CATALOG_IMPORT_TYPE_ADS)),
        "catalog_import.id",
    ),
    # required and structural rules
    ("catalog-create-no-type", create_import(cat.CatalogImport()), "catalog_import.type"),
    (
        "delivery-artifact-no-item-key",
        update_delivery(dl.PreparedDelivery(artifacts=[artifact(item_key="")]), "artifacts"),
        "prepared_delivery.artifacts[0].item_key",
    ),
    (
        "delivery-artifact-no-url",
        create_delivery(dl.PreparedDelivery(artifacts=[artifact(url="")])),
        "prepared_delivery.artifacts[0].url",
    ),
    (
        "delivery-artifact-hash-empty",
        update_delivery(
            dl.PreparedDelivery(
                artifacts=[artifact(hash=dl.ArtifactHash(algorithm=dl.HASH_ALGORITHM_SHA256_HEX))]
            ),
            "artifacts",
        ),
        "prepared_delivery.artifacts[0].hash.hash",
    ),
    (
        "delivery-artifact-of-another-delivery",
        update_delivery(dl.PreparedDelivery(artifacts=[artifact(catalog_id="other")]), "artifacts"),
        "prepared_delivery.artifacts[0].catalog_id",
    ),
    (
        "delivery-item-key-twice",
        update_delivery(dl.PreparedDelivery(artifacts=[artifact(), artifact()]), "artifacts"),
        "prepared_delivery.artifacts[1].item_key",
    ),
    ("dataset-no-step", update_dataset(step=ds.DATASET_IMPORT_STEP_NAME_UNSPECIFIED), "step"),
    (
        "dataset-step-status-in-progress",
        update_dataset(step_status=ds.DATASET_IMPORT_STATUS_IN_PROGRESS),
        "step_status",
    ),
    ("dataset-nothing-to-do", update_dataset(entries=[]), "entries"),
    (
        "dataset-entry-no-detail",
        update_dataset(entries=[ds.DatasetLogEntry(level=ds.DATASET_LOG_LEVEL_INFO)]),
        "entries[0].detail",
    ),
    (
        "dataset-entry-no-level",
        update_dataset(entries=[ds.DatasetLogEntry(detail="d")]),
        "entries[0].level",
    ),
    ("map-update-mask-unknown", update_map(mi.MapImport(), "no_such_field"), "update_mask"),
    ("map-update-nothing", update_map(mi.MapImport()), "update_mask"),
    (
        "map-update-status-unspecified",
        update_map(mi.MapImport(), "status"),
        "map_import.status",
    ),
]


@pytest.mark.parametrize(("call", "field"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_request_is_invalid_argument(
    stubs: Stubs, existing: Existing, call: Callable[[Stubs, Existing], object], field: str
) -> None:
    before = _snapshot(stubs)

    failure = fails(lambda: call(stubs, existing))

    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT, failure
    assert failure.bad_request is not None, "INVALID_ARGUMENT carries a BadRequest detail"
    assert field in failure.fields, (
        f"INVALID_ARGUMENT's BadRequest names the bad field {field}, not {failure.fields}"
    )
    assert all(v.description for v in failure.bad_request.field_violations)
    assert len(failure.message) < 2000, "the message should not echo a huge value"
    assert _snapshot(stubs) == before


def test_the_whole_table_changed_nothing(stubs: Stubs, existing: Existing) -> None:
    before = _snapshot(stubs)
    for _, call, _ in CASES:
        with pytest.raises(grpc.RpcError):
            call(stubs, existing)
    assert _snapshot(stubs) == before
    assert "v-new" not in [getattr(j, "import_request_id") for j in before["maps"]]  # noqa: B009


# --- through the real grpcurl binary ---------------------------------------------------


def _grpcurl(
    server: ServerProcess, method: str, data: object | str
) -> subprocess.CompletedProcess[str]:
    body = data if isinstance(data, str) else json.dumps(data)
    return subprocess.run(
        [str(GRPCURL), "-plaintext", "-max-time", "20", "-d", body, server.address, method],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


CREATE_MAP = "jobstatus.v1.MapImportService/CreateMapImport"

UNENCODABLE = [
    ({"map_import": {"import_request_id": 123}}, "123"),
    ({"map_import": {"import_request_id": "g-abc", "meta_data": {"progress": "abc"}}}, "abc"),
    ({"map_import": {"import_request_id": "g-bool", "meta_data": {"progress": True}}}, "true"),
    ({"map_import": {"import_request_id": "g-enum", "status": "NotAStatus"}}, "NotAStatus"),
    ({"map_import": "g-string"}, "g-string"),
    ('{"map_import": {"import_request_id": "g-broken"', ""),
]


@pytest.mark.parametrize(("data", "mentions"), UNENCODABLE, ids=range(len(UNENCODABLE)))
def test_grpcurl_refuses_json_of_the_wrong_type(
    stubs: Stubs, existing: Existing, server: ServerProcess, data: object, mentions: str
) -> None:
    before = _snapshot(stubs)

    result = _grpcurl(server, CREATE_MAP, data)

    assert result.returncode != 0, result.stdout
    assert "error getting request data" in result.stderr, result.stderr
    assert mentions in result.stderr
    assert _snapshot(stubs) == before


ENCODABLE_BUT_INVALID = [
    (
        {"map_import": {"import_request_id": "g-101", "meta_data": {"progress": 101}}},
        "map_import.meta_data.progress",
    ),
    ({"mapImport": {"importRequestId": "g-99", "status": 99}}, "map_import.status"),
    (
        {"map_import": {"import_request_id": "g-minus", "meta_data": {"progress": -1}}},
        "map_import.meta_data.progress",
    ),
    ({"map_import": {"import_request_id": "bad id"}}, "map_import.import_request_id"),
    ({"map_import": {"import_request_id": "g-ts", "expire_time": "0001-01-01T00:00:00Z"}}, None),
]


@pytest.mark.parametrize(
    ("data", "field"), ENCODABLE_BUT_INVALID, ids=range(len(ENCODABLE_BUT_INVALID))
)
def test_grpcurl_shows_the_servers_field_violation(
    stubs: Stubs, existing: Existing, server: ServerProcess, data: object, field: str | None
) -> None:
    before = _snapshot(stubs)

    result = _grpcurl(server, CREATE_MAP, data)

    if field is None:  # the earliest valid timestamp: accepted, the control case
        assert result.returncode == 0, result.stderr
        created = json.loads(result.stdout)["map_import"]
        assert created["expire_time"] == "0001-01-01T00:00:00Z"
        return
    assert result.returncode != 0, result.stdout
    assert "Code: InvalidArgument" in result.stderr, result.stderr
    assert "google.rpc.BadRequest" in result.stderr
    assert f'"field":"{field}"' in result.stderr.replace(" ", "")
    assert _snapshot(stubs) == before


def test_grpcurl_lists_the_services_by_reflection(server: ServerProcess) -> None:
    result = subprocess.run(
        [str(GRPCURL), "-plaintext", server.address, "list"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    listed = set(result.stdout.split())
    assert {
        "jobstatus.v1.MapImportService",
        "jobstatus.v1.DeliveryService",
        "jobstatus.v1.DatasetService",
        "jobstatus.v1.CatalogImportService",
        "grpc.health.v1.Health",
    } <= listed

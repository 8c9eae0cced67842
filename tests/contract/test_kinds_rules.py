"""The kinds' lifecycle rules, called in-process: transitions, derived fields, refusals.

The server tests reach these through RPCs; these call `Kind` and each kind's rule on
messages directly, with the exact texts, reasons and subjects a client is shown, so
that a changed rule fails here in milliseconds (and mutmut, tests/mutants/tool.py, can
tell which line of kinds.py no test holds).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import Message

from jobstatus.v1 import catalog_import_pb2 as cat
from jobstatus.v1 import dataset_pb2 as ds
from jobstatus.v1 import delivery_pb2 as dl
from jobstatus.v1 import errors_pb2
from jobstatus.v1 import map_import_pb2 as mi
from jobstatus_server.contract import kinds
from jobstatus_server.contract.errors import FailedPrecondition, FieldViolation, InvalidArgument
from jobstatus_server.contract.kinds import (
    CATALOG_IMPORT,
    DATASET,
    DELIVERY,
    KINDS,
    MAP_IMPORT,
    Context,
)
from jobstatus_server.contract.wire import job_response, varint

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LIFETIME = timedelta(hours=5)


def context(running: Sequence[Message] = (), asked: list[list[int]] | None = None) -> Context:
    def jobs_in(statuses: Sequence[int]) -> list[Message]:
        if asked is not None:
            asked.append(list(statuses))
        return list(running)

    return Context(now=NOW, delivery_cache_lifetime=LIFETIME, jobs_in=jobs_in)


# --- Kind ------------------------------------------------------------------------------------


def test_a_forbidden_transition_names_both_statuses_and_the_allowed_ones() -> None:
    with pytest.raises(FailedPrecondition) as caught:
        MAP_IMPORT.check_transition(mi.MAP_IMPORT_STATUS_DRAFT, mi.MAP_IMPORT_STATUS_DONE)
    error = caught.value
    assert error.message == (
        "map import cannot go from Draft to Done; allowed next statuses: "
        "Cancel (MAP_IMPORT_STATUS_CANCEL), Start (MAP_IMPORT_STATUS_START)"
    )
    assert error.reason == "TRANSITION_NOT_ALLOWED"
    assert error.metadata == {"from": "Draft", "to": "Done", "allowed": "Cancel,Start"}
    assert error.subject == "status:Draft->Done"


def test_a_settled_status_allows_nothing_next() -> None:
    with pytest.raises(FailedPrecondition) as caught:
        MAP_IMPORT.check_transition(mi.MAP_IMPORT_STATUS_ARCHIVED, mi.MAP_IMPORT_STATUS_START)
    assert caught.value.message == (
        "map import cannot go from Archived to Start; allowed next statuses: none: it is settled"
    )
    assert caught.value.metadata["allowed"] == ""
    with pytest.raises(FailedPrecondition) as again:
        DELIVERY.check_transition(
            dl.PREPARED_DELIVERY_STATUS_UNSPECIFIED, dl.PREPARED_DELIVERY_STATUS_START
        )
    assert again.value.message.endswith("allowed next statuses: none: it is settled")


def test_allowed_transitions_and_staying_put_pass() -> None:
    MAP_IMPORT.check_transition(mi.MAP_IMPORT_STATUS_START, mi.MAP_IMPORT_STATUS_PENDING)
    MAP_IMPORT.check_transition(mi.MAP_IMPORT_STATUS_ARCHIVED, mi.MAP_IMPORT_STATUS_ARCHIVED)
    DELIVERY.check_transition(dl.PREPARED_DELIVERY_STATUS_ERROR, dl.PREPARED_DELIVERY_STATUS_START)
    CATALOG_IMPORT.check_transition(
        cat.CATALOG_IMPORT_STATUS_BLOCKED, cat.CATALOG_IMPORT_STATUS_FAILURE
    )


def test_the_delivery_lists_its_allowed_statuses_in_its_own_spelling() -> None:
    with pytest.raises(FailedPrecondition) as caught:
        DELIVERY.check_transition(
            dl.PREPARED_DELIVERY_STATUS_PENDING, dl.PREPARED_DELIVERY_STATUS_DONE
        )
    assert caught.value.message == (
        "prepared delivery cannot go from pending to done; "
        "allowed next statuses: error (PREPARED_DELIVERY_STATUS_ERROR), "
        "inProgress (PREPARED_DELIVERY_STATUS_IN_PROGRESS), start (PREPARED_DELIVERY_STATUS_START) "
        "(error needs error.error_code)"
    )


def test_a_refused_transition_says_what_each_allowed_status_needs() -> None:
    with pytest.raises(FailedPrecondition) as caught:
        MAP_IMPORT.check_transition(mi.MAP_IMPORT_STATUS_IN_PROGRESS, mi.MAP_IMPORT_STATUS_START)
    assert caught.value.message.endswith(
        "(Done needs meta_data.package_url and meta_data.footprint; Error needs error.message)"
    )


@pytest.mark.parametrize(
    "kind, job",
    [
        (MAP_IMPORT, mi.MapImport(import_request_id="m", status=mi.MAP_IMPORT_STATUS_DONE)),
        (MAP_IMPORT, mi.MapImport(import_request_id="m", status=mi.MAP_IMPORT_STATUS_ERROR)),
        (DELIVERY, dl.PreparedDelivery(catalog_id="c", status=dl.PREPARED_DELIVERY_STATUS_DONE)),
        (DELIVERY, dl.PreparedDelivery(catalog_id="c", status=dl.PREPARED_DELIVERY_STATUS_ERROR)),
    ],
)
def test_each_need_a_kind_names_is_enforced_by_its_rule(kind: Any, job: Any) -> None:
    """Kind.needs is what runners read before they fail: the rule refuses the status without
    each field it names, and names that field."""
    need = kind.needs[kind.status_of(job)]
    with pytest.raises(FailedPrecondition) as caught:
        kind.rule(job, None, context())
    first_field = need.split()[0]
    assert first_field.split(".")[-1] in caught.value.subject + caught.value.message


def test_due_is_the_expire_time_of_the_timed_status_only() -> None:
    done = mi.MapImport(status=mi.MAP_IMPORT_STATUS_DONE)
    assert MAP_IMPORT.due(done) is None  # no expire_time
    done.expire_time.seconds = 1_000
    done.expire_time.nanos = 500_000_000
    assert MAP_IMPORT.due(done) == 1_000.5
    for status in (mi.MAP_IMPORT_STATUS_EXPIRED, mi.MAP_IMPORT_STATUS_START):
        other = mi.MapImport(status=status)
        other.expire_time.seconds = 1_000
        assert MAP_IMPORT.due(other) is None
    delivered = dl.PreparedDelivery(status=dl.PREPARED_DELIVERY_STATUS_DONE)
    delivered.expire_time.seconds = 7
    assert DELIVERY.due(delivered) == 7.0
    assert CATALOG_IMPORT.due(cat.CatalogImport(status=cat.CATALOG_IMPORT_STATUS_SUCCESS)) is None


def test_settled_spelling_and_ids() -> None:
    assert MAP_IMPORT.is_settled(mi.MapImport(status=mi.MAP_IMPORT_STATUS_DONE))
    assert not MAP_IMPORT.is_settled(mi.MapImport(status=mi.MAP_IMPORT_STATUS_IN_PROGRESS))
    assert DATASET.is_settled(
        ds.Dataset(latest_run=ds.DatasetImportRun(status=ds.DATASET_IMPORT_STATUS_FAILED))
    )
    assert not DATASET.is_settled(ds.Dataset())
    assert MAP_IMPORT.spell(mi.MAP_IMPORT_STATUS_IN_PROGRESS) == "InProgress"
    assert DELIVERY.spell(dl.PREPARED_DELIVERY_STATUS_IN_PROGRESS) == "inProgress"
    assert MAP_IMPORT.spell(99) == "99"
    assert MAP_IMPORT.job_id(mi.MapImport(import_request_id="job-7")) == "job-7"
    assert CATALOG_IMPORT.job_id(cat.CatalogImport(id="12")) == "12"
    assert MAP_IMPORT.descriptor is mi.MapImport.DESCRIPTOR
    assert set(KINDS) == {"map_import", "prepared_delivery", "dataset", "catalog_import"}


def test_a_datasets_status_is_its_latest_runs() -> None:
    assert DATASET.status_of(ds.Dataset()) == 0
    run = ds.DatasetImportRun(status=ds.DATASET_IMPORT_STATUS_IN_PROGRESS)
    assert DATASET.status_of(ds.Dataset(latest_run=run)) == ds.DATASET_IMPORT_STATUS_IN_PROGRESS
    assert DATASET.new_id is not None
    made = DATASET.new_id()
    assert str(uuid.UUID(made)) == made


def test_a_new_catalog_id_is_a_19_digit_int64_from_the_whole_range() -> None:
    assert CATALOG_IMPORT.new_id is not None
    made = [CATALOG_IMPORT.new_id() for _ in range(200)]
    for one in made:
        assert len(one) == 19 and kinds._is_int64(one), one
        assert 10**18 <= int(one) < 2**63
    # Uniform over [10**18, 2**63): all 200 below 5 * 10**18 has a chance under 10**-60.
    assert max(int(one) for one in made) > 5 * 10**18


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("0", True),
        ("12", True),
        ("9223372036854775807", True),
        ("9223372036854775808", False),
        ("007", False),
        ("", False),
        ("-1", False),
        ("1e3", False),
        ("\u0663", False),  # ARABIC-INDIC DIGIT THREE: a digit, not ASCII
    ],
)
def test_is_int64(text: str, valid: bool) -> None:
    assert kinds._is_int64(text) is valid


@pytest.mark.parametrize(
    ("value", "encoded"),
    [(0, b"\x00"), (1, b"\x01"), (127, b"\x7f"), (128, b"\x80\x01"), (300, b"\xac\x02")],
)
def test_varint(value: int, encoded: bytes) -> None:
    assert varint(value) == encoded


def test_a_job_response_is_the_response_message_around_the_job_bytes() -> None:
    job = mi.MapImport(import_request_id="x" * 200, status=mi.MAP_IMPORT_STATUS_START)
    data = job.SerializeToString()
    built = job_response(data)
    assert built == mi.GetMapImportStatusResponse(map_import=job).SerializeToString()
    assert built == b"\x0a" + varint(len(data)) + data


# --- map import ------------------------------------------------------------------------------


def map_job(status: mi.MapImportStatus.ValueType, **meta: Any) -> mi.MapImport:
    return mi.MapImport(
        import_request_id="m", status=status, meta_data=mi.MapImportMetaData(**meta)
    )


def test_a_map_import_gets_zoom_level_1_unless_it_has_one() -> None:
    job = map_job(mi.MAP_IMPORT_STATUS_START, progress=40)
    MAP_IMPORT.rule(job, None, context())
    assert job.meta_data.HasField("zoom_level") and job.meta_data.zoom_level == 1
    assert job.meta_data.progress == 40
    zoomed = map_job(mi.MAP_IMPORT_STATUS_START, zoom_level=0)
    MAP_IMPORT.rule(zoomed, None, context())
    assert zoomed.meta_data.zoom_level == 0


@pytest.mark.parametrize(
    ("meta", "missing", "subject"),
    [
        ({}, "package_url, footprint", "meta_data.package_url,meta_data.footprint"),
        ({"package_url": "https://p"}, "footprint", "meta_data.footprint"),
        ({"footprint": "POLYGON"}, "package_url", "meta_data.package_url"),
    ],
)
def test_a_map_import_is_done_only_with_package_and_footprint(
    meta: dict[str, str], missing: str, subject: str
) -> None:
    with pytest.raises(FailedPrecondition) as caught:
        MAP_IMPORT.rule(map_job(mi.MAP_IMPORT_STATUS_DONE, **meta), None, context())
    assert caught.value.message == (
        "a map import is Done only with meta_data.package_url and meta_data.footprint; "
        f"missing: {missing}"
    )
    assert caught.value.reason == "DONE_REQUIRES_PACKAGE"
    assert caught.value.subject == subject


def test_a_done_map_import_is_at_100_percent() -> None:
    job = map_job(mi.MAP_IMPORT_STATUS_DONE, package_url="https://p", footprint="F", progress=3)
    MAP_IMPORT.rule(job, map_job(mi.MAP_IMPORT_STATUS_IN_PROGRESS), context())
    assert job.meta_data.progress == 100


def test_a_map_import_entering_error_needs_a_message_and_gets_a_code() -> None:
    with pytest.raises(FailedPrecondition) as caught:
        MAP_IMPORT.rule(map_job(mi.MAP_IMPORT_STATUS_ERROR), None, context())
    assert caught.value.message == "a map import in Error needs error.message with the reason"
    assert caught.value.reason == "ERROR_REQUIRES_MESSAGE"
    assert caught.value.subject == "error.message"
    with pytest.raises(FailedPrecondition):
        MAP_IMPORT.rule(
            map_job(mi.MAP_IMPORT_STATUS_ERROR), map_job(mi.MAP_IMPORT_STATUS_START), context()
        )

    job = map_job(mi.MAP_IMPORT_STATUS_ERROR)
    job.error.message = "disk full"
    MAP_IMPORT.rule(job, map_job(mi.MAP_IMPORT_STATUS_START), context())
    assert job.error.error_code == errors_pb2.ERROR_CODE_MAP_UNKNOWN

    coded = map_job(mi.MAP_IMPORT_STATUS_ERROR)
    coded.error.message = "gone"
    coded.error.error_code = errors_pb2.ERROR_CODE_APP_UNKNOWN
    MAP_IMPORT.rule(coded, None, context())
    assert coded.error.error_code == errors_pb2.ERROR_CODE_APP_UNKNOWN


def test_a_map_import_already_in_error_is_not_checked_again() -> None:
    job = map_job(mi.MAP_IMPORT_STATUS_ERROR)  # no message, no code
    MAP_IMPORT.rule(job, map_job(mi.MAP_IMPORT_STATUS_ERROR), context())
    assert job.error.error_code == errors_pb2.ERROR_CODE_UNSPECIFIED


# --- prepared delivery -----------------------------------------------------------------------


def artifact(
    key: str, url: str = "", kind: str = "", size: int = 0, catalog_id: str = ""
) -> dl.Artifact:
    return dl.Artifact(item_key=key, url=url, artifact_type=kind, size=size, catalog_id=catalog_id)


def delivery(
    status: dl.PreparedDeliveryStatus.ValueType, *artifacts: dl.Artifact, **fields: Any
) -> dl.PreparedDelivery:
    return dl.PreparedDelivery(catalog_id="c1", status=status, artifacts=artifacts, **fields)


def violations(error: InvalidArgument) -> list[FieldViolation]:
    return list(error.violations)


def test_an_artifact_of_another_catalog_is_refused() -> None:
    job = delivery(
        dl.PREPARED_DELIVERY_STATUS_START,
        artifact("a", catalog_id="c1"),
        artifact("b", catalog_id="c2"),
    )
    with pytest.raises(InvalidArgument) as caught:
        DELIVERY.rule(job, None, context())
    assert caught.value.message == "an artifact belongs to its delivery's catalog id"
    assert caught.value.reason == "INVALID_ARGUMENT"
    assert violations(caught.value) == [
        FieldViolation("prepared_delivery.artifacts[1].catalog_id", "must be empty or 'c1'")
    ]


def test_item_keys_are_unique_within_a_delivery() -> None:
    job = delivery(dl.PREPARED_DELIVERY_STATUS_START, artifact("a"), artifact("b"), artifact("a"))
    with pytest.raises(InvalidArgument) as caught:
        DELIVERY.rule(job, None, context())
    assert caught.value.message == "item keys are unique within a delivery"
    assert caught.value.reason == "INVALID_ARGUMENT"
    assert violations(caught.value) == [
        FieldViolation("prepared_delivery.artifacts[2].item_key", "'a' appears twice")
    ]


def test_artifacts_take_the_deliverys_catalog_id_and_sizes_add_up() -> None:
    job = delivery(
        dl.PREPARED_DELIVERY_STATUS_START,
        artifact("a", size=5),
        artifact("b", size=7, catalog_id="c1"),
        url="https://stale",
    )
    DELIVERY.rule(job, None, context())
    assert [a.catalog_id for a in job.artifacts] == ["c1", "c1"]
    assert job.size == 12
    assert job.url == ""
    assert not job.HasField("expire_time")


def test_sizes_may_add_up_to_int64_max_and_no_further() -> None:
    fits = delivery(
        dl.PREPARED_DELIVERY_STATUS_START, artifact("a", size=2**62), artifact("b", size=2**62 - 1)
    )
    DELIVERY.rule(fits, None, context())
    assert fits.size == 2**63 - 1
    over = delivery(
        dl.PREPARED_DELIVERY_STATUS_START,
        artifact("a", size=1),
        artifact("b", size=2**62),
        artifact("c", size=2**62),
    )
    with pytest.raises(InvalidArgument) as caught:
        DELIVERY.rule(over, None, context())
    assert caught.value.message == (
        "invalid request: prepared_delivery.artifacts[2].size: the artifacts' "
        "sizes add up past 9223372036854775807, the most a delivery's size holds"
    )
    assert caught.value.reason == "INVALID_ARGUMENT"
    assert violations(caught.value) == [
        FieldViolation(
            "prepared_delivery.artifacts[2].size",
            "the sizes up to this artifact add up past 9223372036854775807",
            "OUT_OF_RANGE",
        )
    ]


def test_a_delivery_is_done_only_with_artifacts() -> None:
    with pytest.raises(FailedPrecondition) as caught:
        DELIVERY.rule(delivery(dl.PREPARED_DELIVERY_STATUS_DONE), None, context())
    assert caught.value.message == "a prepared delivery is done only with its artifacts"
    assert caught.value.reason == "DONE_REQUIRES_ARTIFACTS"
    assert caught.value.subject == "prepared_delivery.artifacts"


def test_entering_done_sets_progress_url_and_expiry() -> None:
    job = delivery(
        dl.PREPARED_DELIVERY_STATUS_DONE,
        artifact("a", url="https://a", kind="zip"),
        artifact("b", url="https://b", kind="GPKG"),
        progress=10,
    )
    DELIVERY.rule(job, delivery(dl.PREPARED_DELIVERY_STATUS_IN_PROGRESS), context())
    assert job.progress == 100
    assert job.url == "https://b"
    assert job.expire_time.ToDatetime(tzinfo=UTC) == NOW + LIFETIME

    plain = delivery(
        dl.PREPARED_DELIVERY_STATUS_DONE,
        artifact("a", url="https://a", kind="zip"),
        artifact("b", url="https://b", kind="tif"),
    )
    DELIVERY.rule(plain, None, context())
    assert plain.url == "https://a"
    assert plain.expire_time.ToDatetime(tzinfo=UTC) == NOW + LIFETIME


def test_staying_done_keeps_the_expiry() -> None:
    job = delivery(dl.PREPARED_DELIVERY_STATUS_DONE, artifact("a", url="https://a"))
    job.expire_time.seconds = 1_234
    DELIVERY.rule(job, delivery(dl.PREPARED_DELIVERY_STATUS_DONE), context())
    assert job.expire_time.seconds == 1_234


def test_a_delivery_entering_error_needs_a_code() -> None:
    with pytest.raises(FailedPrecondition) as caught:
        DELIVERY.rule(
            delivery(dl.PREPARED_DELIVERY_STATUS_ERROR),
            delivery(dl.PREPARED_DELIVERY_STATUS_START),
            context(),
        )
    assert caught.value.message == "a prepared delivery in error needs error.error_code"
    assert caught.value.reason == "ERROR_REQUIRES_CODE"
    assert caught.value.subject == "prepared_delivery.error.error_code"
    coded = delivery(dl.PREPARED_DELIVERY_STATUS_ERROR)
    coded.error.error_code = errors_pb2.ERROR_CODE_DELIVERY_DOWNLOAD
    DELIVERY.rule(coded, None, context())
    # Already in error: not checked again.
    DELIVERY.rule(
        delivery(dl.PREPARED_DELIVERY_STATUS_ERROR),
        delivery(dl.PREPARED_DELIVERY_STATUS_ERROR),
        context(),
    )


def test_restarting_a_delivery_clears_its_error_and_progress() -> None:
    failed = delivery(dl.PREPARED_DELIVERY_STATUS_ERROR)
    failed.error.error_code = errors_pb2.ERROR_CODE_DELIVERY_DOWNLOAD
    job = delivery(dl.PREPARED_DELIVERY_STATUS_START, progress=60)
    job.error.CopyFrom(failed.error)
    DELIVERY.rule(job, failed, context())
    assert not job.HasField("error")
    assert job.progress == 0

    created = delivery(dl.PREPARED_DELIVERY_STATUS_START, progress=60)
    created.error.message = "kept"
    DELIVERY.rule(created, None, context())
    assert created.HasField("error") and created.progress == 60

    staying = delivery(dl.PREPARED_DELIVERY_STATUS_START, progress=60)
    staying.error.message = "kept"
    DELIVERY.rule(staying, delivery(dl.PREPARED_DELIVERY_STATUS_START), context())
    assert staying.HasField("error") and staying.progress == 60


# --- catalog import --------------------------------------------------------------------------


def catalog(
    job_id: str = "",
    type_: cat.CatalogImportType.ValueType = cat.CATALOG_IMPORT_TYPE_PRODUCTS,
    status: cat.CatalogImportStatus.ValueType = cat.CATALOG_IMPORT_STATUS_WAITING,
) -> cat.CatalogImport:
    return cat.CatalogImport(id=job_id, type=type_, status=status)


@pytest.mark.parametrize("job_id", ["007", "9223372036854775808", "12a"])
def test_an_import_id_is_a_decimal_int64(job_id: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        CATALOG_IMPORT.rule(catalog(job_id), None, context())
    assert caught.value.message == "an import id is an int64 in decimal, without leading zeros"
    assert caught.value.reason == "INVALID_ARGUMENT"
    assert violations(caught.value) == [
        FieldViolation(
            "catalog_import.id",
            "must be a decimal int64 from 0 to 9223372036854775807 without leading zeros",
            "PATTERN",
        )
    ]


def test_an_import_needs_its_type() -> None:
    with pytest.raises(InvalidArgument) as caught:
        CATALOG_IMPORT.rule(catalog("12", cat.CATALOG_IMPORT_TYPE_UNSPECIFIED), None, context())
    assert caught.value.message == "an import needs its type"
    assert caught.value.reason == "INVALID_ARGUMENT"
    assert violations(caught.value) == [
        FieldViolation("catalog_import.type", "is required", "REQUIRED")
    ]


def test_a_waiting_import_is_blocked_behind_a_running_one_of_its_type() -> None:
    asked: list[list[int]] = []
    running = [catalog("1", cat.CATALOG_IMPORT_TYPE_ADS, cat.CATALOG_IMPORT_STATUS_IN_PROGRESS)]
    other_type = catalog("12")
    CATALOG_IMPORT.rule(other_type, None, context(running, asked))
    assert other_type.status == cat.CATALOG_IMPORT_STATUS_WAITING
    assert asked == [[cat.CATALOG_IMPORT_STATUS_IN_PROGRESS]]

    same_type = catalog("13", cat.CATALOG_IMPORT_TYPE_ADS)
    CATALOG_IMPORT.rule(same_type, None, context(running))
    assert same_type.status == cat.CATALOG_IMPORT_STATUS_BLOCKED

    unnamed = catalog("", cat.CATALOG_IMPORT_TYPE_ADS)  # the server names it
    CATALOG_IMPORT.rule(unnamed, None, context(running))
    assert unnamed.status == cat.CATALOG_IMPORT_STATUS_BLOCKED


def test_only_a_waiting_import_looks_for_running_ones() -> None:
    asked: list[list[int]] = []
    running = [catalog("1", cat.CATALOG_IMPORT_TYPE_ADS, cat.CATALOG_IMPORT_STATUS_IN_PROGRESS)]
    job = catalog("14", cat.CATALOG_IMPORT_TYPE_ADS, cat.CATALOG_IMPORT_STATUS_IN_PROGRESS)
    CATALOG_IMPORT.rule(job, None, context(running, asked))
    assert job.status == cat.CATALOG_IMPORT_STATUS_IN_PROGRESS
    assert asked == []


def test_an_imports_type_cannot_change_and_its_id_is_not_checked_again() -> None:
    old = catalog("12", cat.CATALOG_IMPORT_TYPE_ADS)
    with pytest.raises(InvalidArgument) as caught:
        CATALOG_IMPORT.rule(catalog("12", cat.CATALOG_IMPORT_TYPE_PANELS), old, context())
    assert caught.value.message == "an import's type cannot change"
    assert caught.value.reason == "INVALID_ARGUMENT"
    assert violations(caught.value) == [
        FieldViolation("catalog_import.type", "cannot change", "IMMUTABLE")
    ]
    asked: list[list[int]] = []
    running = [catalog("1", cat.CATALOG_IMPORT_TYPE_ADS, cat.CATALOG_IMPORT_STATUS_IN_PROGRESS)]
    same = catalog("007", cat.CATALOG_IMPORT_TYPE_ADS)
    CATALOG_IMPORT.rule(same, old, context(running, asked))
    assert same.status == cat.CATALOG_IMPORT_STATUS_WAITING
    assert asked == []


@pytest.mark.parametrize(
    ("kind", "ids", "message", "reason", "metadata"),
    [
        (
            MAP_IMPORT,
            ("catalog-42",),
            "no map import with import_request_id 'catalog-42'",
            "MAP.notFound",
            {"import_request_id": "catalog-42"},
        ),
        (
            DELIVERY,
            ("a", "b"),
            "no prepared delivery with catalog_id 'a', 'b'",
            "DELIVERY.notFound",
            {"catalog_id": "a,b"},
        ),
        (
            DATASET,
            ("d",),
            "no dataset with dataset_id 'd'",
            "DATASET_NOT_FOUND",
            {"dataset_id": "d"},
        ),
    ],
)
def test_an_unknown_job_is_one_not_found_for_every_transport(
    kind: Any, ids: tuple[str, ...], message: str, reason: str, metadata: dict[str, str]
) -> None:
    error = kind.not_found(*ids)
    assert (error.message, error.reason, error.metadata) == (message, reason, metadata)


def test_starting_a_dataset_import_names_no_expected_revision() -> None:
    start = DATASET.operations["StartDatasetImport"]
    assert start.expected_revision(ds.StartDatasetImportRequest(dataset_id="d")) == 0
    assert start.job_id(ds.StartDatasetImportRequest(dataset_id="d")) == "d"


def test_the_readme_lists_what_each_status_needs() -> None:
    """README's "What each status needs" is Kind.needs, row for row."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for kind in KINDS.values():
        for status, need in kind.needs.items():
            row = f"| {kind.display} | {kind.spell_both(status)} | {need} |"
            assert row in readme, f"README.md lacks the row {row!r}"

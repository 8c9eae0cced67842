"""The dashboard in a real headless Chromium (tests/browser): it loads clean, shows the
server's counts and follows them, filters and pages on the server (status, "active
only", id prefix, creation time, kind), keeps the rows on screen live from a watch of
their ids, shows a job's history, renders markup in job fields as text, survives a
server restart and a resume point the server no longer keeps, and asks for a key when
keys are active.

SQLite only: the page reads the counts push, the page route, the SSE watch and the
history route, which tests/usecases/test_counts.py, tests/http_api/test_dashboard_jobs.py,
test_sse.py and test_history.py test on both databases.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from google.protobuf import field_mask_pb2

from jobstatus import Client
from jobstatus.v1 import catalog_import_pb2 as cat
from jobstatus.v1 import dataset_pb2 as ds
from jobstatus.v1 import errors_pb2
from jobstatus.v1 import map_import_pb2 as mi
from jobstatus_server.http_api.dashboard import ID_KEYS
from tests.browser import Browser, BrowserError
from tests.conftest import Stubs, sqlite_url
from tests.restkit import keyed_server
from tests.serverproc import ServerProcess

HOSTILE = "<img src=x onerror=alert(1)>"
# Every row the table draws: kind, id, status, outcome, progress, revision.
ROWS = """[...document.querySelectorAll('#rows .row')].map((row) => ({
  kind: row.dataset.kind, id: row.dataset.id, status: row.dataset.status,
  outcome: row.dataset.outcome, revision: Number(row.dataset.revision),
  progress: row.querySelector('.progress').dataset.progress,
  colour: getComputedStyle(row.querySelector('.status')).color,
}))"""
IDS = "[...document.querySelectorAll('#rows .row')].map((row) => row.dataset.id)"
LIVE = "document.body.dataset.connection === 'live'"
GENERATION = "Number(document.body.dataset.pageGeneration || 0)"
COLOURS = {
    "running": "rgb(31, 111, 235)",
    "succeeded": "rgb(26, 127, 55)",
    "failed": "rgb(207, 34, 46)",
}
PAGE_SIZE = 50  # app.js's


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(sqlite_url(tmp_path_factory.mktemp("dashboard"))).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def stubs(server: ServerProcess) -> Iterator[Stubs]:
    connected = Stubs.connect(server.address)
    yield connected
    connected.channel.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with Browser(1400, 2400) as opened:
        yield opened


@pytest.fixture
def page(server: ServerProcess, browser: Browser) -> Browser:
    """The dashboard, opened afresh for each test (the default view: map imports, active)."""
    assert browser.goto(server.http_url + "/") == 200
    browser.wait_for(LIVE)
    return browser


def _rows(page: Browser) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = page.evaluate(ROWS)
    return rows


def _ids(page: Browser) -> list[str]:
    ids: list[str] = page.evaluate(IDS)
    return ids


def _choose(page: Browser, selector: str, value: str) -> None:
    """Set a select's (or a datetime input's) value as a person would: a change event."""
    page.evaluate(
        f"(() => {{ const node = document.querySelector({json.dumps(selector)});"
        f" node.value = {json.dumps(value)}; node.dispatchEvent(new Event('change')); }})()"
    )


def _shows(page: Browser, ids: list[str]) -> None:
    """Wait until the table shows exactly `ids`, in this order; fail with what it shows."""
    expected = json.dumps(json.dumps(ids, separators=(",", ":")))
    try:
        page.wait_for(f"JSON.stringify({IDS}) === {expected}")
    except BrowserError as error:
        seen = page.evaluate(
            "JSON.stringify({ids: " + IDS + ","
            " pager: document.querySelector('#page-info').textContent,"
            " error: document.querySelector('#page-error').textContent,"
            " prefix: document.querySelector('#filter-prefix').value,"
            " body: {...document.body.dataset}})"
        )
        raise AssertionError(f"the table does not show {ids}: {seen}") from error


def _create(stubs: Stubs, job_id: str) -> int:
    request = mi.CreateMapImportRequest(map_import=mi.MapImport(import_request_id=job_id))
    return int(stubs.maps.CreateMapImport(request).map_import.revision)


def _update(
    stubs: Stubs, job_id: str, status: mi.MapImportStatus.ValueType, progress: int = 0
) -> int:
    job = mi.MapImport(
        import_request_id=job_id, status=status, meta_data=mi.MapImportMetaData(progress=progress)
    )
    paths = ["status", "meta_data.progress"] if progress else ["status"]
    request = mi.UpdateMapImportRequest(
        map_import=job, update_mask=field_mask_pb2.FieldMask(paths=paths)
    )
    return int(stubs.maps.UpdateMapImport(request).map_import.revision)


def _cards(page: Browser) -> dict[str, dict[str, int]]:
    """The summary cards: per kind, the count shown for each status."""
    cards: dict[str, dict[str, int]] = page.evaluate(
        "Object.fromEntries([...document.querySelectorAll('.card')].map((card) =>"
        " [card.dataset.kind, Object.fromEntries([...card.querySelectorAll('.chip')].map((chip) =>"
        " [chip.dataset.status, Number(chip.querySelector('b').textContent)]))]))"
    )
    return cards


def test_the_page_loads_without_console_errors_under_a_strict_csp(
    server: ServerProcess, page: Browser
) -> None:
    errors = [m for m in page.call("console") if m["type"] in ("error", "pageerror")]
    assert errors == []
    answer = httpx.get(server.http_url + "/")
    policy = answer.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    # Nothing is loaded from another host.
    assert "http://" not in answer.text and "https://" not in answer.text
    assert page.evaluate("document.querySelector('#key-prompt').hidden") is True
    cards = page.evaluate("[...document.querySelectorAll('.card')].map((c) => c.dataset.kind)")
    assert cards == list(ID_KEYS)
    # The default view: the first kind, active jobs only.
    assert page.evaluate("document.querySelector('#filter-kind').value") == "map_import"
    assert page.evaluate("document.querySelector('#filter-active').checked") is True


def test_the_counts_are_the_server_s_and_follow_its_changes(
    server: ServerProcess, stubs: Stubs, page: Browser
) -> None:
    prefix = f"cnt-{uuid.uuid4().hex[:6]}"
    for n in range(3):
        _create(stubs, f"{prefix}-{n}")
    last = _update(stubs, f"{prefix}-0", mi.MAP_IMPORT_STATUS_IN_PROGRESS)
    last = _update(stubs, f"{prefix}-1", mi.MAP_IMPORT_STATUS_CANCEL)
    page.wait_for(f"Number(document.body.dataset.countsRevision) >= {last}")
    expected = httpx.get(server.http_url + "/api/v1/counts").json()
    assert expected["revision"] == last  # nothing else was written meanwhile
    shown = _cards(page)
    for count in expected["counts"]:
        if count["label"] in shown[count["kind"]]:
            assert shown[count["kind"]][count["label"]] == count["count"], count
    assert shown["map_import"]["Cancel"] >= 1
    # A change is pushed to the page: its counts move with it.
    before = shown["map_import"]["InProgress"]
    moved = _update(stubs, f"{prefix}-2", mi.MAP_IMPORT_STATUS_IN_PROGRESS)
    page.wait_for(f"Number(document.body.dataset.countsRevision) >= {moved}")
    assert _cards(page)["map_import"]["InProgress"] == before + 1


def test_each_filter_is_served_by_the_server(
    server: ServerProcess, stubs: Stubs, page: Browser
) -> None:
    prefix = f"flt-{uuid.uuid4().hex[:6]}"
    _create(stubs, f"{prefix}-start")
    _create(stubs, f"{prefix}-run")
    _update(stubs, f"{prefix}-run", mi.MAP_IMPORT_STATUS_IN_PROGRESS)
    _create(stubs, f"{prefix}-gone")
    _update(stubs, f"{prefix}-gone", mi.MAP_IMPORT_STATUS_CANCEL)
    page.call("fill", selector="#filter-prefix", value=prefix)
    # Active only (the default), by id.
    _shows(page, [f"{prefix}-run", f"{prefix}-start"])
    page.call("click", selector="#filter-active")
    _shows(page, [f"{prefix}-gone", f"{prefix}-run", f"{prefix}-start"])
    _choose(page, "#filter-status", "Cancel")
    _shows(page, [f"{prefix}-gone"])
    _choose(page, "#filter-status", "InProgress")
    _shows(page, [f"{prefix}-run"])
    _choose(page, "#filter-status", "")
    # A creation time range: the page's time inputs are in the browser's local time.
    offset = page.evaluate("new Date().getTimezoneOffset()")
    future = datetime.now(UTC) + timedelta(hours=1) - timedelta(minutes=offset)
    _choose(page, "#filter-since", future.strftime("%Y-%m-%dT%H:%M:%S"))
    page.wait_for("document.querySelector('#empty').hidden === false")
    assert _ids(page) == []
    _choose(page, "#filter-since", "")
    _choose(page, "#filter-until", future.strftime("%Y-%m-%dT%H:%M:%S"))
    _shows(page, [f"{prefix}-gone", f"{prefix}-run", f"{prefix}-start"])
    # Another kind has none of these.
    _choose(page, "#filter-kind", "prepared_delivery")
    page.wait_for("document.querySelector('#empty').hidden === false")
    # A status chip of a card is a filter too.
    _choose(page, "#filter-kind", "map_import")
    page.call("fill", selector="#filter-prefix", value="")
    page.call("click", selector=".card[data-kind='map_import'] .chip[data-status='Cancel']")
    page.wait_for(
        "document.querySelector('#filter-status').value === 'Cancel'"
        f" && ({ROWS}).length > 0 && ({ROWS}).every((r) => r.status === 'Cancel')"
    )
    assert {row["status"] for row in _rows(page)} == {"Cancel"}
    assert {row["colour"] for row in _rows(page)} == {COLOURS["failed"]}


def test_pages_are_read_one_at_a_time(server: ServerProcess, stubs: Stubs, page: Browser) -> None:
    prefix = f"pg-{uuid.uuid4().hex[:6]}"
    made = [f"{prefix}-{n:03}" for n in range(PAGE_SIZE * 2 + 7)]
    futures = [
        stubs.maps.CreateMapImport.future(
            mi.CreateMapImportRequest(map_import=mi.MapImport(import_request_id=job_id))
        )
        for job_id in made
    ]
    for future in futures:
        future.result(timeout=60)
    page.call("fill", selector="#filter-prefix", value=prefix)
    _shows(page, made[:PAGE_SIZE])
    assert page.evaluate("document.querySelector('#page-prev').disabled") is True
    page.call("click", selector="#page-next")
    _shows(page, made[PAGE_SIZE : 2 * PAGE_SIZE])
    page.call("click", selector="#page-next")
    _shows(page, made[2 * PAGE_SIZE :])
    assert page.evaluate("document.querySelector('#page-next').disabled") is True
    assert "(the last)" in page.evaluate("document.querySelector('#page-info').textContent")
    page.call("click", selector="#page-prev")
    _shows(page, made[PAGE_SIZE : 2 * PAGE_SIZE])
    # The page holds one page of jobs, never the store, and watches only the rows on
    # screen: each page's watch ends when the next page is read.
    assert page.evaluate("document.querySelectorAll('#rows .row').length") == PAGE_SIZE
    streams = ""
    for _ in range(100):
        metrics = httpx.get(server.http_url + "/metrics").text
        streams = next(
            line for line in metrics.splitlines() if line.startswith("jobstatus_http_watch_streams")
        )
        if streams.endswith(" 1.0"):
            break
        time.sleep(0.1)
    assert streams == "jobstatus_http_watch_streams 1.0"


def test_a_row_on_screen_follows_the_live_feed(
    server: ServerProcess, stubs: Stubs, page: Browser
) -> None:
    prefix = f"live-{uuid.uuid4().hex[:6]}"
    made = [f"{prefix}-{n:03}" for n in range(PAGE_SIZE + 3)]
    for job_id in made:
        _create(stubs, job_id)
    page.call("fill", selector="#filter-prefix", value=prefix)
    _shows(page, made[:PAGE_SIZE])
    page.call("click", selector="#page-next")  # not the first page: it is never read again
    _shows(page, made[PAGE_SIZE:])
    generation = page.evaluate(GENERATION)
    watched = made[PAGE_SIZE + 1]
    revision = 0
    for progress in (20, 55):
        revision = _update(stubs, watched, mi.MAP_IMPORT_STATUS_IN_PROGRESS, progress)
    row = page.wait_for(
        f"({ROWS}).find((r) => r.id === {json.dumps(watched)} && r.revision === {revision})"
    )
    assert (row["status"], row["progress"], row["outcome"]) == ("InProgress", "55", "running")
    assert page.evaluate(GENERATION) == generation  # from the watch, not a new read


def _open(page: Browser, job_id: str, kind: str = "map_import") -> None:
    _choose(page, "#filter-kind", kind)
    page.call("fill", selector="#filter-prefix", value=job_id)
    page.wait_for(
        f"document.querySelectorAll('#rows .row').length === 1 && "
        f"document.querySelector('#rows .row').dataset.id === {json.dumps(job_id)}"
    )
    page.call("click", selector="#rows .row")
    page.wait_for("!document.querySelector('#detail').hidden")


def _close(page: Browser) -> None:
    page.call("click", selector="#detail-close")
    page.call("fill", selector="#filter-prefix", value="")


def test_a_job_s_detail_shows_its_history(
    server: ServerProcess, stubs: Stubs, page: Browser
) -> None:
    job_id = f"hist-{uuid.uuid4().hex[:8]}"
    _create(stubs, job_id)
    for progress in (10, 50):
        _update(stubs, job_id, mi.MAP_IMPORT_STATUS_IN_PROGRESS, progress)
    history = httpx.get(f"{server.http_url}/api/v1/history/map_import/{job_id}").json()
    revisions = [str(c["revision"]) for c in history["changes"]]
    assert len(revisions) == 3
    _open(page, job_id)
    shown = page.wait_for(
        "(() => { const rows = [...document.querySelectorAll('.history-changes tr')].slice(1)"
        ".map((tr) => tr.firstChild.textContent);"
        f" return rows.length === {len(revisions)} && rows; }})()"
    )
    assert shown == revisions
    spans = page.evaluate(
        "[...document.querySelectorAll('ol.spans li .status')].map((s) => s.textContent)"
    )
    assert spans == ["Start", "InProgress"]  # the timeline: time spent in each status
    assert page.evaluate("document.querySelectorAll('.timeline span').length") == 2
    json_text = page.evaluate("document.querySelector('#detail pre.json').textContent")
    assert json.loads(json_text)["metaData"]["progress"] == 50
    _close(page)


def test_markup_in_job_fields_renders_as_text(stubs: Stubs, page: Browser) -> None:
    map_id = f"xss-{uuid.uuid4().hex[:8]}"
    _create(stubs, map_id)
    stubs.maps.UpdateMapImport(
        mi.UpdateMapImportRequest(
            map_import=mi.MapImport(
                import_request_id=map_id,
                status=mi.MAP_IMPORT_STATUS_ERROR,
                error=errors_pb2.Error(
                    error_code=errors_pb2.ERROR_CODE_MAP_EXPORT_MAP_FAILED, message=HOSTILE
                ),
            )
        )
    )
    imported = stubs.catalog.CreateImport(
        cat.CreateImportRequest(
            catalog_import=cat.CatalogImport(type=cat.CATALOG_IMPORT_TYPE_PANELS)
        )
    ).catalog_import
    for status, message in (
        (cat.CATALOG_IMPORT_STATUS_IN_PROGRESS, ""),
        (cat.CATALOG_IMPORT_STATUS_FAILURE, HOSTILE),
    ):
        stubs.catalog.UpdateImport(
            cat.UpdateImportRequest(
                catalog_import=cat.CatalogImport(id=imported.id, status=status, message=message),
                update_mask=field_mask_pb2.FieldMask(paths=["status", "message"]),
            )
        )
    dataset = stubs.datasets.CreateDataset(ds.CreateDatasetRequest(dataset=ds.Dataset())).dataset
    stubs.datasets.StartDatasetImport(ds.StartDatasetImportRequest(dataset_id=dataset.dataset_id))
    stubs.datasets.UpdateDatasetImport(
        ds.UpdateDatasetImportRequest(
            dataset_id=dataset.dataset_id,
            step=ds.DATASET_IMPORT_STEP_NAME_FETCH,
            entries=[ds.DatasetLogEntry(detail=HOSTILE, level=ds.DATASET_LOG_LEVEL_ERROR)],
            step_status=ds.DATASET_IMPORT_STATUS_FAILED,
        )
    )
    page.call("click", selector="#filter-active")  # these are settled
    for kind, job_id in (
        ("map_import", map_id),
        ("catalog_import", imported.id),
        ("dataset", dataset.dataset_id),
    ):
        _open(page, job_id, kind)
        page.wait_for(
            f"document.querySelector('#detail').innerText.includes({json.dumps(HOSTILE)})"
        )
        assert page.evaluate("document.querySelectorAll('img').length") == 0
        _close(page)
    assert page.call("dialogs") == []


def _api_rows(server: ServerProcess, prefix: str) -> set[tuple[str, str, int]]:
    """The map imports with ids starting with `prefix` as the API lists them:
    (id, status in documented spelling, revision)."""
    with Client(server.address) as client:
        return {
            (job.import_request_id, str(mi.MapImportStatus.Name(job.status)), int(job.revision))
            for job in client.map_imports.list(page_size=1000)
            if job.import_request_id.startswith(prefix)
        }


def _page_rows(page: Browser) -> set[tuple[str, str, int]]:
    spelled = {
        "Start": "MAP_IMPORT_STATUS_START",
        "InProgress": "MAP_IMPORT_STATUS_IN_PROGRESS",
    }
    return {(r["id"], spelled.get(r["status"], r["status"]), r["revision"]) for r in _rows(page)}


def _settle_on(page: Browser, expected: set[tuple[str, str, int]]) -> None:
    state: set[tuple[str, str, int]] = set()
    for _ in range(300):
        state = _page_rows(page)
        if state == expected:
            return
        time.sleep(0.2)
    assert state == expected


def test_a_restart_with_the_page_open_ends_with_exactly_the_api_s_state(
    server: ServerProcess, stubs: Stubs, page: Browser
) -> None:
    prefix = f"rs-{uuid.uuid4().hex[:8]}"
    before = f"{prefix}-before"
    _create(stubs, before)
    page.call("fill", selector="#filter-prefix", value=prefix)
    _shows(page, [before])
    page.wait_for(LIVE)
    assert server.terminate() == 0
    page.wait_for("document.body.dataset.connection === 'reconnecting'")
    server.start()  # the same ports: the page reconnects by itself
    again = Stubs.connect(server.address)
    try:
        _create(again, f"{prefix}-after")
        for progress in (20, 40, 60):
            _update(again, before, mi.MAP_IMPORT_STATUS_IN_PROGRESS, progress)
    finally:
        again.channel.close()
    page.wait_for(LIVE)
    _settle_on(page, _api_rows(server, prefix))


def test_a_resume_point_the_server_no_longer_keeps_reads_the_page_again(
    tmp_path_factory: pytest.TempPathFactory, browser: Browser
) -> None:
    """The page's server goes away; meanwhile another server on the same database writes
    and compacts the history past the page's resume point; the page's server comes back:
    the row watch is answered 410, the page is read again, and ends with the API's state."""
    url = sqlite_url(tmp_path_factory.mktemp("resync"))
    compacting = ["--history-count", "3", "--compact-interval", "0.2"]
    server = ServerProcess(url, compacting).start()
    other = ServerProcess(url, compacting)
    try:
        job_id = f"rsy-{uuid.uuid4().hex[:8]}"
        with Client(server.address) as client:
            client.map_imports.create(mi.MapImport(import_request_id=job_id))
        assert browser.goto(server.http_url + "/") == 200
        browser.wait_for(f"({ROWS}).some((r) => r.id === {json.dumps(job_id)})")
        browser.wait_for(LIVE)
        generation = browser.evaluate(GENERATION)
        resume_point = max(r["revision"] for r in _rows(browser))
        assert server.terminate() == 0
        browser.wait_for("document.body.dataset.connection === 'reconnecting'")
        other.start()
        with Client(other.address) as client:
            for progress in range(1, 8):
                client.map_imports.update(
                    mi.MapImport(
                        import_request_id=job_id,
                        status=mi.MAP_IMPORT_STATUS_IN_PROGRESS,
                        meta_data=mi.MapImportMetaData(progress=progress),
                    )
                )
            for _ in range(600):  # compaction runs in the background
                if client.map_imports.history(job_id).oldest_revision > resume_point + 1:
                    break
                time.sleep(0.1)
            assert client.map_imports.history(job_id).oldest_revision > resume_point + 1
        other.stop()
        server.start()
        browser.wait_for(f"{GENERATION} > {generation}")
        browser.wait_for(LIVE)
        _settle_on(browser, _api_rows(server, "rsy-"))
    finally:
        other.stop()
        server.stop()


def test_a_job_the_retention_policy_deletes_leaves_the_page(
    tmp_path_factory: pytest.TempPathFactory, browser: Browser
) -> None:
    url = sqlite_url(tmp_path_factory.mktemp("retention"))
    server = ServerProcess(url, ["--retention-age", "2", "--compact-interval", "0.5"]).start()
    try:
        stubs = Stubs.connect(server.address)
        try:
            _create(stubs, "kept")
            _create(stubs, "gone")
            _update(stubs, "gone", mi.MAP_IMPORT_STATUS_CANCEL)
        finally:
            stubs.channel.close()
        assert browser.goto(server.http_url + "/") == 200
        browser.wait_for(LIVE)
        browser.call("click", selector="#filter-active")
        _shows(browser, ["gone", "kept"])
        # Settled for longer than the age, the job is deleted: its row and its count go.
        _shows(browser, ["kept"])
        browser.wait_for(
            "document.querySelector(\".card[data-kind='map_import'] .chip[data-status='Cancel']\")"
            ".dataset.count === '0'"
        )
    finally:
        server.stop()


def test_with_keys_active_the_page_without_a_key_shows_only_the_prompt(
    tmp_path_factory: pytest.TempPathFactory, browser: Browser
) -> None:
    keys = {"reader": ("acme", ["read"]), "writer": ("acme", ["write"])}
    with keyed_server(sqlite_url(tmp_path_factory.mktemp("keyed")), keys) as keyed:
        stubs = Stubs.connect(keyed.server.address)
        try:
            job_id = f"secret-{uuid.uuid4().hex[:8]}"
            stubs.maps.CreateMapImport(
                mi.CreateMapImportRequest(map_import=mi.MapImport(import_request_id=job_id)),
                metadata=(("x-api-key", keyed.keys["writer"]),),
            )
        finally:
            stubs.channel.close()
        assert browser.goto(keyed.server.http_url + "/") == 200
        browser.wait_for("!document.querySelector('#key-prompt').hidden")
        assert browser.evaluate("document.querySelector('#app').hidden") is True
        assert job_id not in browser.evaluate("document.body.innerText")
        # A key without the read scope is refused at the prompt.
        browser.call("fill", selector="#key-input", value=keyed.keys["writer"])
        browser.call("click", selector="#key-prompt button")
        browser.wait_for("document.querySelector('#key-error').textContent.includes('read')")
        assert browser.evaluate("document.querySelector('#app').hidden") is True
        # The reader's key opens the dashboard; it is kept for this tab only.
        browser.call("fill", selector="#key-input", value=keyed.keys["reader"])
        browser.call("click", selector="#key-prompt button")
        browser.wait_for(f"({ROWS}).some((r) => r.id === {json.dumps(job_id)})")
        browser.wait_for(
            "document.querySelector(\".card[data-kind='map_import'] .chip[data-status='Start']\")"
            ".dataset.count === '1'"
        )
        assert (
            browser.evaluate("sessionStorage.getItem('jobstatus.apiKey')") == keyed.keys["reader"]
        )
        assert browser.evaluate("localStorage.length") == 0

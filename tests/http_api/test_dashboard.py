"""The dashboard in a real headless Chromium (tests/browser): it loads clean, follows
`jobstatus demo` live, shows a job's history, survives a server restart with exactly
the API's state, renders markup in job fields as text, and asks for a key when keys
are active.

SQLite only: the page reads the SSE watch and the history route, which the other
modules test on both databases.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.protobuf import field_mask_pb2

from jobstatus import Client
from jobstatus.live import status_text
from jobstatus.v1 import catalog_import_pb2 as cat
from jobstatus.v1 import dataset_pb2 as ds
from jobstatus.v1 import errors_pb2
from jobstatus.v1 import map_import_pb2 as mi
from jobstatus_server.http_api.dashboard import ID_KEYS
from tests.browser import Browser
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
LIVE = "document.body.dataset.connection === 'live'"
COLOURS = {
    "running": "rgb(31, 111, 235)",
    "succeeded": "rgb(26, 127, 55)",
    "failed": "rgb(207, 34, 46)",
}


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
    # Tall enough that every job of this module is a drawn row of the (virtualized) table.
    with Browser(1400, 2400) as opened:
        yield opened


@pytest.fixture(scope="module")
def page(server: ServerProcess, browser: Browser) -> Browser:
    assert browser.goto(server.http_url + "/") == 200
    browser.wait_for(LIVE)
    return browser


def _rows(page: Browser) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = page.evaluate(ROWS)
    return rows


def _api_state(server: ServerProcess) -> set[tuple[str, str, str, int]]:
    """Every job as the API lists it: (kind, id, status in documented spelling, revision)."""
    with Client(server.address) as client:
        return {
            (name, kind.kind.job_id(job), status_text(kind.kind, job), int(job.revision))
            for name, kind in client.kinds.items()
            for job in kind.list(page_size=1000)
        }


def _page_state(page: Browser) -> list[tuple[str, str, str, int]]:
    return [(r["kind"], r["id"], r["status"], r["revision"]) for r in _rows(page)]


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


def test_demo_rows_appear_bars_move_and_settled_jobs_take_their_colour(
    server: ServerProcess, page: Browser, tmp_path: Path
) -> None:
    log = tmp_path / "demo.log"
    seen: dict[tuple[str, str], set[str]] = {}
    with log.open("w") as out:
        demo = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jobstatus.cli",
                "demo",
                "--speed",
                "3",
                "--addr",
                server.address,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            while demo.poll() is None:
                for row in _rows(page):
                    if row["kind"] in ("map_import", "prepared_delivery"):
                        seen.setdefault((row["kind"], row["id"]), set()).add(row["progress"])
                time.sleep(0.2)
        finally:
            if demo.poll() is None:
                demo.kill()
            demo.wait(30)
    output = log.read_text()
    assert demo.returncode == 0, output
    # Progress bars moved: some job showed progress strictly between 0 and 100, and more
    # than one value on its way.
    moving = [values for values in seen.values() if len(values - {"0", "100", ""}) >= 2]
    assert moving, seen
    # Every job of the demo is a row with the API's state; settled jobs take their colour.
    expected = _api_state(server)
    page.wait_for(f"({ROWS}).length >= {len(expected)}")
    for _ in range(300):
        if set(_page_state(page)) == expected:
            break
        time.sleep(0.2)
    assert set(_page_state(page)) == expected
    outcomes = {r["outcome"] for r in _rows(page)}
    assert {"succeeded", "failed"} <= outcomes
    for row in _rows(page):
        if row["outcome"] in COLOURS:
            assert row["colour"] == COLOURS[row["outcome"]], row


def _open(page: Browser, job_id: str) -> None:
    page.call("fill", selector="#filter-search", value=job_id)
    page.wait_for(
        f"document.querySelectorAll('#rows .row').length === 1 && "
        f"document.querySelector('#rows .row').dataset.id === {json.dumps(job_id)}"
    )
    page.call("click", selector="#rows .row")
    page.wait_for("!document.querySelector('#detail').hidden")


def _close(page: Browser) -> None:
    page.call("click", selector="#detail-close")
    page.call("fill", selector="#filter-search", value="")


def test_a_job_s_detail_shows_its_history(
    server: ServerProcess, stubs: Stubs, page: Browser
) -> None:
    job_id = f"hist-{uuid.uuid4().hex[:8]}"
    stubs.maps.CreateMapImport(
        mi.CreateMapImportRequest(map_import=mi.MapImport(import_request_id=job_id))
    )
    for progress in (10, 50):
        stubs.maps.UpdateMapImport(
            mi.UpdateMapImportRequest(
                map_import=mi.MapImport(
                    import_request_id=job_id,
                    status=mi.MAP_IMPORT_STATUS_IN_PROGRESS,
                    meta_data=mi.MapImportMetaData(progress=progress),
                )
            )
        )
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
    stubs.maps.CreateMapImport(
        mi.CreateMapImportRequest(map_import=mi.MapImport(import_request_id=map_id))
    )
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
    for job_id in (map_id, imported.id, dataset.dataset_id):
        _open(page, job_id)
        page.wait_for(
            f"document.querySelector('#detail').innerText.includes({json.dumps(HOSTILE)})"
        )
        assert page.evaluate("document.querySelectorAll('img').length") == 0
        _close(page)
    assert page.call("dialogs") == []


def test_a_restart_with_the_page_open_ends_with_exactly_the_api_s_state(
    server: ServerProcess, stubs: Stubs, page: Browser
) -> None:
    page.wait_for(LIVE)
    before = f"rs-{uuid.uuid4().hex[:8]}"
    stubs.maps.CreateMapImport(
        mi.CreateMapImportRequest(map_import=mi.MapImport(import_request_id=before))
    )
    page.wait_for(f"({ROWS}).some((r) => r.id === {json.dumps(before)})")
    assert server.terminate() == 0
    page.wait_for("document.body.dataset.connection === 'reconnecting'")
    server.start()  # the same ports: the page reconnects by itself
    again = Stubs.connect(server.address)
    try:
        after = f"rs-{uuid.uuid4().hex[:8]}"
        again.maps.CreateMapImport(
            mi.CreateMapImportRequest(map_import=mi.MapImport(import_request_id=after))
        )
        for progress in (20, 40, 60):
            again.maps.UpdateMapImport(
                mi.UpdateMapImportRequest(
                    map_import=mi.MapImport(
                        import_request_id=before,
                        status=mi.MAP_IMPORT_STATUS_IN_PROGRESS,
                        meta_data=mi.MapImportMetaData(progress=progress),
                    )
                )
            )
    finally:
        again.channel.close()
    page.wait_for(LIVE)
    expected = _api_state(server)
    page.wait_for(f"({ROWS}).some((r) => r.id === {json.dumps(after)})")
    state: list[tuple[str, str, str, int]] = []
    for _ in range(300):
        state = _page_state(page)
        if set(state) == expected:
            break
        time.sleep(0.2)
    assert set(state) == expected
    assert len(state) == len(set(state)) == len(expected)  # nothing missing or doubled
    shown = page.evaluate("document.querySelector('#shown-count').textContent")
    assert shown == f"{len(expected)} of {len(expected)} jobs"


def test_a_resume_point_the_server_no_longer_keeps_resyncs_the_page(
    tmp_path_factory: pytest.TempPathFactory, browser: Browser
) -> None:
    """The page's server goes away; meanwhile another server on the same database writes
    and compacts the history past the page's resume point; the page's server comes back:
    the page is answered 410, starts over from the state ("resynced"), and ends with it."""
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
            client.map_imports.create(mi.MapImport(import_request_id=job_id + "-new"))
            for _ in range(600):  # compaction runs in the background
                if client.map_imports.history(job_id).oldest_revision > resume_point + 1:
                    break
                time.sleep(0.1)
            assert client.map_imports.history(job_id).oldest_revision > resume_point + 1
        other.stop()
        server.start()
        browser.wait_for("document.body.dataset.resyncs === '4'")  # each kind's stream
        expected = _api_state(server)
        state: list[tuple[str, str, str, int]] = []
        for _ in range(300):
            state = _page_state(browser)
            if set(state) == expected:
                break
            time.sleep(0.2)
        assert set(state) == expected and len(state) == len(expected)
    finally:
        other.stop()
        server.stop()


def _counts(page: Browser) -> dict[str, dict[str, int]]:
    """The summary cards: per kind, the count shown for each status."""
    cards: dict[str, dict[str, int]] = page.evaluate(
        "Object.fromEntries([...document.querySelectorAll('.card')].map((card) =>"
        " [card.dataset.kind, Object.fromEntries([...card.querySelectorAll('.chip')].map((chip) =>"
        " [chip.dataset.status, Number(chip.querySelector('b').textContent)]))]))"
    )
    return cards


def test_thousands_of_jobs_draw_only_the_rows_in_view_and_keep_up(
    tmp_path_factory: pytest.TempPathFactory, browser: Browser
) -> None:
    server = ServerProcess(sqlite_url(tmp_path_factory.mktemp("many"))).start()
    try:
        ids = [f"many-{n:05d}" for n in range(1500)]
        stubs = Stubs.connect(server.address)
        try:
            for offset in range(0, len(ids), 100):
                creates = [
                    stubs.maps.CreateMapImport.future(
                        mi.CreateMapImportRequest(map_import=mi.MapImport(import_request_id=i))
                    )
                    for i in ids[offset : offset + 100]
                ]
                for future in creates:
                    future.result(timeout=60)
            logged = len(browser.call("console"))
            assert browser.goto(server.http_url + "/") == 200
            browser.wait_for(LIVE)
            browser.wait_for(
                "document.querySelector('#shown-count').textContent === '1500 of 1500 jobs'"
            )
            # A burst of changes while the page is open: it ends with the API's counts.
            updates = [
                stubs.maps.UpdateMapImport.future(
                    mi.UpdateMapImportRequest(
                        map_import=mi.MapImport(
                            import_request_id=job_id,
                            status=mi.MAP_IMPORT_STATUS_IN_PROGRESS,
                            meta_data=mi.MapImportMetaData(progress=n % 100),
                        )
                    )
                )
                for n, job_id in enumerate(ids[:600])
            ]
            for update in updates:
                update.result(timeout=60)
        finally:
            stubs.channel.close()
        expected = {"Start": 900, "InProgress": 600}
        for _ in range(300):
            counts = _counts(browser)["map_import"]
            if all(counts[status] == n for status, n in expected.items()):
                break
            time.sleep(0.2)
        assert {s: _counts(browser)["map_import"][s] for s in expected} == expected
        drawn = browser.evaluate("document.querySelectorAll('#rows .row').length")
        assert 0 < drawn < 150  # the table draws the rows in view, not 1,500
        # Scrolled to the end, the last job in id order is drawn.
        browser.evaluate(
            "(() => { const o = document.querySelector('#order'); o.value = 'id';"
            " o.dispatchEvent(new Event('change')); })()"
        )
        browser.evaluate(
            "(() => { const v = document.querySelector('#viewport');"
            " v.scrollTop = v.scrollHeight; })()"
        )
        browser.wait_for(f"({ROWS}).some((r) => r.id === 'many-01499')")
        # The search finds one job among them.
        browser.call("fill", selector="#filter-search", value="many-00042")
        browser.wait_for(
            f"(() => {{ const rows = {ROWS}; return rows.length === 1"
            " && rows[0].id === 'many-00042' && rows[0].progress === '42'; })()"
        )
        errors = [
            m for m in browser.call("console")[logged:] if m["type"] in ("error", "pageerror")
        ]
        assert errors == []
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
        assert (
            browser.evaluate("sessionStorage.getItem('jobstatus.apiKey')") == keyed.keys["reader"]
        )
        assert browser.evaluate("localStorage.length") == 0

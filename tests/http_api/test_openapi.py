"""schemathesis against GET /openapi.json of a real server with API keys: every
operation (but the endless SSE streams) is called with generated input; no answer
is a 5xx, and every answer conforms to the document (status, content type,
headers, body schema). Every route the HTTP app serves is documented (but the
dashboard's page and static files), and a real answer of the counts, their push and
the dashboard's listing conforms to its documented schema. Bounded: a few examples
per operation. A failing example is kept in hypothesis's example database
(test_fuzz.EXAMPLES, under .hypothesis/, which git ignores) and replayed first by
the next run; the failure prints a `@reproduce_failure` line, and
`pytest --hypothesis-seed=N` replays a run."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import jsonschema_rs
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance
from starlette.applications import Starlette

from jobstatus.v1 import map_import_pb2 as mi
from jobstatus.v1 import map_import_pb2_grpc
from jobstatus_server.composition.config import Settings
from jobstatus_server.composition.server import Server
from jobstatus_server.http_api import counts, dashboard, sse
from tests.conftest import Databases
from tests.grpc_api.test_fuzz import EXAMPLES
from tests.restkit import Keyed, keyed_server, metadata
from tests.serverproc import free_port

KEYS = {"reader": ("acme", ["read"]), "writer": ("acme", ["read", "write"])}
# What the HTTP app serves and /openapi.json leaves out, each with why.
UNDOCUMENTED = {
    path: "the dashboard's page or one of its static files, not an API" for path in dashboard.FILES
}


@pytest.fixture(scope="module")
def keyed(databases: Databases) -> Iterator[Keyed]:
    """On SQLite and on PostgreSQL (conftest's `databases`)."""
    with keyed_server(databases.new("keyed"), KEYS, "--dataset-rate-interval", "0") as server:
        yield server


@pytest.fixture(scope="module")
def api_schema(keyed: Keyed) -> Any:
    loaded = schemathesis.openapi.from_url(f"{keyed.server.http_url}/openapi.json")
    return loaded.exclude(path=sse.PATH).exclude(path=counts.WATCH_PATH)


@pytest.mark.parametrize(
    "mode", [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
)
def test_every_answer_conforms(api_schema: Any, keyed: Keyed, mode: Any) -> None:
    # schemathesis's own pytest plugin does not run on pytest 9 yet: drive its strategy.
    key = keyed.keys["reader"]

    headers = {"X-Api-Key": key, "Api-Key": key}

    @given(case=api_schema.as_strategy(generation_mode=mode, headers=headers))
    @settings(
        max_examples=120,
        deadline=None,
        database=EXAMPLES,
        print_blob=True,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        # A status and a page token are valid only for their kind (and filter), which the
        # schema cannot say: a generated one is rightly refused.
        relative = case.path == dashboard.JOBS_PATH
        case.call_and_validate(
            timeout=10, excluded_checks=[positive_data_acceptance] if relative else []
        )

    check()


def test_an_empty_query_value_the_server_takes_is_documented_so(keyed: Keyed) -> None:
    """A form's empty field (`since=`, `active=`) is taken by the server, as absent or as
    a value (`active=` is false); the document admits it (allowEmptyValue), or a client
    checked against the document is refused what the server takes. Schemathesis's
    negative mode found the document refusing `since=` and `active=`."""
    document = httpx.get(f"{keyed.server.http_url}/openapi.json").json()
    empty = {
        path: {
            each["name"] for each in operation["get"]["parameters"] if each.get("allowEmptyValue")
        }
        for path, operation in document["paths"].items()
        if any(
            each.get("allowEmptyValue") for each in operation.get("get", {}).get("parameters", [])
        )
    }
    assert empty == {
        sse.PATH: {"ids", "until_settled", "envelope", "start_revision", "heartbeat"},
        counts.PATH: {"kind"},
        counts.WATCH_PATH: {"kind", "heartbeat"},
        "/api/v1/history/{kind}/{id}": {"page_size", "page_token"},
        dashboard.JOBS_PATH: {
            "status",
            "active",
            "prefix",
            "since",
            "until",
            "page_size",
            "page_token",
        },
    }
    reader = {"X-Api-Key": keyed.keys["reader"]}
    blank = "kind=dataset&status=&active=&prefix=&since=&until=&page_size=&page_token="
    answer = httpx.get(f"{keyed.server.http_url}{dashboard.JOBS_PATH}?{blank}", headers=reader)
    assert answer.status_code == 200, answer.text
    answer = httpx.get(f"{keyed.server.http_url}{counts.PATH}?kind=", headers=reader)
    assert answer.status_code == 200, answer.text


def test_the_document_declares_what_the_server_requires(keyed: Keyed) -> None:
    document = httpx.get(f"{keyed.server.http_url}/openapi.json").json()
    assert document["openapi"].startswith("3.0")
    assert set(document["components"]["securitySchemes"]) == {
        "XApiKey",
        "Bearer",
        "PrivateKey",
        "ApiKey",
        "ApiKeyQuery",
    }
    operations = {path: set(item) for path, item in document["paths"].items()}
    assert operations["/api/v1/map/import/status/{importRequestId}"] == {"get"}
    dataset = document["paths"]["/datasets/{dataset_id}/status"]["get"]
    assert set(dataset["responses"]) == {"200", "401", "402", "403", "404", "422", "429", "503"}
    assert dataset["security"] == [{"PrivateKey": []}, {"XApiKey": []}]
    v1 = document["components"]["schemas"]["MapImportV1"]["properties"]["status"]["enum"]
    v2 = document["components"]["schemas"]["MapImportV2"]["properties"]["status"]["enum"]
    assert set(v2) - set(v1) == {"Draft", "Discovered"}


def _served_paths(database_url: str) -> set[str]:
    """Every path of the HTTP app a real server (composition/server.py) serves, its
    converters dropped as the document writes them (`{id:any}` is `{id}`)."""

    async def started() -> set[str]:
        server = Server(
            Settings(
                grpc_addr=f"127.0.0.1:{free_port()}",
                http_addr=f"127.0.0.1:{free_port()}",
                database_url=database_url,
            )
        )
        await server.start()
        try:
            assert server.http is not None
            app: Any = server.http.config.app
            while not isinstance(app, Starlette):  # CallerGuard, DocumentedGets: `.app` inside
                app = app.app
            return {re.sub(r":\w+}", "}", getattr(route, "path", "")) for route in app.routes}
        finally:
            await server.stop()

    return asyncio.run(started())


def test_every_served_path_is_documented(databases: Databases, keyed: Keyed) -> None:
    served = _served_paths(databases.new("routes"))
    documented = set(httpx.get(f"{keyed.server.http_url}/openapi.json").json()["paths"])
    missing = sorted(served - documented - set(UNDOCUMENTED))
    assert not missing, f"served but not in /openapi.json: {missing}"
    assert set(UNDOCUMENTED) <= served, "an exception that the app no longer serves"
    assert not documented - served, f"documented but not served: {documented - served}"


def _operation(api_schema: Any, path: str) -> Any:
    return api_schema[path]["GET"]


def test_the_new_paths_answer_as_documented(api_schema: Any, keyed: Keyed) -> None:
    with grpc.insecure_channel(keyed.server.address) as channel:
        maps = map_import_pb2_grpc.MapImportServiceStub(channel)
        for job_id in ("openapi-1", "openapi-2", "openapi-3"):
            maps.CreateMapImport(
                mi.CreateMapImportRequest(map_import=mi.MapImport(import_request_id=job_id)),
                metadata=metadata(keyed.keys["writer"]),
            )
    reader = keyed.http(headers={"X-Api-Key": keyed.keys["reader"]})
    with reader, keyed.http() as keyless:
        answers = [
            (counts.PATH, reader.get(counts.PATH)),
            (counts.PATH, reader.get(counts.PATH, params={"kind": "map_import,dataset"})),
            (counts.PATH, reader.get(counts.PATH, params={"kind": "nope"})),
            (counts.PATH, keyless.get(counts.PATH)),
            (
                dashboard.JOBS_PATH,
                reader.get(dashboard.JOBS_PATH, params={"kind": "map_import", "page_size": 2}),
            ),
            (dashboard.JOBS_PATH, reader.get(dashboard.JOBS_PATH)),
            ("/dashboard/kinds.json", reader.get("/dashboard/kinds.json")),
        ]
        for path, answer in answers:
            _operation(api_schema, path).validate_response(answer)
        statuses = [answer.status_code for _, answer in answers]
        assert statuses == [200, 200, 400, 401, 200, 400, 200], statuses
        listed = answers[4][1].json()
        assert len(listed["jobs"]) == 2 and listed["nextPageToken"], listed
        counted = answers[0][1].json()["counts"]
        assert sum(c["count"] for c in counted if c["kind"] == "map_import") == 3, counted

        with reader.stream("GET", counts.WATCH_PATH, params={"kind": "map_import"}) as pushed:
            assert pushed.status_code == 200
            assert pushed.headers["content-type"].startswith("text/event-stream")
            seen: list[str] = []
            for line in pushed.iter_lines():  # bounded: the client's 10 s read timeout
                seen.append(line)
                if line == "" and any(s.startswith("event: counts") for s in seen):
                    break
        refused = keyless.get(counts.WATCH_PATH)
    _operation(api_schema, counts.WATCH_PATH).validate_response(refused)
    assert refused.status_code == 401
    data = next(line for line in seen if line.startswith("data: ")).removeprefix("data: ")
    document = api_schema.raw_schema
    validator = jsonschema_rs.Draft4Validator(
        {"$ref": "#/components/schemas/Counts", "components": document["components"]}
    )
    errors = [error.message for error in validator.iter_errors(json.loads(data))]
    assert not errors, f"the pushed counts {data} do not conform: {errors}"

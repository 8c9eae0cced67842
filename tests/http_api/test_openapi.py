"""schemathesis against GET /openapi.json of a real server with API keys: every
operation (but the endless SSE stream) is called with generated input; no answer
is a 5xx, and every answer conforms to the document (status, content type,
headers, body schema). Bounded: a few examples per operation. A failing example is
kept in hypothesis's example database (test_fuzz.EXAMPLES, under .hypothesis/, which
git ignores) and replayed first by the next run; the failure prints a
`@reproduce_failure` line, and `pytest --hypothesis-seed=N` replays a run."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from jobstatus_server.http_api import sse
from tests.conftest import Databases
from tests.grpc_api.test_fuzz import EXAMPLES
from tests.restkit import Keyed, keyed_server

KEYS = {"reader": ("acme", ["read"])}


@pytest.fixture(scope="module")
def keyed(databases: Databases) -> Iterator[Keyed]:
    """On SQLite and on PostgreSQL (conftest's `databases`)."""
    with keyed_server(databases.new("keyed"), KEYS, "--dataset-rate-interval", "0") as server:
        yield server


@pytest.fixture(scope="module")
def api_schema(keyed: Keyed) -> Any:
    loaded = schemathesis.openapi.from_url(f"{keyed.server.http_url}/openapi.json")
    return loaded.exclude(path=sse.PATH)


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
        case.call_and_validate(timeout=10)

    check()


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

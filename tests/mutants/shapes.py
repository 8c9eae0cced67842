"""Mutants of the shapes area: see tests/mutants/__init__.py for what a mutant is.

The limits (streams per key and per connection, concurrent calls, request and header
bytes), the 429 body and Retry-After, the documented JSON bodies of the REST paths, and
the gRPC error details (ErrorInfo, BadRequest).
"""

from __future__ import annotations

from tests.mutants import Mutant

LIMITS = "server/jobstatus_server/access/limits.py"
HTTP_APP = "server/jobstatus_server/http_api/app.py"
FAST_PATH = "server/jobstatus_server/http_api/fast_path.py"
ERROR_BODY = "server/jobstatus_server/http_api/error_body.py"
INTERCEPTOR = "server/jobstatus_server/grpc_api/interceptor.py"
REST = "server/jobstatus_server/http_api/rest.py"
RENDER = "server/jobstatus_server/contract/render.py"
ERRORS = "server/jobstatus_server/contract/errors.py"

T_STREAMS = "tests/access/test_limits.py::test_watch_streams_per_key_and_per_connection[sqlite]"
T_SIZES = "tests/access/test_limits.py::test_request_and_header_size[sqlite]"
T_CALLS = "tests/access/test_limits.py::test_concurrent_calls[sqlite]"

MUTANTS: list[Mutant] = [
    Mutant(
        name="shapes-streams-per-key-off-by-one",
        guarantee="a key has at most --max-streams-per-key watch streams open",
        file=LIMITS,
        find="if self._by_owner[owner] >= self.max_streams_per_key:",
        replace="if self._by_owner[owner] > self.max_streams_per_key:",
        tests=(T_STREAMS,),
    ),
    Mutant(
        name="shapes-streams-per-connection-off-by-one",
        guarantee="a connection has at most --max-streams-per-connection watch streams open",
        file=LIMITS,
        find="if self._by_connection[connection] >= self.max_streams_per_connection:",
        replace="if self._by_connection[connection] > self.max_streams_per_connection:",
        tests=(T_STREAMS,),
    ),
    Mutant(
        name="shapes-concurrent-calls-off-by-one",
        guarantee="a caller has at most --max-concurrent-calls calls in progress",
        file=LIMITS,
        find="        if count >= self.max_concurrent_calls:",
        replace="        if count > self.max_concurrent_calls:",
        tests=(T_CALLS,),
    ),
    Mutant(
        name="shapes-ready-read-admitted-past-limit",
        guarantee="a read the view answers at once counts against its caller's concurrent calls",
        file=LIMITS,
        find="return calls.get(caller_id(key_id, address), 0) < self.max_concurrent_calls",
        replace="return calls.get(caller_id(key_id, address), 0) <= self.max_concurrent_calls",
        tests=(T_CALLS,),
    ),
    Mutant(
        name="shapes-request-line-not-counted",
        guarantee="an HTTP request line counts toward --max-header-bytes",
        file=HTTP_APP,
        find="        self._head_bytes += len(url)\n",
        replace="",
        tests=(T_SIZES,),
    ),
    Mutant(
        name="shapes-grpc-request-bytes-boundary",
        guarantee="a gRPC request of exactly --max-request-bytes is served",
        file=INTERCEPTOR,
        find="if len(data) > self.limits.max_request_bytes:",
        replace="if len(data) >= self.limits.max_request_bytes:",
        tests=(T_SIZES,),
    ),
    Mutant(
        name="shapes-http-body-bytes-boundary",
        guarantee="an HTTP body of exactly --max-request-bytes is not refused",
        file=FAST_PATH,
        find="not value.isdigit() or int(value) > self.limits.max_request_bytes",
        replace="not value.isdigit() or int(value) >= self.limits.max_request_bytes",
        tests=(T_SIZES,),
    ),
    Mutant(
        name="shapes-header-bytes-not-summed",
        guarantee="an HTTP request's headers together are at most --max-header-bytes",
        file=HTTP_APP,
        find="self._head_bytes += len(name) + len(value) + 4",
        replace="self._head_bytes = len(name) + len(value) + 4",
        tests=(T_SIZES,),
    ),
    Mutant(
        name="shapes-429-without-retry-after",
        guarantee="a limit's 429 says Retry-After",
        file=ERROR_BODY,
        find='        (b"retry-after", b"1"),\n',
        replace="",
        tests=(T_SIZES,),
    ),
    Mutant(
        name="shapes-limit-reason",
        guarantee="a refused call says LIMIT_EXCEEDED (ErrorInfo and the 429 body)",
        file=LIMITS,
        find='reason="LIMIT_EXCEEDED"',
        replace='reason="RESOURCE_EXHAUSTED"',
        tests=(T_SIZES,),
    ),
    Mutant(
        name="shapes-grpc-refusal-without-retry-info",
        guarantee="a gRPC limit refusal carries RetryInfo",
        file=LIMITS,
        find='metadata={"limit": limit, **metadata}, retry_after=1.0',
        replace='metadata={"limit": limit, **metadata}',
        tests=(T_STREAMS,),
    ),
    Mutant(
        name="shapes-dataset-429-without-retry-after",
        guarantee="the dataset path's 429 says Retry-After",
        file=REST,
        find='return details(429, RATE_LIMITED, {"Retry-After": str(math.ceil(wait))})',
        replace="return details(429, RATE_LIMITED)",
        tests=("tests/http_api/test_rest_errors.py::test_dataset_429_with_retry_after[sqlite]",),
    ),
    Mutant(
        name="shapes-dataset-402-body-key",
        guarantee='the dataset path\'s 402 body is {"detail": "Out of free quota."}',
        file=REST,
        find="return detail(402, OUT_OF_QUOTA)",
        replace="return details(402, OUT_OF_QUOTA)",
        tests=(
            "tests/http_api/test_rest_errors.py::test_dataset_402_when_the_quota_is_used_up[sqlite]",
        ),
    ),
    Mutant(
        name="shapes-dataset-quota-off-by-one",
        guarantee="a key makes at most --dataset-quota dataset status requests a day",
        file=REST,
        find="        if used >= self.quota:",
        replace="        if used > self.quota:",
        tests=(
            "tests/http_api/test_rest_errors.py::test_dataset_402_when_the_quota_is_used_up[sqlite]",
        ),
    ),
    Mutant(
        name="shapes-catalog-unknown-id-404",
        guarantee="the catalog import path answers an unknown id 200 with status NOT_FOUND",
        file=REST,
        find="            return JSONResponse(CATALOG_BODY.render(job))",
        replace="            return JSONResponse(CATALOG_BODY.render(job), 404)",
        tests=("tests/http_api/test_rest_errors.py::test_catalog_403_404_and_not_found[sqlite]",),
    ),
    Mutant(
        name="shapes-delivery-empty-source-accepted",
        guarantee="the delivery path's source is remote or cache, else 400",
        file=REST,
        find="if source is not None and source not in SOURCES:",
        replace="if source and source not in SOURCES:",
        tests=("tests/http_api/test_rest_paths.py::test_delivery_source_is_validated",),
    ),
    Mutant(
        name="shapes-json-key-proto-name",
        guarantee="the REST bodies use the documented camelCase keys",
        file=RENDER,
        find="                out[descriptor.json_name] = _value(descriptor, key, value)",
        replace="                out[descriptor.name] = _value(descriptor, key, value)",
        tests=("tests/http_api/test_rest_paths.py::test_map_import_body[sqlite-InProgress]",),
    ),
    Mutant(
        name="shapes-status-spelling",
        guarantee="a status is spelled as the document spells it (InProgress)",
        file=RENDER,
        find="return spelling(found) if found is not None and found.number else None",
        replace="return found.name if found is not None and found.number else None",
        tests=("tests/http_api/test_rest_paths.py::test_map_import_body[sqlite-InProgress]",),
    ),
    Mutant(
        name="shapes-v1-reports-draft",
        guarantee="the v1 map path reports a Draft import as Start",
        file=REST,
        find="    mi.MAP_IMPORT_STATUS_DRAFT: mi.MAP_IMPORT_STATUS_START,\n",
        replace="",
        tests=("tests/http_api/test_rest_paths.py::test_map_import_body[sqlite-Draft]",),
    ),
    Mutant(
        name="shapes-errorinfo-without-metadata",
        guarantee="a gRPC error's ErrorInfo carries its metadata (the required scope)",
        file=ERRORS,
        find="reason=self.reason, domain=DOMAIN, metadata=self.metadata",
        replace="reason=self.reason, domain=DOMAIN",
        tests=(
            "tests/http_api/test_rest_errors.py::test_grpc_unauthenticated_and_permission_denied[sqlite]",
        ),
    ),
    Mutant(
        name="shapes-invalid-argument-without-bad-request",
        guarantee="INVALID_ARGUMENT carries a BadRequest naming each bad field",
        file=ERRORS,
        find="        return [*super().details(), _pack(bad)]",
        replace="        return super().details()",
        tests=(
            "tests/contract/test_validation.py::test_bad_request_is_invalid_argument[sqlite-map-update-nothing]",
        ),
    ),
]

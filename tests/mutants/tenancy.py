"""Mutants of tenancy and scopes: see tests/mutants/__init__.py for what a mutant is."""

from __future__ import annotations

from tests.mutants import Mutant

AUTH = "server/jobstatus_server/access/auth.py"
INTERCEPTOR = "server/jobstatus_server/grpc_api/interceptor.py"
REST = "server/jobstatus_server/http_api/rest.py"
FAST_PATH = "server/jobstatus_server/http_api/fast_path.py"
SSE = "server/jobstatus_server/http_api/sse.py"
READERS = "server/jobstatus_server/state/readers.py"
SQL = "server/jobstatus_server/state/sql.py"
WATCH = "server/jobstatus_server/state/watch.py"
TENANTS = "tests/access/test_tenants.py"
RESUMED = (
    f"{TENANTS}::test_a_watch_resumed_from_the_ring_gets_none_of_another_tenants_changes",
    f"{TENANTS}::test_an_sse_watch_gets_none_of_another_tenants_changes",
)
SAME_ID = (f"{TENANTS}::test_the_same_id_in_two_tenants_is_two_jobs",)
REVOKED = (f"{TENANTS}::test_a_revoked_key_is_refused_on_every_transport",)
OPEN = (
    "tests/access/test_keys_tls.py::"
    "test_the_open_servers_jobs_are_tenant_defaults_and_its_watches_end_with_the_first_key",
)

MUTANTS: list[Mutant] = [
    Mutant(
        name="watch-ignores-tenant",
        guarantee="a watch sends only its own tenant's changes",
        file=WATCH,
        find="            and change.tenant == self.tenant\n",
        replace="",
        tests=RESUMED,
    ),
    Mutant(
        name="tenancy-log-resume-ignores-tenant",
        guarantee="a watch resumed from the event log sends only its own tenant's changes",
        file=READERS,
        find=(
            "            if tenant is not None:\n                query = query.where(EVENT.c.tenant"
        ),
        replace="            if False:\n                query = query.where(EVENT.c.tenant",
        tests=(
            f"{TENANTS}::"
            "test_a_watch_resumed_from_the_event_log_gets_none_of_another_tenants_changes",
        ),
    ),
    Mutant(
        name="tenancy-start-is-read",
        guarantee="a read-only key cannot start a dataset import (only Get, List, Watch read)",
        file=AUTH,
        find="    return READ if name.startswith(_READ_PREFIXES) else WRITE",
        replace='    return WRITE if name.startswith(("Create", "Update")) else READ',
        tests=(f"{TENANTS}::test_rpc_isolation[sqlite-StartDatasetImport-alpha-read]",),
    ),
    Mutant(
        name="tenancy-grpc-no-scope-check",
        guarantee="a gRPC call needs its method's scope: a write-only key cannot read",
        file=INTERCEPTOR,
        find="        auth.authorize(caller, scope)\n        CALLER.set(caller)",
        replace="        CALLER.set(caller)",
        tests=(f"{TENANTS}::test_rpc_isolation[sqlite-GetMapImportStatus-alpha-write]",),
    ),
    Mutant(
        name="tenancy-sse-no-scope-check",
        guarantee="an SSE watch needs the read scope",
        file=SSE,
        find="        self.auth.authorize(caller, READ)\n        kind: Kind[Any]",
        replace="        kind: Kind[Any]",
        tests=(f"{TENANTS}::test_sse_isolation[sqlite-alpha-write]",),
    ),
    Mutant(
        name="tenancy-rest-fast-path-scope",
        guarantee="a REST read needs the read scope, on the fast path too",
        file=FAST_PATH,
        find=(
            "            known = auth.known(presented)\n"
            "            if known is None or READ not in known.scopes:"
        ),
        replace="            known = auth.known(presented)\n            if known is None:",
        tests=(f"{TENANTS}::test_rest_isolation[sqlite-map v1-alpha-write]",),
    ),
    Mutant(
        name="tenancy-list-any-tenant",
        guarantee="a list shows only its own tenant's jobs",
        file=READERS,
        find="JOB.c.tenant == tenant, JOB.c.kind == kind, JOB.c.create_revision",
        replace="JOB.c.kind == kind, JOB.c.create_revision",
        tests=(f"{TENANTS}::test_list_isolation[sqlite-beta-read]",),
    ),
    Mutant(
        name="tenancy-history-any-tenant",
        guarantee="a job's history holds only its own tenant's changes, not a same-id job's",
        file=READERS,
        find="                        EVENT.c.tenant == tenant,\n",
        replace="",
        tests=(f"{TENANTS}::test_a_jobs_history_is_its_own_tenants",),
    ),
    Mutant(
        name="tenancy-request-id-any-tenant",
        guarantee="a create's request id is per tenant: another tenant's id gets a new job",
        file=SQL,
        find=(
            '                    (JOB.c.tenant == bindparam("tenant"))\n'
            '                    & (JOB.c.kind == bindparam("kind"))\n'
            '                    & (JOB.c.request_id == bindparam("request_id"))'
        ),
        replace=(
            '                    (JOB.c.kind == bindparam("kind"))\n'
            '                    & (JOB.c.request_id == bindparam("request_id"))'
        ),
        tests=(f"{TENANTS}::test_a_request_id_is_its_own_tenants",),
    ),
    Mutant(
        name="tenancy-revoked-key-accepted",
        guarantee="a revoked key is refused",
        file=AUTH,
        find="                key.revoked or not hmac.compare_digest(",
        replace="                not hmac.compare_digest(",
        tests=REVOKED,
    ),
    Mutant(
        name="tenancy-revoked-key-fast-path",
        guarantee="a revoked key is refused on the REST fast path too",
        file=AUTH,
        find="        key = self._keys.get(parsed[0])\n        if key is None or key.revoked:",
        replace="        key = self._keys.get(parsed[0])\n        if key is None:",
        tests=REVOKED,
    ),
    Mutant(
        name="tenancy-revoked-stream-goes-on",
        guarantee="an open watch of a key ends when the key is revoked",
        file=AUTH,
        find="        key = self._keys.get(caller.key_id)\n        if key is None or key.revoked:",
        replace="        key = self._keys.get(caller.key_id)\n        if key is None:",
        tests=REVOKED,
    ),
    Mutant(
        name="tenancy-open-tenant-not-default",
        guarantee="the open server's jobs are tenant default's: its first key of default sees them",
        file=AUTH,
        find="OPEN = Caller(DEFAULT_TENANT, frozenset(SCOPES))",
        replace='OPEN = Caller("open", frozenset(SCOPES))',
        tests=OPEN,
    ),
    Mutant(
        name="tenancy-open-stream-outlives-keys",
        guarantee="a watch opened while the server was open ends once a key is active",
        file=AUTH,
        find="        if not caller.key_id:\n            if self.open:\n                return",
        replace="        if not caller.key_id:\n            return",
        tests=OPEN,
    ),
    Mutant(
        name="tenancy-catalog-cluster-fast-path",
        guarantee="a key is refused on another tenant's cluster host (fast path)",
        file=FAST_PATH,
        find="(cluster != caller.tenant or not auth.knows_tenant(cluster))",
        replace="(not auth.knows_tenant(cluster))",
        tests=(f"{TENANTS}::test_a_key_is_refused_on_another_tenants_cluster",),
    ),
    Mutant(
        name="tenancy-catalog-cluster",
        guarantee="a key is refused on another tenant's cluster host",
        file=REST,
        find=(
            "        if cluster is not None and cluster != caller.tenant:\n"
            "            return elevate_error(403, KEY_NOT_VALID)\n"
        ),
        replace="",
        tests=(f"{TENANTS}::test_a_key_is_refused_on_another_tenants_cluster",),
    ),
    Mutant(
        name="tenancy-update-any-tenant",
        guarantee="an update changes only its own tenant's job, not a same-id job of another",
        file=SQL,
        find='.where(_key("w_"))',
        replace=(
            '.where((JOB.c.kind == bindparam("w_kind")) & (JOB.c.job_id == bindparam("w_job_id")))'
        ),
        tests=SAME_ID,
    ),
    Mutant(
        name="tenancy-pg-update-any-tenant",
        guarantee="an update changes only its own tenant's job, not a same-id job (PostgreSQL)",
        file=SQL,
        find="WHERE job.tenant = last.tenant AND job.kind = last.kind",
        replace="WHERE job.kind = last.kind",
        tests=SAME_ID,
        databases=("postgresql",),
    ),
    Mutant(
        name="tenancy-streams-counted-per-address",
        guarantee="one key's watch streams do not count against another tenant's key",
        file="server/jobstatus_server/access/limits.py",
        find="        owner = caller_id(caller.key_id, address)\n        if self._by_owner",
        replace='        owner = caller_id("", address)\n        if self._by_owner',
        tests=(f"{TENANTS}::test_one_keys_watch_streams_do_not_count_against_another_tenants",),
    ),
]

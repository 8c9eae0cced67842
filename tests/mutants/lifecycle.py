"""Mutants of the lifecycle area: see tests/mutants/__init__.py for what a mutant is.

Compaction by count and age, time-driven transitions, each kind's lifecycle rules,
settled statuses, idempotent create and expected_revision.
"""

from __future__ import annotations

from tests.mutants import Mutant

COMPACTION = "server/jobstatus_server/state/compaction.py"
READERS = "server/jobstatus_server/state/readers.py"
KINDS = "server/jobstatus_server/contract/kinds.py"
CORE = "server/jobstatus_server/usecases/jobs.py"
DATASET_RUN = "server/jobstatus_server/contract/dataset_run.py"
HISTORY = "tests/usecases/test_history.py"
LIFECYCLE = "tests/contract/test_lifecycle.py"
WRITES = "tests/usecases/test_writes.py"
EXPIRY = "tests/usecases/test_expiry.py"
LEASE = "tests/usecases/test_lease.py"
RETENTION = "tests/usecases/test_retention.py"
LEASE_RULES = "server/jobstatus_server/contract/lease.py"
RETENTION_RULES = "server/jobstatus_server/usecases/retention.py"

MUTANTS: list[Mutant] = [
    # --- compaction -------------------------------------------------------------------
    Mutant(
        name="lifecycle-compaction-ignores-age",
        guarantee="changes older than --history-age are compacted",
        file=COMPACTION,
        find='cut = max(counters["revision"] - keep_count, int(by_age or 0))',
        replace='cut = counters["revision"] - keep_count',
        tests=(f"{HISTORY}::test_compaction_by_age_drops_old_changes_and_keeps_recent_ones",),
    ),
    Mutant(
        name="lifecycle-compaction-age-cutoff-sign",
        guarantee="changes younger than --history-age are kept",
        file=COMPACTION,
        find="cutoff = datetime.now(UTC).timestamp() - keep_age",
        replace="cutoff = datetime.now(UTC).timestamp() + keep_age",
        tests=(f"{HISTORY}::test_compaction_by_age_drops_old_changes_and_keeps_recent_ones",),
    ),
    Mutant(
        name="lifecycle-compaction-keeps-one-fewer",
        guarantee="the event log keeps the newest --history-count changes",
        file=COMPACTION,
        find='cut = max(counters["revision"] - keep_count, int(by_age or 0))',
        replace='cut = max(counters["revision"] - keep_count + 1, int(by_age or 0))',
        tests=(f"{HISTORY}::test_compaction_is_told_not_hidden",),
    ),
    Mutant(
        name="lifecycle-compaction-keeps-one-more",
        guarantee="the event log keeps no more than the newest --history-count changes",
        file=COMPACTION,
        find='cut = max(counters["revision"] - keep_count, int(by_age or 0))',
        replace='cut = max(counters["revision"] - keep_count - 1, int(by_age or 0))',
        tests=(f"{HISTORY}::test_compaction_is_told_not_hidden",),
    ),
    # --- time-driven transitions --------------------------------------------------------
    Mutant(
        name="lifecycle-done-delivery-expiry-reset-on-write",
        guarantee="a done delivery's cache lifetime counts from when it became done",
        file=KINDS,
        find="        if entering:\n            new.expire_time.FromDatetime(",
        replace="        if True:\n            new.expire_time.FromDatetime(",
        tests=(f"{LIFECYCLE}::test_a_done_delivery_keeps_its_expire_time_through_later_writes",),
    ),
    Mutant(
        name="lifecycle-map-done-never-expires",
        guarantee="a Done map import becomes Expired by itself at its expire_time",
        file=KINDS,
        find='timed=(_MAP["Done"], _MAP["Expired"]),',
        replace="timed=None,",
        tests=(f"{EXPIRY}::test_done_map_import_becomes_expired_by_itself",),
    ),
    Mutant(
        name="lifecycle-done-delivery-never-deleted",
        guarantee="a done delivery becomes delete by itself when its cache lifetime ends",
        file=KINDS,
        find='timed=(_DELIVERY["done"], _DELIVERY["delete"]),',
        replace="timed=None,",
        tests=(f"{EXPIRY}::test_done_delivery_becomes_delete_by_itself",),
    ),
    Mutant(
        name="lifecycle-delivery-lifetime-from-creation",
        guarantee="a done delivery's expire_time is its cache lifetime after it became done",
        file=KINDS,
        find="new.expire_time.FromDatetime(ctx.now + ctx.delivery_cache_lifetime)",
        replace="new.expire_time.FromDatetime(ctx.now + ctx.delivery_cache_lifetime / 2)",
        tests=(f"{EXPIRY}::test_done_delivery_becomes_delete_by_itself",),
    ),
    Mutant(
        name="lifecycle-timed-ignores-status",
        guarantee="only a Done map import expires; a running one past its date stays as it is",
        file=KINDS,
        find="if self.timed is None or self.status_of(message) != self.timed[0]:",
        replace="if self.timed is None:",
        tests=(f"{EXPIRY}::test_done_map_import_becomes_expired_by_itself",),
    ),
    Mutant(
        name="lifecycle-timed-transition-late",
        guarantee="a time-driven transition happens within a timer tick of its expire_time",
        file=READERS,
        find=".where(JOB.c.due_at <= now)",
        replace=".where(JOB.c.due_at <= now - 5)",
        tests=(f"{EXPIRY}::test_done_map_import_becomes_expired_by_itself",),
    ),
    # --- lifecycle rules --------------------------------------------------------------
    Mutant(
        name="lifecycle-map-done-to-inprogress-allowed",
        guarantee="a Done map import cannot go back to InProgress",
        file=KINDS,
        find='"Done": "Expired Archived",',
        replace='"Done": "Expired Archived InProgress",',
        tests=(
            f"{LIFECYCLE}::test_forbidden_transition_is_refused[sqlite-map_import-Done-InProgress]",
        ),
    ),
    Mutant(
        name="lifecycle-map-done-without-package",
        guarantee="a map import is Done only with its package_url and footprint",
        file=KINDS,
        find="            not missing,\n",
        replace="            True,\n",
        tests=(f"{LIFECYCLE}::test_map_import_done_needs_package_url_and_footprint",),
    ),
    Mutant(
        name="lifecycle-map-error-without-message",
        guarantee="a map import in Error carries error.message with the reason",
        file=KINDS,
        find="            bool(new.error.message),\n",
        replace="            True,\n",
        tests=(f"{LIFECYCLE}::test_map_import_error_needs_a_message",),
    ),
    Mutant(
        name="lifecycle-catalog-waiting-to-success-allowed",
        guarantee="a catalog import succeeds only after it ran (IN_PROGRESS)",
        file=KINDS,
        find='"WAITING": "IN_PROGRESS BLOCKED ABORTED",',
        replace='"WAITING": "IN_PROGRESS BLOCKED ABORTED SUCCESS",',
        tests=(
            f"{LIFECYCLE}::test_forbidden_transition_is_refused"
            "[sqlite-catalog_import-WAITING-SUCCESS]",
        ),
    ),
    Mutant(
        name="lifecycle-catalog-not-blocked-behind-running",
        guarantee="a catalog import waits BLOCKED behind a running one of its type",
        file=KINDS,
        find="                new.status = catalog.CATALOG_IMPORT_STATUS_BLOCKED\n",
        replace="                pass\n",
        tests=(f"{LIFECYCLE}::test_catalog_import_lifecycle_and_blocking",),
    ),
    Mutant(
        name="lifecycle-delivery-restart-keeps-error",
        guarantee="a delivery restarted from error no longer carries the old error",
        file=KINDS,
        find='        new.ClearField("error")\n',
        replace="        pass\n",
        tests=(f"{LIFECYCLE}::test_delivery_error_then_start_and_delete_then_start",),
    ),
    Mutant(
        name="lifecycle-dataset-run-ends-after-fetch",
        guarantee="a dataset run imports after it fetched: fetch, then import",
        file=DATASET_RUN,
        find="elif step.name == STEP.DATASET_IMPORT_STEP_NAME_IMPORT:",
        replace="elif step.name != STEP.DATASET_IMPORT_STEP_NAME_UNSPECIFIED:",
        tests=(f"{LIFECYCLE}::test_dataset_import_lifecycle",),
    ),
    Mutant(
        name="lifecycle-dataset-failed-step-leaves-run-running",
        guarantee="a failed step fails its dataset run",
        file=DATASET_RUN,
        find="            run.status = DS.DATASET_IMPORT_STATUS_FAILED\n",
        replace="            pass\n",
        tests=(f"{LIFECYCLE}::test_dataset_failed_step_fails_the_run",),
    ),
    Mutant(
        name="lifecycle-map-error-not-settled",
        guarantee="a watch until_settled ends when its map import reaches Error",
        file=KINDS,
        find="    settled=client_kinds.MAP_IMPORT.settled,\n",
        replace='    settled=client_kinds.MAP_IMPORT.settled - {_MAP["Error"]},\n',
        tests=(
            f"{LIFECYCLE}::test_until_settled_ends_at_the_settled_statuses_only"
            "[sqlite-map_import-Error]",
        ),
    ),
    Mutant(
        name="lifecycle-delivery-inprogress-settled",
        guarantee="a watch until_settled stays open while its delivery is in progress",
        file=KINDS,
        find="    settled=client_kinds.DELIVERY.settled,\n",
        replace='    settled=client_kinds.DELIVERY.settled | {_DELIVERY["inProgress"]},\n',
        tests=(
            f"{LIFECYCLE}::test_until_settled_ends_at_the_settled_statuses_only"
            "[sqlite-prepared_delivery-inProgress]",
        ),
    ),
    # --- idempotent create, expected_revision -----------------------------------------
    Mutant(
        name="lifecycle-create-ignores-request-id",
        guarantee="a create repeated with its request_id returns the job the first one made",
        file=CORE,
        find="                    return earlier\n",
        replace="                    pass\n",
        tests=(f"{WRITES}::test_map_import_create_is_idempotent_by_request_id",),
    ),
    Mutant(
        name="lifecycle-request-id-reused-for-another-job",
        guarantee="a request_id reused to create another job is refused",
        file=CORE,
        find="if job_id and kind.job_id(earlier) != job_id:",
        replace="if False:",
        tests=(f"{WRITES}::test_request_id_reused_for_another_id_is_refused",),
    ),
    Mutant(
        name="lifecycle-expected-revision-ignored",
        guarantee="an update with a stale expected_revision is ABORTED",
        file=CORE,
        find="if expected_revision and revision != expected_revision:",
        replace="if expected_revision and revision < expected_revision:",
        tests=(f"{WRITES}::test_stale_expected_revision_is_aborted",),
    ),
    # --- an update that changes nothing -----------------------------------------------
    Mutant(
        name="lifecycle-overridden-update-answers-ok",
        guarantee="an update whose values the status's rules put back fails and names them",
        file=CORE,
        find="    if not fields:\n        return\n",
        replace="    if fields:\n        return\n",
        tests=(f"{WRITES}::test_an_update_the_status_puts_back_is_refused_and_names_the_rule",),
    ),
    Mutant(
        name="lifecycle-update-sent-again-refused",
        guarantee="an update sent again (a retry, the state the job has) succeeds unchanged",
        file=CORE,
        find="fields = [p for p in paths if _value(asked, p) != _value(current, p)]",
        replace="fields = list(paths)",
        tests=(f"{WRITES}::test_an_update_sent_again_still_succeeds_and_changes_nothing",),
    ),
    # --- the lease and the retention policy ----------------------------------------------
    Mutant(
        name="lifecycle-lease-not-a-due-time",
        guarantee="a job whose lease runs out fails by itself, as an event",
        file=KINDS,
        find="due = lease.deadline(message) if self.holds_lease(message) else None",
        replace="due = None",
        tests=(
            f"{LEASE}::test_a_job_whose_lease_runs_out_fails_once_as_an_event[sqlite-map_import]",
        ),
    ),
    Mutant(
        name="lifecycle-lease-kept-once-settled",
        guarantee="settling a job clears its lease",
        file=CORE,
        find="        if not holds and not lease.has_lease(new):\n",
        replace="        if not holds:\n",
        tests=(f"{LEASE}::test_settling_clears_the_lease[sqlite-map_import]",),
    ),
    Mutant(
        name="lifecycle-lease-not-renewed",
        guarantee="a write with lease_duration renews the job's lease from now",
        file=CORE,
        find="            lease.renew(new, lease_duration, tx.now)\n",
        replace="            if not lease.has_lease(new):\n"
        "                lease.renew(new, lease_duration, tx.now)\n",
        tests=(f"{LEASE}::test_renewing_keeps_a_job_alive_and_an_update_without_lease_keeps_it",),
    ),
    Mutant(
        name="lifecycle-lease-range-unchecked",
        guarantee="a lease_duration under a second or over 7 days is INVALID_ARGUMENT",
        file=LEASE_RULES,
        find="    if not _nanos(MIN) <= nanos <= _nanos(MAX):\n",
        replace="    if nanos < 0:\n",
        tests=(f"{LEASE}::test_a_bad_lease_duration_is_refused_and_changes_nothing",),
    ),
    Mutant(
        name="lifecycle-retention-ignores-the-age",
        guarantee="retention deletes a settled job no earlier than --retention-age after its "
        "last change",
        file=RETENTION_RULES,
        find="            cutoff = time.time() - self.age\n",
        replace="            cutoff = time.time()\n",
        tests=(
            f"{RETENTION}::test_a_change_while_settled_restarts_the_age_and_a_running_job_is_kept",
        ),
    ),
]

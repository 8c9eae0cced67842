"""Mutants of the watch area (gRPC and SSE watch ordering, resume and cut-off): see
tests/mutants/__init__.py for what a mutant is. (`watch-ignores-tenant` is tenancy's.)"""

from __future__ import annotations

from tests.mutants import Mutant

HUB = "server/jobstatus_server/state/watch.py"
SSE = "server/jobstatus_server/http_api/sse.py"
WATCH_START = "server/jobstatus_server/contract/watch_start.py"
SERVER = "server/jobstatus_server/composition/server.py"
WATCH = "tests/grpc_api/test_watch.py::"
SSE_TESTS = "tests/http_api/test_sse.py::"
SNAPSHOT = "server/jobstatus_server/state/snapshot.py"
PAGED = "tests/state/test_streamed_snapshot.py::"

MUTANTS: list[Mutant] = [
    Mutant(
        name="watch-ring-resume-skips-one",
        guarantee="a watch resumed from revision R gets every change after R once (kept in memory)",
        file=HUB,
        find="position = cursor + 1 - oldest",
        replace="position = cursor + 2 - oldest",
        tests=(f"{WATCH}test_resume_from_revision_yields_exactly_the_later_changes",),
    ),
    Mutant(
        name="watch-log-resume-skips-one",
        guarantee="a watch resumed from revision R gets every change after R once (event log)",
        file=HUB,
        find="        found = await self.store.events_after(\n            cursor,\n",
        replace="        found = await self.store.events_after(\n            cursor + 1,\n",
        tests=(f"{WATCH}test_resume_from_the_event_log_yields_exactly_the_later_changes",),
    ),
    Mutant(
        name="watch-lagging-stream-takes-the-newest-change",
        guarantee="a watch that lags behind concurrent writers gets every change once, in order",
        file=HUB,
        find="elif stream.next is None and not stream.lagging:",
        replace="elif stream.next is None:",
        tests=(
            f"{WATCH}test_a_slow_reader_that_lags_gets_every_change_in_order",
            f"{WATCH}test_watchers_that_lag_behind_concurrent_writers_get_every_change_in_order",
        ),
    ),
    Mutant(
        name="watch-start-zero-without-state",
        guarantee="a watch from revision 0 sends every watched job's state, then SYNCED",
        file=HUB,
        find="if start_revision:\n                                # Changed",
        replace="if True:\n                                # Changed",
        tests=(f"{WATCH}test_initial_state_then_synced_then_changes",),
    ),
    Mutant(
        name="watch-compacted-names-the-wrong-oldest-revision",
        guarantee="OUT_OF_RANGE for a compacted start revision names the oldest kept revision",
        file=WATCH_START,
        find='metadata = {"oldest_revision": str(compacted + 1)}',
        replace='metadata = {"oldest_revision": str(compacted)}',
        tests=(f"{WATCH}test_revision_older_than_the_kept_history_is_out_of_range",),
    ),
    Mutant(
        name="watch-compacted-start-served-from-memory",
        guarantee="a start revision older than the kept history is refused with OUT_OF_RANGE",
        file=SERVER,
        find="self.hub.compacted = max(self.hub.compacted, compacted)",
        replace="compacted = max(self.hub.compacted, compacted)",
        tests=(f"{WATCH}test_revision_older_than_the_kept_history_is_out_of_range",),
    ),
    Mutant(
        name="watch-cut-off-names-the-revision-before-the-last-sent",
        guarantee="a slow watcher cut off with RESOURCE_EXHAUSTED is told exactly the last "
        "revision it received",
        file=HUB,
        find=(
            "                stream.sent = change.revision  # before the send"
            " (the module's docstring)\n"
            "                await send(frame)\n"
        ),
        replace=(
            "                await send(frame)\n                stream.sent = change.revision\n"
        ),
        tests=(f"{WATCH}test_a_cut_off_names_exactly_the_last_revision_received",),
    ),
    Mutant(
        name="watch-shutdown-names-the-cursor-not-the-last-sent",
        guarantee="a shutdown ends a watch with UNAVAILABLE naming exactly the last revision "
        "it received",
        file=HUB,
        find=(
            '            reason="WATCH_INTERRUPTED",\n'
            '            metadata={"resume_revision": str(stream.sent)},'
        ),
        replace=(
            '            reason="WATCH_INTERRUPTED",\n'
            '            metadata={"resume_revision": str(stream.cursor)},'
        ),
        tests=(
            f"{WATCH}test_a_shutdown_during_a_catch_up_names_exactly_the_last_revision_received",
        ),
    ),
    Mutant(
        name="watch-until-settled-never-ends",
        guarantee="an until_settled watch ends with OK right after the event that settles it",
        file=HUB,
        find="                    if settling.done:\n                        return\n",
        replace="                    if settling.done:\n                        continue\n",
        tests=(f"{WATCH}test_until_settled_ends_with_ok",),
    ),
    Mutant(
        name="watch-until-settled-ends-before-the-settling-change",
        guarantee="an until_settled watch from revision R sends the changes after R before it ends",
        file=HUB,
        find="job.revision <= start_revision\n",
        replace="job.revision >= 0\n",
        tests=(f"{WATCH}test_until_settled_from_a_revision_sends_the_later_changes_then_ends",),
    ),
    Mutant(
        name="watch-heartbeat-carries-a-stale-revision",
        guarantee="an idle watch's heartbeat carries the current revision",
        file=HUB,
        find="                    stream.sent = max(stream.sent, self.revision)\n",
        replace="",
        tests=(
            f"{WATCH}test_idle_stream_gets_heartbeats_with_the_current_revision",
            f"{SSE_TESTS}test_heartbeat_carries_the_current_revision",
        ),
    ),
    Mutant(
        name="watch-sse-start-revision-wins-over-last-event-id",
        guarantee="an SSE client reconnecting with Last-Event-ID resumes from it, whatever "
        "start_revision its URL has",
        file=SSE,
        find='start = resume if resume is not None else asked["start_revision"]',
        replace='start = asked["start_revision"] or resume or 0',
        tests=(f"{SSE_TESTS}test_start_revision_query_and_last_event_id_wins",),
    ),
    Mutant(
        name="watch-sse-resume-skips-one",
        guarantee="an SSE client resuming with Last-Event-ID R gets exactly the changes after "
        "R, in order",
        file=HUB,
        find="position = cursor + 1 - oldest",
        replace="position = cursor + 2 - oldest",
        tests=(f"{SSE_TESTS}test_resume_with_last_event_id_yields_exactly_the_missed_events",),
    ),
    Mutant(
        name="watch-sse-410-names-the-wrong-oldest-revision",
        guarantee="an SSE resume point older than the kept history answers 410 naming the "
        "oldest kept revision",
        file=WATCH_START,
        find='metadata = {"oldest_revision": str(compacted + 1)}',
        replace='metadata = {"oldest_revision": str(compacted)}',
        tests=(f"{SSE_TESTS}test_a_resume_point_past_the_history_answers_410",),
    ),
    Mutant(
        name="watch-sse-204-before-the-settling-change",
        guarantee="an until_settled SSE reconnect from before the settling change gets the "
        "missed changes, not 204",
        file=SSE,
        find="                and jobs[job_id].revision <= start\n",
        replace="",
        tests=(f"{SSE_TESTS}test_a_reconnect_before_the_settling_change_gets_it_then_settled",),
    ),
    Mutant(
        name="snapshot-drops-the-earlier-pages-changes",
        guarantee="changes committed while a watch's initial state is sent are not lost",
        file=SNAPSHOT,
        find="            yield page.changes\n",
        replace="            yield []\n",
        tests=(f"{PAGED}test_changes_racing_the_pages_are_neither_lost_nor_sent_twice",),
    ),
    Mutant(
        name="snapshot-catch-up-sends-later-pages-jobs",
        guarantee="changes committed while a watch's initial state is sent are not sent twice",
        file=SNAPSHOT,
        find="case((EVENT.c.job_id <= upto, EVENT.c.data)",
        replace="case((EVENT.c.job_id >= EVENT.c.job_id, EVENT.c.data)",
        tests=(f"{PAGED}test_changes_racing_the_pages_are_neither_lost_nor_sent_twice",),
    ),
    Mutant(
        name="snapshot-stalled-client-never-cut-off",
        guarantee="a client that stops reading its initial state is cut off, resume revision 0",
        file=HUB,
        find="                    if stream.behind > buffer:\n",
        replace="                    if False:\n",
        tests=(f"{PAGED}test_a_client_that_stops_reading_costs_one_page_then_is_cut_off",),
    ),
    Mutant(
        name="snapshot-turn-waits-in-silence",
        guarantee="a watch waiting for its initial state's turn gets heartbeats at its resume "
        "point",
        file=HUB,
        find="                await send(framing.marker(HEARTBEAT, start_revision))\n",
        replace="                await asyncio.sleep(0)\n",
        tests=(f"{PAGED}test_a_watch_waiting_for_its_turn_gets_heartbeats_at_its_resume_point",),
    ),
]

"""Prometheus metrics of the process, served at GET /metrics on the HTTP listener."""

from __future__ import annotations

import weakref
from bisect import bisect_left
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

RPCS = Counter("jobstatus_rpcs", "gRPC calls by method and status code", ["method", "code"])
RPC_SECONDS = Histogram(
    "jobstatus_rpc_seconds",
    "gRPC call latency (unary) by method",
    ["method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
HTTP_REQUESTS = Counter(
    "jobstatus_http_requests",
    "HTTP requests by method, route and status code",
    ["method", "route", "code"],
)
HTTP_SECONDS = Histogram(
    "jobstatus_http_seconds",
    "HTTP latency until the response starts, by method and route",
    ["method", "route"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
HTTP_WATCH_STREAMS = Gauge("jobstatus_http_watch_streams", "open server-sent-event watch streams")
AUTH_FAILURES = Counter(
    "jobstatus_auth_failures", "calls refused for their API key, by reason", ["reason"]
)
HUB_LAG = Gauge(
    "jobstatus_hub_lag_revisions",
    "revisions this process committed that the watch hub has not published yet",
)
WATCH_STREAMS = Gauge("jobstatus_watch_streams", "open watch streams")
WATCH_CUTOFFS = Counter(
    "jobstatus_watch_cutoffs", "watch streams ended by the server, by reason", ["reason"]
)
STORE_REVISION = Gauge("jobstatus_store_revision", "the last revision this process committed")
HUB_REVISION = Gauge("jobstatus_hub_revision", "the last revision the watch hub published")
WRITES = Counter("jobstatus_writes", "committed changes by kind", ["kind"])
STORAGE_UP = Gauge("jobstatus_storage_up", "1 while the database answers, else 0")
LIMIT_REFUSALS = Counter(
    "jobstatus_limit_refusals",
    "calls refused for a per-caller limit, by transport and limit",
    ["transport", "limit"],
)
WRITE_GROUPS = Counter("jobstatus_write_groups", "write transactions (group commits) run")
WRITE_GROUP_WRITES = Counter(
    "jobstatus_write_group_writes", "writes run in group commits (their mean group size: / groups)"
)
WRITE_GROUP_GUESSES = Counter(
    "jobstatus_write_group_guesses",
    "PostgreSQL write groups run from the view's state in one round trip, by outcome:"
    " committed; conflict (another replica had committed: run again the usual way)",
    ["outcome"],
)
VIEW_HITS = Counter("jobstatus_view_hits", "reads answered from the in-memory view")
VIEW_MISSES = Counter("jobstatus_view_misses", "reads the view could not answer (a database read)")
VIEW_EVICTIONS = Counter("jobstatus_view_evictions", "jobs dropped from the view for its budget")
VIEW_JOBS = Gauge("jobstatus_view_jobs", "jobs held in the in-memory view")
VIEW_BYTES = Gauge("jobstatus_view_bytes", "bytes the in-memory view counts against its budget")
VIEW_REVISION = Gauge("jobstatus_view_revision", "the last revision the in-memory view applied")


class Tally:
    """The answers of one hot path since the last scrape, as plain numbers on the event
    loop: one `observe(seconds)` per answer instead of a Histogram.observe and a
    Counter.inc, each under its own lock. `flush_tallies()` (at every /metrics scrape)
    adds them to `histogram` (a labelled child) and to each of `counters`, as if each
    answer had been observed and counted there.

    It adds to the histogram's own sum and bucket values (`_sum`, `_buckets`), which
    prometheus_client keeps private: tests/test_view.py checks /metrics against one
    count and one observation per answer, gRPC and REST."""

    __slots__ = ("__weakref__", "bounds", "buckets", "counters", "histogram", "seconds")

    def __init__(self, histogram: Any, *counters: Any) -> None:
        self.histogram = histogram
        self.counters = counters
        # The bucket bounds (+Inf last): an answer of `seconds` goes to the first bucket
        # whose bound is at least `seconds`, as Histogram.observe counts it.
        self.bounds: tuple[float, ...] = tuple(histogram._upper_bounds)
        self.buckets = [0] * len(self.bounds)
        self.seconds = 0.0
        _TALLIES.add(self)

    def observe(self, seconds: float) -> None:
        self.buckets[bisect_left(self.bounds, seconds)] += 1
        self.seconds += seconds

    def flush(self) -> None:
        """Add what was observed since the last flush."""
        buckets, seconds = self.buckets, self.seconds
        answered = sum(buckets)
        if not answered:
            return
        self.buckets, self.seconds = [0] * len(self.bounds), 0.0
        self.histogram._sum.inc(seconds)
        for index, count in enumerate(buckets):
            if count:
                self.histogram._buckets[index].inc(count)
        for counter in self.counters:
            counter.inc(answered)


class Count:
    """Counter.inc() on a hot path of the event loop as `count.value += 1`, added to
    `counter` at each scrape (`flush_tallies`)."""

    __slots__ = ("__weakref__", "counter", "value")

    def __init__(self, counter: Any) -> None:
        self.counter = counter
        self.value = 0
        _TALLIES.add(self)

    def flush(self) -> None:
        value, self.value = self.value, 0
        if value:
            self.counter.inc(value)


_TALLIES: weakref.WeakSet[Tally | Count] = weakref.WeakSet()


def flush_tallies() -> None:
    """Bring every Tally's answers into the metrics (before they are exposed)."""
    for tally in list(_TALLIES):
        tally.flush()

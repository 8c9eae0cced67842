"""Prometheus metrics of the process, served at GET /metrics on the HTTP listener.

Most metrics are prometheus_client's own Counter, Gauge and Histogram. The five families
counted on every answer (the RPC and HTTP counts and latencies, and the view's hits) are
`LoopCounter`s and `LoopHistogram`s instead: plain numbers kept on the event loop, with
no lock per update, that prometheus_client reads through its public custom-collector API
(`collect()` yielding CounterMetricFamily / HistogramMetricFamily, registered on the
registry). A `Tally` batches one hot path's answers into them at each scrape.

Each family comes whole from one place: its slow paths observe into the same series the
tallies are flushed into, so no name is exported by both a Histogram and a collector (the
registry refuses a duplicate name). /metrics shows them exactly as prometheus_client's
Counter and Histogram did: the same names, HELP texts, labels, bucket bounds and samples,
`_created` included.
"""

from __future__ import annotations

import logging
import os
import time
import weakref
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Protocol

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

# prometheus_client leaves out the `_created` series when this is set; so do the loop
# families (read as prometheus_client reads it).
_SHOW_CREATED = os.environ.get("PROMETHEUS_DISABLE_CREATED_SERIES", "False").lower() not in (
    "true",
    "1",
    "t",
)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class CounterSeries:
    """One labelled series of a LoopCounter: `value` grows on the event loop."""

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0
        self.created = time.time()

    def inc(self, amount: int = 1) -> None:
        self.value += amount


class HistogramSeries:
    """One labelled series of a LoopHistogram: an observation of `seconds` adds one to
    the first bucket whose bound is at least `seconds` (as Histogram.observe counts it)
    and `seconds` to the sum."""

    __slots__ = ("bounds", "buckets", "created", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds  # ascending, +Inf last
        self.buckets = [0] * len(bounds)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, seconds: float) -> None:
        self.buckets[bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds


class LoopCounter:
    """A counter family whose series are CounterSeries, exported by `collect()` as
    prometheus_client's Counter of the same name would be. Update it on the event loop
    only (`+=` without a lock); a scrape only reads it."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.series: dict[tuple[str, ...], CounterSeries] = {}
        if not self.labelnames:
            self.series[()] = CounterSeries()
        if registry is not None:
            registry.register(self)

    def labels(self, *values: str) -> CounterSeries:
        """The series of these label values (with no labels: the family's one series)."""
        series = self.series.get(values)
        if series is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name} takes labels {self.labelnames}, not {values}")
            series = self.series[values] = CounterSeries()
        return series

    def inc(self, amount: int = 1) -> None:
        """Add to the one series of a family without labels."""
        self.series[()].value += amount

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, series in list(self.series.items()):
            created = series.created if _SHOW_CREATED else None
            family.add_metric(values, series.value, created=created)
        yield family


class LoopHistogram:
    """A histogram family whose series are HistogramSeries, exported by `collect()` as
    prometheus_client's Histogram of the same name and buckets would be. Update it on the
    event loop only; a scrape only reads it.

    HistogramMetricFamily takes no creation time; the text format shows a histogram's as
    a gauge `<name>_created` after it, with the family's HELP text, so `collect()` yields
    that gauge itself."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.bounds = (*(float(bound) for bound in buckets), float("inf"))
        # The `le` label of each bucket, as prometheus_client writes it (its formatter is
        # not annotated).
        self.bucket_names = tuple(
            floatToGoString(bound)  # type: ignore[no-untyped-call]
            for bound in self.bounds
        )
        self.series: dict[tuple[str, ...], HistogramSeries] = {}
        if registry is not None:
            registry.register(self)

    def labels(self, *values: str) -> HistogramSeries:
        """The series of these label values."""
        series = self.series.get(values)
        if series is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name} takes labels {self.labelnames}, not {values}")
            series = self.series[values] = HistogramSeries(self.bounds)
        return series

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        created = GaugeMetricFamily(
            f"{self.name}_created", self.documentation, labels=self.labelnames
        )
        for values, series in list(self.series.items()):
            cumulative, total = [], 0.0
            for name, count in zip(self.bucket_names, series.buckets, strict=True):
                total += count
                cumulative.append((name, total))
            family.add_metric(values, cumulative, series.sum)
            created.add_metric(values, series.created)
        yield family
        if _SHOW_CREATED:
            yield created


RPCS = LoopCounter("jobstatus_rpcs", "gRPC calls by method and status code", ["method", "code"])
RPC_SECONDS = LoopHistogram(
    "jobstatus_rpc_seconds",
    "gRPC call latency (unary) by method",
    ["method"],
    buckets=LATENCY_BUCKETS,
)
HTTP_REQUESTS = LoopCounter(
    "jobstatus_http_requests",
    "HTTP requests by method, route and status code",
    ["method", "route", "code"],
)
HTTP_SECONDS = LoopHistogram(
    "jobstatus_http_seconds",
    "HTTP latency until the response starts, by method and route",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
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
VIEW_HITS = LoopCounter("jobstatus_view_hits", "reads answered from the in-memory view")
VIEW_MISSES = Counter("jobstatus_view_misses", "reads the view could not answer (a database read)")
VIEW_EVICTIONS = Counter("jobstatus_view_evictions", "jobs dropped from the view for its budget")
VIEW_JOBS = Gauge("jobstatus_view_jobs", "jobs held in the in-memory view")
VIEW_BYTES = Gauge("jobstatus_view_bytes", "bytes the in-memory view counts against its budget")
VIEW_REVISION = Gauge("jobstatus_view_revision", "the last revision the in-memory view applied")
JOBS = Gauge(
    "jobstatus_jobs",
    "stored jobs by kind and status (every tenant's), as of the last scrape",
    ["kind", "status"],
)

# Refreshes of gauges that are read from elsewhere (JOBS: from the store), awaited before
# each scrape is exposed (`refresh_scraped`).
_SCRAPE_REFRESHES: dict[str, Callable[[], Awaitable[None]]] = {}
log = logging.getLogger(__name__)


def refresh_on_scrape(name: str, refresh: Callable[[], Awaitable[None]]) -> None:
    """Await `refresh()` before every scrape; `name`: the gauge it refreshes (a later
    refresh of the same name replaces it: a server started again in the process)."""
    _SCRAPE_REFRESHES[name] = refresh


async def refresh_scraped() -> None:
    """Run every refresh; one that fails leaves its gauges as they were (and is logged)."""
    for refresh in list(_SCRAPE_REFRESHES.values()):
        try:
            await refresh()
        except Exception:
            log.warning("a metrics refresh failed", exc_info=True)


class Counts(Protocol):
    """A counter a Tally adds its answers to: a CounterSeries, or a LoopCounter without
    labels."""

    def inc(self, amount: int = 1) -> None: ...


class Tally:
    """The answers of one hot path since the last scrape, as plain numbers: one
    `observe(seconds)` per answer (a bisect and two adds) instead of an observation and
    a count per counter. `flush_tallies()` (at every /metrics scrape, on the event loop)
    adds them to `histogram` and to each of `counters`, as if each answer had been
    observed and counted there."""

    __slots__ = ("__weakref__", "bounds", "buckets", "counters", "histogram", "seconds")

    def __init__(self, histogram: HistogramSeries, *counters: Counts) -> None:
        self.histogram = histogram
        self.counters = counters
        self.bounds = histogram.bounds
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
        histogram = self.histogram
        histogram.sum += seconds
        for index, count in enumerate(buckets):
            histogram.buckets[index] += count
        for counter in self.counters:
            counter.inc(answered)


_TALLIES: weakref.WeakSet[Tally] = weakref.WeakSet()


def flush_tallies() -> None:
    """Bring every Tally's answers into the metrics (before they are exposed)."""
    for tally in list(_TALLIES):
        tally.flush()

"""Prometheus metrics of the process, served at GET /metrics on the HTTP listener."""

from __future__ import annotations

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
VIEW_HITS = Counter("jobstatus_view_hits", "reads answered from the in-memory view")
VIEW_MISSES = Counter("jobstatus_view_misses", "reads the view could not answer (a database read)")
VIEW_EVICTIONS = Counter("jobstatus_view_evictions", "jobs dropped from the view for its budget")
VIEW_JOBS = Gauge("jobstatus_view_jobs", "jobs held in the in-memory view")
VIEW_BYTES = Gauge("jobstatus_view_bytes", "bytes the in-memory view counts against its budget")
VIEW_REVISION = Gauge("jobstatus_view_revision", "the last revision the in-memory view applied")

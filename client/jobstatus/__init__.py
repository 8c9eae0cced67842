"""jobstatus: the Python client of the jobstatus status service.

    from jobstatus import Client, AsyncClient

Client (sync.py) and AsyncClient (aio.py) have the same methods, one accessor per
job kind; JobStatusError (errors.py) is every failed call; runner.py runs a job
in a `with` block; the generated messages are in jobstatus.v1. docs/client.md
walks it with runnable examples.
"""

from jobstatus.aio import AsyncClient
from jobstatus.errors import DeadlineExceeded, JobStatusError
from jobstatus.kinds import Status
from jobstatus.options import CallOptions, new_request_id
from jobstatus.results import History, JobChange, Page
from jobstatus.runner import AsyncDatasetRun, AsyncJobRun, DatasetRun, JobRun
from jobstatus.sync import Client
from jobstatus.watch import EventType, WatchEvent

__all__ = [
    "AsyncClient",
    "AsyncDatasetRun",
    "AsyncJobRun",
    "CallOptions",
    "Client",
    "DatasetRun",
    "DeadlineExceeded",
    "EventType",
    "History",
    "JobChange",
    "JobRun",
    "JobStatusError",
    "Page",
    "Status",
    "WatchEvent",
    "new_request_id",
]

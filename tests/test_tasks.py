"""The check that a test module leaves no task with an exception nobody retrieved
(tests/tasks.py, applied to every module by conftest.py) finds such a task, and only
such a task."""

from __future__ import annotations

import asyncio

import pytest

from tests.tasks import Unretrieved


async def fails() -> None:
    raise RuntimeError("nobody reads this")


async def ends() -> None:
    return None


async def test_a_task_whose_exception_nobody_retrieved_is_named() -> None:
    leaked = r"probe left .*never retrieved.*fails\(\)"
    with pytest.raises(AssertionError, match=leaked), Unretrieved("probe"):
        task = asyncio.create_task(fails())
        await asyncio.wait([task])
        del task


async def test_tasks_awaited_or_ending_well_pass() -> None:
    with Unretrieved("probe") as check:
        ended = asyncio.create_task(ends())
        failed = asyncio.create_task(fails())
        await asyncio.wait([ended, failed])
        assert isinstance(failed.exception(), RuntimeError)
        del ended, failed
    assert check.seen == []

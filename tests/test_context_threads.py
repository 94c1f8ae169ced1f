"""The current run crosses into asyncio tasks, ``asyncio.to_thread``, ``TaskGroup`` and, once
:func:`install_context_executor` made the loop's default executor a context-copying one,
``loop.run_in_executor(None, fn)``: work there nests under the run that started it."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest

from tracestitch import (
    ContextThreadPoolExecutor,
    contextual,
    get_current_run_tree,
    install_context_executor,
    traceable,
)
from tracestitch.export.memory import RunCollector
from tracestitch.testing import capture_runs


@traceable
def work(n: int) -> int:
    return n * 2


def parent_of_work(runs: RunCollector) -> str:
    """The name of the run ``work``'s run is a child of (``-`` for a root)."""
    run = runs.one("work")
    if run.parent_run_id is None:
        return "-"
    return next(r.name for r in runs if r.id == run.parent_run_id)


def traced_under_parent(body: Callable[[], Any]) -> RunCollector:
    """Run ``body`` (a coroutine function calling ``work``) inside a traced ``parent``."""

    @traceable(name="parent")
    async def parent() -> Any:
        return await body()

    with capture_runs() as runs:
        asyncio.run(parent())
    return runs


def test_create_task_keeps_the_parent() -> None:
    async def body() -> int:
        async def step() -> int:
            return work(1)

        return await asyncio.create_task(step())

    assert parent_of_work(traced_under_parent(body)) == "parent"


def test_to_thread_keeps_the_parent() -> None:
    async def body() -> int:
        return await asyncio.to_thread(work, 1)

    assert parent_of_work(traced_under_parent(body)) == "parent"


@pytest.mark.skipif(sys.version_info < (3, 11), reason="TaskGroup is Python 3.11+")
def test_task_group_keeps_the_parent() -> None:
    async def body() -> None:
        async def step() -> int:
            return work(1)

        async with asyncio.TaskGroup() as group:
            group.create_task(step())

    assert parent_of_work(traced_under_parent(body)) == "parent"


def test_run_in_executor_loses_the_parent_by_default() -> None:
    # asyncio does not copy the context into loop.run_in_executor: why the installer exists.
    seen: list[object] = []

    async def body() -> None:
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: seen.append(get_current_run_tree())
        )

    traced_under_parent(body)
    assert seen == [None]


def test_run_in_executor_keeps_the_parent_once_the_executor_is_installed() -> None:
    async def body() -> int:
        loop = asyncio.get_running_loop()
        executor = install_context_executor()
        assert isinstance(executor, ContextThreadPoolExecutor)
        return await loop.run_in_executor(None, work, 1)

    runs = traced_under_parent(body)
    assert parent_of_work(runs) == "parent"
    assert runs.one("work").outputs == {"output": 2}


def test_a_thread_target_wrapped_in_contextual_keeps_the_parent() -> None:
    @traceable(name="parent")
    def parent() -> None:
        thread = threading.Thread(target=contextual(work), args=(1,))
        thread.start()
        thread.join()

    with capture_runs() as runs:
        parent()
    assert parent_of_work(runs) == "parent"

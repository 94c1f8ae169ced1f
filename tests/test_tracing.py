from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tracestitch import (
    ContextThreadPoolExecutor,
    RunTree,
    contextual,
    get_current_run_tree,
    trace,
    traceable,
    tracing_context,
)
from tracestitch._guard import internal_errors, set_strict
from tracestitch.context import set_defaults
from tracestitch.export.memory import RunCollector
from tracestitch.exporter import set_exporter
from tracestitch.testing import capture_runs


@traceable
def add(a: int, b: int = 1) -> int:
    return a + b


@traceable(name="async-mul", run_type="tool", metadata={"v": 1}, tags=["math"])
async def mul(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a * b


@traceable
def count(n: int) -> Iterator[int]:
    for i in range(n):
        assert get_current_run_tree() is not None
        yield i
    return


@traceable
async def acount(n: int) -> AsyncIterator[int]:
    for i in range(n):
        await asyncio.sleep(0)
        yield i


class Service:
    @traceable
    def method(self, x: int, *rest: int, **kw: int) -> dict[str, int]:
        return {"x": x}


def test_sync_traceable_records_inputs_outputs_and_nesting() -> None:
    with capture_runs() as runs, trace("root") as root:
        assert add(2, b=3) == 5
    run = runs.one("add")
    assert run.inputs == {"a": 2, "b": 3}
    assert run.outputs == {"output": 5}
    assert root is not None and run.parent_run_id == root.id
    assert run.run_type == "chain" and run.status == "success"


async def test_async_traceable_with_options() -> None:
    with capture_runs() as runs:
        assert await mul(3, 4) == 12
    run = runs.one("async-mul")
    assert (run.run_type, run.tags, run.metadata) == ("tool", ["math"], {"v": 1})
    assert run.outputs == {"output": 12}
    assert run.parent_run_id is None and run.trace_id == run.id


def test_method_inputs_skip_self_and_keep_varargs() -> None:
    with capture_runs() as runs:
        Service().method(1, 2, 3, k=4)
    assert runs.one("method").inputs == {"x": 1, "rest": (2, 3), "k": 4}


def test_generator_run_spans_the_iteration_and_context_does_not_leak() -> None:
    with capture_runs() as runs:
        gen = count(3)
        first = next(gen)
        assert get_current_run_tree() is None  # not current while the caller holds a value
        rest = list(gen)
    assert [first, *rest] == [0, 1, 2]
    run = runs.one("count")
    assert run.outputs == {"output": [0, 1, 2], "count": 3, "return": None}


def test_generator_closed_early_still_ends_the_run() -> None:
    with capture_runs() as runs:
        gen = count(10)
        next(gen)
        gen.close()
    assert runs.one("count").outputs == {"output": [0], "count": 1, "closed_early": True}


async def test_async_generator() -> None:
    with capture_runs() as runs:
        items = [i async for i in acount(3)]
    assert items == [0, 1, 2]
    assert runs.one("acount").outputs == {"output": [0, 1, 2], "count": 3}


def test_exceptions_are_recorded_and_reraised_unchanged() -> None:
    class Boom(Exception):
        pass

    original = Boom("no")

    @traceable
    def fails() -> None:
        raise original

    with capture_runs() as runs, pytest.raises(Boom) as caught:
        fails()
    assert caught.value is original
    run = runs.one("fails")
    assert run.status == "error"
    assert run.error is not None and run.error.startswith("Boom: no")


async def test_async_exception_and_cancellation_are_recorded() -> None:
    started = asyncio.Event()

    @traceable
    async def waits() -> None:
        started.set()
        await asyncio.Event().wait()

    with capture_runs() as runs:
        task = asyncio.create_task(waits())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert runs.one("waits").error is not None
    assert runs.one("waits").error.startswith("CancelledError")  # type: ignore[union-attr]


async def test_trace_async_context_manager_and_explicit_end() -> None:
    with capture_runs() as runs:
        async with trace("block", "retriever", inputs={"q": "x"}) as run:
            assert run is not None and get_current_run_tree() is run
            await mul(1, 1)
            run.end(outputs={"docs": 2})
        assert get_current_run_tree() is None
    block = runs.one("block")
    assert block.outputs == {"docs": 2} and block.inputs == {"q": "x"}
    assert runs.one("async-mul").parent_run_id == block.id


def test_trace_records_block_exception() -> None:
    with capture_runs() as runs, pytest.raises(KeyError), trace("block"):
        raise KeyError("k")
    assert runs.one("block").error is not None


def test_disabled_tracing_runs_the_code_untraced_and_headers_cannot_enable_it() -> None:
    caller = RunTree("caller")
    with capture_runs() as runs, tracing_context(enabled=False, parent=caller.to_headers()):
        assert add(1) == 2
        with trace("nothing") as run:
            assert run is None
    assert len(runs) == 0


def test_process_wide_default_disabled() -> None:
    exported = RunCollector()
    previous = set_exporter(exported)
    set_defaults(enabled=False)
    try:
        add(0)  # no capture: not traced at all
        with capture_runs() as runs:
            add(1)  # captured locally, not exported
            with tracing_context(enabled=True):
                add(2)
            with tracing_context(enabled=False):
                add(3)
        add(4)
        assert [r.inputs["a"] for r in runs] == [1, 2]
        assert [r.inputs["a"] for r in exported] == [2]
    finally:
        set_defaults(enabled=True)
        set_exporter(previous)


def test_local_mode_collects_without_exporting() -> None:
    exported = RunCollector()
    previous = set_exporter(exported)
    try:
        with capture_runs() as runs:
            with tracing_context(enabled="local"):
                add(1)
            add(2)
        assert [r.inputs["a"] for r in runs] == [1, 2]
        assert [r.inputs["a"] for r in exported] == [2]
        with (
            pytest.raises(ValueError, match="enabled must be"),
            tracing_context(enabled="yes"),  # type: ignore[arg-type]
        ):
            pass
    finally:
        set_exporter(previous)


def test_tracing_context_metadata_tags_project_and_parent() -> None:
    caller = RunTree("caller", project_name="upstream")
    with (
        capture_runs() as runs,
        tracing_context(project_name="mine", metadata={"a": 1}, tags=["t1"]),
    ):
        with tracing_context(metadata={"b": 2}, tags=["t2"]):
            add(1)
        with tracing_context(parent=caller.to_headers()):
            add(2)
    root_run, child_run = runs.traced_runs
    assert (root_run.metadata, root_run.tags, root_run.session_name) == (
        {"a": 1, "b": 2},
        ["t1", "t2"],
        "mine",
    )
    assert child_run.parent_run_id == caller.id
    assert child_run.session_name == "upstream"  # the caller's project, from baggage


async def test_concurrent_tasks_are_isolated() -> None:
    @traceable
    async def handler(i: int) -> int:
        await asyncio.sleep(0)
        return await inner(i)

    @traceable
    async def inner(i: int) -> int:
        for _ in range(3):
            await asyncio.sleep(0)
        return i

    with capture_runs() as runs:
        await asyncio.gather(*(handler(i) for i in range(50)))
    handlers = {r.inputs["i"]: r for r in runs.named("handler")}
    for run in runs.named("inner"):
        assert run.parent_run_id == handlers[run.inputs["i"]].id
    assert len(handlers) == 50 and all(r.parent_run_id is None for r in handlers.values())


def test_threads_are_isolated_and_helpers_carry_the_context() -> None:
    barrier = threading.Barrier(8)

    @traceable
    def worker(i: int) -> int:
        barrier.wait(timeout=10)  # all 8 runs are open at once
        return add(i)

    with capture_runs() as runs:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(worker, range(8)))
        with trace("parent") as parent:
            with ContextThreadPoolExecutor(2) as pool:
                assert list(pool.map(add, [1, 2])) == [2, 3]
                assert pool.submit(add, 5).result() == 6
            thread = threading.Thread(target=contextual(add), args=(7,))
            thread.start()
            thread.join()
    workers = {r.id: r.inputs["i"] for r in runs.named("worker")}
    for run in runs.named("add"):
        if run.inputs["a"] in (1, 2, 5, 7) and run.parent_run_id not in workers:
            assert parent is not None and run.parent_run_id == parent.id
        else:
            assert workers[run.parent_run_id] == run.inputs["a"]  # type: ignore[index]
    assert len(runs.named("add")) == 12


def test_run_collector_context_manager_sees_runs_with_their_own_exporters() -> None:
    private = RunCollector()
    with capture_runs() as everything:
        run = RunTree("service-b-run", exporter=private)
        run.end()
        run.post()
    assert [r.name for r in everything] == ["service-b-run"]
    assert [r.name for r in private] == ["service-b-run"]


def test_internal_errors_are_swallowed_in_production_and_the_function_still_runs() -> None:
    def broken_inputs(inputs: dict[str, object]) -> dict[str, object]:
        raise RuntimeError("bug in a processor")

    @traceable(process_inputs=broken_inputs)
    def guarded(x: int) -> int:
        return x

    set_strict(False)
    with capture_runs() as runs:
        assert guarded(3) == 3
    assert runs.one("guarded").inputs == {}
    assert internal_errors().get("tracing.inputs", 0) >= 1
    set_strict(True)
    with pytest.raises(RuntimeError, match="bug in a processor"):
        guarded(3)


def test_capture_runs_removes_its_listener_on_exit() -> None:
    from tracestitch import exporter

    before = exporter._listeners
    with capture_runs() as runs:
        assert len(exporter._listeners) == len(before) + 1
    assert exporter._listeners == before
    add(1)
    assert len(runs) == 0  # a finished capture sees nothing more

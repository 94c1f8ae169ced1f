"""The instrumentation API, used as an integration uses it (what a Celery hook would do)."""

from __future__ import annotations

import asyncio

from tracestitch import traceable, tracing_context
from tracestitch.instrument import (
    activate,
    attach,
    current_run,
    detach,
    finish_run,
    inject,
    remote_parent,
    start_run,
    tracing_on,
)
from tracestitch.testing import capture_runs


@traceable
def work(x: int) -> int:
    return x * 2


def test_a_run_started_activated_and_finished_carries_its_children() -> None:
    with capture_runs() as runs:
        run = start_run("task", "chain", inputs={"x": 1}, kind="consumer")
        assert run is not None
        with activate(run):
            assert current_run() is run
            assert work(2) == 4
        assert current_run() is None
        finish_run(run, {"ok": True})
    by_name = {r.name: r for r in runs.traced_runs}
    assert by_name["work"].parent_run_id == run.id
    assert by_name["task"].outputs == {"ok": True}
    assert by_name["task"].extra == {"span_kind": "consumer"}
    assert by_name["task"].end_time is not None


def test_the_token_form_restores_the_previous_run_and_errors_are_recorded() -> None:
    with capture_runs() as runs:
        outer = start_run("outer")
        assert outer is not None
        token = attach(outer)
        inner = start_run("inner")  # the current run is the default parent
        detach(token)
        assert current_run() is None
        assert inner is not None and inner.parent_run_id == outer.id
        finish_run(inner, error=ValueError("boom"))
        finish_run(outer)
    errors = {r.name: r.error for r in runs.traced_runs}
    assert errors["inner"] is not None and "boom" in errors["inner"]
    assert errors["outer"] is None


def test_a_remote_parent_joins_the_callers_trace_and_inject_carries_it_on() -> None:
    caller = start_run("caller", parent=None)
    assert caller is not None
    headers = inject(caller, {})
    with capture_runs() as runs:
        run = start_run("served", parent=remote_parent(headers, trust=False), kind="server")
        assert run is not None
        onward = inject(run, {})
        finish_run(run)
    assert run.trace_id == caller.trace_id and run.parent_run_id == caller.id
    assert onward["langsmith-trace"].startswith(caller.dotted_order + ".")
    assert [r.name for r in runs.traced_runs] == ["served"]  # the stand-in is never exported


def test_nothing_is_recorded_where_tracing_is_off_and_local_mode_is_respected() -> None:
    with tracing_context(enabled=False):
        assert not tracing_on()
        assert start_run("off") is None
    with capture_runs() as runs, tracing_context(enabled="local"):
        assert tracing_on()
        run = start_run("local", metadata={"a": 1}, tags=["t"])
        assert run is not None
        finish_run(run)
    assert [r.name for r in runs.traced_runs] == ["local"]
    assert run.exporter is not None  # the local-only sink: seen by the capture, not exported


def test_context_metadata_and_tags_are_added_and_a_disabled_parent_gives_no_run() -> None:
    with tracing_context(metadata={"tenant": "acme"}, tags=["ctx"]):
        run = start_run("r", metadata={"own": 1}, tags=["own"])
    assert run is not None
    assert run.metadata == {"tenant": "acme", "own": 1} and run.tags == ["ctx", "own"]
    run.tracing_enabled = False
    assert start_run("child", parent=run) is None


def test_activation_is_isolated_between_concurrent_tasks() -> None:
    async def one(name: str) -> str | None:
        run = start_run(name, parent=None)
        assert run is not None
        with activate(run):
            await asyncio.sleep(0)
            seen = current_run()
        finish_run(run)
        return seen.name if seen is not None else None

    async def both() -> list[str | None]:
        return list(await asyncio.gather(one("a"), one("b")))

    assert asyncio.run(both()) == ["a", "b"]

"""The Celery adapter in one process (``task_always_eager``): where the task runs inside the
caller, and the never-break rule."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery

import tracestitch.integrations.celery as celery_integration
from tracestitch import trace, tracing_context
from tracestitch._guard import internal_errors, set_strict
from tracestitch.integrations.celery import instrument_celery, uninstrument_celery
from tracestitch.testing import capture_runs


@pytest.fixture
def app() -> Iterator[Celery]:
    app = Celery("eager", broker="memory://", backend="cache+memory://")
    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = False
    instrument_celery(app)
    yield app
    uninstrument_celery(app)


def test_an_eager_task_runs_under_the_caller_and_its_retries_are_siblings(app: Celery) -> None:
    @app.task(bind=True, max_retries=3)
    def flaky(self: Any, fails: int) -> str:
        if self.request.retries < fails:
            raise self.retry(exc=ConnectionError("busy"), countdown=0)
        return "ok"

    with capture_runs() as runs, trace("caller") as caller:
        assert flaky.delay(2).get() == "ok"
    attempts = [r for r in runs if r.name.endswith("flaky")]
    assert sorted(r.extra["celery"]["attempt"] for r in attempts) == [1, 2, 3]
    assert {r.parent_run_id for r in attempts} == {caller.id}


def test_an_internal_error_never_reaches_the_task(
    app: Celery, monkeypatch: pytest.MonkeyPatch
) -> None:
    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("tracer bug")

    monkeypatch.setattr(celery_integration, "start_run", broken)
    before = internal_errors().get("celery.prerun", 0)
    previous = set_strict(False)
    try:
        with capture_runs() as runs:
            assert add.delay(2, 3).get() == 5
    finally:
        set_strict(previous)
    assert internal_errors()["celery.prerun"] == before + 1
    assert not [r for r in runs if r.name.endswith("add")]


def test_nothing_is_made_where_tracing_is_off(app: Celery) -> None:
    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    with capture_runs() as runs, tracing_context(enabled=False):
        assert add.delay(1, 1).get() == 2
    assert not runs


def test_the_task_run_names_the_service_unless_the_callers_run_names_one(app: Celery) -> None:
    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    instrument_celery(app, service="ledger")  # replaces the options
    with capture_runs() as runs:
        with trace("script"):
            assert add.delay(1, 2).get() == 3
        with trace("request", metadata={"service": "orders"}):
            assert add.delay(3, 4).get() == 7
    under_script, under_request = (r for r in runs if r.name.endswith("add"))
    assert under_script.metadata["service"] == "ledger"
    assert under_request.metadata["service"] == "orders"  # run inside the caller's service

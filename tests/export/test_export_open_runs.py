"""Long-running runs are posted while open and patched at their end (tracestitch.open_runs):
the bookkeeping alone, then through a real uvicorn server whose request stays open until the
test has seen its run arrive at a real ingest endpoint."""

from __future__ import annotations

import threading
from typing import Any

import httpx
from export_helpers import ingest_server, wait_for

from servers import run_uvicorn
from tracestitch import RunTree, open_runs, traceable
from tracestitch.export.langsmith import LangSmithSink
from tracestitch.export.worker import BatchExporter
from tracestitch.exporter import set_exporter


class Shipped:
    """An exporter recording (op, run id, ended?) in the order they were handed over."""

    def __init__(self) -> None:
        self.ops: list[tuple[str, str, bool]] = []

    def submit(self, op: str, run: RunTree) -> None:
        self.ops.append((op, str(run.id), run.end_time_us is not None))

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def shutdown(self, timeout: float | None = None) -> bool:
        return True


def _run(shipped: Shipped, start_us: int) -> RunTree:
    run = RunTree("r", exporter=shipped)  # type: ignore[arg-type]
    run.start_time_us = start_us
    return run


def test_a_short_run_is_posted_once_at_its_end() -> None:
    shipped = Shipped()
    run = _run(shipped, 1_000_000_000)
    open_runs.watch(run)
    assert open_runs.sweep(2.0, now_us=1_000_000_000 + 1_999_999) == 0  # not old enough yet
    run.end()
    open_runs.ship(run)
    assert shipped.ops == [("post", str(run.id), True)]
    assert open_runs.watched() == 0


def test_a_long_run_is_posted_open_then_patched_and_never_posted_twice() -> None:
    shipped = Shipped()
    old = _run(shipped, 1_000_000_000)
    young = _run(shipped, 1_000_000_000 + 1_500_000)
    for run in (old, young):
        open_runs.watch(run)
    assert open_runs.sweep(2.0, now_us=1_000_000_000 + 2_000_000) == 1
    assert shipped.ops == [("post", str(old.id), False)]
    assert open_runs.sweep(2.0, now_us=1_000_000_000 + 9_000_000) == 1  # young now; old not again
    old.end()
    open_runs.ship(old)
    young.end()
    open_runs.ship(young)
    assert [op for op, _, _ in shipped.ops] == ["post", "post", "patch", "patch"]
    assert open_runs.watched() == 0


def test_a_run_that_ended_before_the_sweep_is_left_to_its_own_post() -> None:
    shipped = Shipped()
    run = _run(shipped, 1_000_000_000)
    open_runs.watch(run)
    run.end()  # ended, not yet shipped: the sweep must not post it as open
    assert open_runs.sweep(1.0, now_us=1_000_000_000 + 5_000_000) == 0
    open_runs.ship(run)
    assert shipped.ops == [("post", str(run.id), True)]


def test_watching_is_bounded(monkeypatch: Any) -> None:
    monkeypatch.setattr(open_runs, "MAX_WATCHED", 3)
    shipped = Shipped()
    runs = [_run(shipped, 1) for _ in range(5)]
    for run in runs:
        open_runs.watch(run)
    assert open_runs.watched() == 3
    for run in runs:
        run.end()
        open_runs.ship(run)
    assert [op for op, _, _ in shipped.ops] == ["post"] * 5 and open_runs.watched() == 0


def test_traceable_registers_and_ships_through_open_runs() -> None:
    shipped = Shipped()
    set_exporter(shipped)  # type: ignore[arg-type]
    seen: list[int] = []

    @traceable
    def work() -> None:
        seen.append(open_runs.watched())

    work()
    assert seen == [1] and open_runs.watched() == 0
    assert [(op, ended) for op, _, ended in shipped.ops] == [("post", True)]


def test_a_hung_request_shows_up_at_the_ingest_endpoint_before_it_ends() -> None:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from tracestitch.middleware.asgi import TracingMiddleware

    release = threading.Event()

    @traceable(name="slow-llm-call")
    def slow_call() -> str:
        release.wait(30)  # held open until the test has seen both runs arrive
        return "done"

    def endpoint(request: Any) -> PlainTextResponse:
        return PlainTextResponse(slow_call())

    app = Starlette(routes=[Route("/slow", endpoint)])
    app.add_middleware(TracingMiddleware, service="svc")
    with ingest_server() as server:
        exporter = BatchExporter(
            LangSmithSink(server.url), post_open_after=0.2, flush_interval=0.05
        ).start()  # configure() starts its exporters too; the sweep runs on their worker
        set_exporter(exporter)
        with run_uvicorn(app) as url:
            result: list[httpx.Response] = []
            caller = threading.Thread(
                target=lambda: result.append(httpx.get(f"{url}/slow", timeout=30))
            )
            caller.start()
            capture = server.capture

            def open_runs_arrived() -> bool:
                with capture.lock:
                    names = {r.get("name") for r in capture.runs.values()}
                return {"GET /slow", "slow-llm-call"} <= names

            try:
                assert wait_for(open_runs_arrived, timeout=20)
                with capture.lock:
                    assert all("end_time" not in r for r in capture.runs.values())
                    assert not result  # the request is still open
            finally:
                release.set()
                caller.join(30)
            assert result and result[0].text == "done"
            assert exporter.flush(10)
        with capture.lock:
            runs = dict(capture.runs)
            posts, patches = dict(capture.posts), dict(capture.patches)
            errors = list(capture.errors)
    assert not errors
    assert len(runs) == 2 and all(r.get("end_time") for r in runs.values())
    slow = next(r for r in runs.values() if r["name"] == "slow-llm-call")
    assert slow["outputs"] == {"output": "done"}
    # Each run: one post while open, one patch at its end; never a second post.
    assert posts == dict.fromkeys(runs, 1) and patches == dict.fromkeys(runs, 1)
    exporter.shutdown(2)


def test_the_first_watched_run_has_the_lazy_exporter_built_so_the_sweep_can_run() -> None:
    from tracestitch import exporter as exporter_mod

    built: list[Shipped] = []

    def factory() -> Shipped:
        built.append(Shipped())
        return built[-1]

    exporter_mod.set_exporter_factory(factory)  # type: ignore[arg-type]
    try:
        run = _run(Shipped(), 1)
        open_runs.watch(run)  # a start, before any run has ended
        assert len(built) == 1 and exporter_mod.get_exporter() is built[0]
        open_runs.watch(_run(Shipped(), 2))
        assert len(built) == 1  # asked once
    finally:
        exporter_mod.set_exporter_factory(None)


class Refusing(Shipped):
    """Refuses (as a full BatchExporter does) every post of a run still open."""

    def submit(self, op: str, run: RunTree) -> bool:
        if op == "post" and run.end_time_us is None:
            return False
        super().submit(op, run)
        return True


def test_a_run_whose_open_post_was_refused_is_posted_whole_at_its_end() -> None:
    refusing = Refusing()
    run = _run(refusing, 1_000_000_000)  # type: ignore[arg-type]
    open_runs.watch(run)
    assert open_runs.sweep(1.0, now_us=1_000_000_000 + 5_000_000) == 0  # not kept
    run.end()
    open_runs.ship(run)
    assert refusing.ops == [("post", str(run.id), True)]  # a post, never a lone patch


class Gated(Shipped):
    """Holds the first open post until released, to look at the sweep meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def submit(self, op: str, run: RunTree) -> None:
        if op == "post" and run.end_time_us is None and not self.entered.is_set():
            self.entered.set()
            self.release.wait(10)
        super().submit(op, run)


def test_the_sweep_posts_under_the_lock_that_an_end_takes() -> None:
    # So an end cannot slip between the sweep's decision and its post, and send its patch
    # before the post it follows.
    gated = Gated()
    run = _run(gated, 1_000_000_000)
    open_runs.watch(run)
    sweeper = threading.Thread(target=open_runs.sweep, args=(1.0, 1_000_000_000 + 5_000_000))
    sweeper.start()
    try:
        assert gated.entered.wait(10)
        assert open_runs._lock.locked()  # the post is being submitted under the lock
    finally:
        gated.release.set()
        sweeper.join(10)
    run.end()
    open_runs.ship(run)
    assert [op for op, _, _ in gated.ops] == ["post", "patch"]


def test_a_run_abandoned_without_ending_is_not_kept_alive() -> None:
    import gc
    import weakref

    run = _run(Shipped(), 1)
    open_runs.watch(run)
    ref = weakref.ref(run)
    del run
    gc.collect()
    assert ref() is None
    open_runs.sweep(1.0, now_us=10_000_000)
    assert open_runs.watched() == 0


def test_an_end_while_the_sweep_posts_its_run_waits_and_patches() -> None:
    # The end pops its run without the lock; one the sweep has claimed is not there, and the
    # end must then wait for the sweep's post instead of posting the run a second time.
    gated = Gated()
    run = _run(gated, 1_000_000_000)
    open_runs.watch(run)
    sweeper = threading.Thread(target=open_runs.sweep, args=(1.0, 1_000_000_000 + 5_000_000))
    sweeper.start()
    assert gated.entered.wait(10)  # the sweep is inside its post of the open run
    run.end()
    ender = threading.Thread(target=open_runs.ship, args=(run,))
    ender.start()
    ender.join(0.5)  # bounded: it must still be waiting for the sweep's lock
    waited = ender.is_alive()
    gated.release.set()
    sweeper.join(10)
    ender.join(10)
    assert waited
    assert [op for op, _, _ in gated.ops] == ["post", "patch"]


def test_an_end_that_claims_its_run_first_leaves_the_sweep_nothing() -> None:
    gated = Gated()
    run = _run(gated, 1_000_000_000)
    open_runs.watch(run)
    run.end()
    open_runs.ship(run)
    assert open_runs.sweep(1.0, 1_000_000_000 + 5_000_000) == 0
    assert [op for op, _, _ in gated.ops] == ["post"]
    assert open_runs.watched() == 0

"""The WSGI middleware, driven in-process (Flask and plain WSGI apps called directly)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, abort
from mw_helpers import call_wsgi, wsgi_environ

from tracestitch import RunTree, _guard
from tracestitch.context import get_current_run_tree, tracing_enabled
from tracestitch.middleware.wsgi import TracingMiddleware
from tracestitch.testing import capture_runs
from tracestitch.tracing import traceable


@traceable
def lookup(item_id: int) -> dict[str, int]:
    return {"id": item_id}


def make_flask(**options: Any) -> Flask:
    app = Flask("inventory")

    @app.route("/items/<int:item_id>")
    def item(item_id: int) -> dict[str, int]:
        return lookup(item_id)

    @app.route("/boom")
    def boom() -> str:
        raise ValueError("kaboom")

    @app.route("/status/<int:code>")
    def status(code: int) -> tuple[str, int]:
        return "s", code

    @app.route("/missing")
    def missing() -> str:
        abort(404)

    @app.route("/context")
    def context() -> dict[str, Any]:
        run = get_current_run_tree()
        if run is not None and not run.tracing_enabled:
            run = None  # sampled out: a stand-in that records nothing (it passes on -00)
        return {"enabled": tracing_enabled(), "run": None if run is None else str(run.id)}

    app.wsgi_app = TracingMiddleware(app.wsgi_app, **options)  # type: ignore[method-assign]
    return app


def test_flask_route_template_inputs_outputs() -> None:
    app = make_flask(record_headers=["user-agent", "cookie"])
    environ = wsgi_environ(
        "/items/42", query="a=1&password=p", headers={"User-Agent": "ua", "Cookie": "s=1"}
    )
    with capture_runs() as runs:
        result = call_wsgi(app, environ)
    assert result.code == 200
    server = runs.one("GET /items/<int:item_id>")
    assert server.inputs == {
        "method": "GET",
        "path": "/items/42",
        "query": "a=1&password=[REDACTED]",
        "client": "127.0.0.1",
        "headers": {"user-agent": "ua", "cookie": "[REDACTED]"},
    }
    assert server.outputs == {"status_code": 200, "response_size": len(result.body)}
    assert server.metadata == {"service": "inventory", "server.address": "127.0.0.1:8000"}
    assert runs.one("lookup").parent_run_id == server.id
    assert get_current_run_tree() is None


def test_route_resolver_and_unrouted_path() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    resolver = TracingMiddleware(app, route_resolver=lambda env: "/orders/{id}")
    plain = TracingMiddleware(app)
    with capture_runs() as runs:
        call_wsgi(resolver, wsgi_environ("/orders/17"))
        call_wsgi(plain, wsgi_environ("/orders/18"))
    assert [r.name for r in runs] == ["GET /orders/{id}", "GET /orders/18"]


def test_exception_recorded_and_re_raised() -> None:
    app = make_flask()
    app.config["PROPAGATE_EXCEPTIONS"] = True
    with capture_runs() as runs, pytest.raises(ValueError, match="kaboom"):
        call_wsgi(app, wsgi_environ("/boom"))
    run = runs.one("GET /boom")
    assert run.error is not None
    assert run.error.startswith("ValueError: kaboom")
    assert get_current_run_tree() is None


@pytest.mark.parametrize(
    ("path", "status", "errored"),
    [("/status/500", 500, True), ("/status/404", 404, False), ("/missing", 404, False)],
)
def test_5xx_vs_4xx(path: str, status: int, errored: bool) -> None:
    with capture_runs() as runs:
        assert call_wsgi(make_flask(), wsgi_environ(path)).code == status
    (run,) = runs.traced_runs
    assert (run.error is not None) is errored


def test_run_ends_when_the_iterable_is_exhausted_and_context_is_bound_only_while_app_runs() -> None:
    seen: list[RunTree | None] = []

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [])
        for i in range(3):
            seen.append(get_current_run_tree())
            yield b"x" * (i + 1)

    wrapped = TracingMiddleware(app)
    with capture_runs() as runs:
        result = wrapped(wsgi_environ("/gen"), lambda *a: None)
        iterator = iter(result)
        assert next(iterator) == b"x"
        assert get_current_run_tree() is None  # between chunks: not bound
        assert len(runs) == 0  # not ended while the server still pulls chunks
        assert list(iterator) == [b"xx", b"xxx"]
        assert len(runs) == 1  # exhausted: ended
        result.close()  # type: ignore[attr-defined]
    run = runs.one("GET /gen")
    assert {s.id for s in seen if s is not None} == {run.id}
    assert len(seen) == 3
    assert run.outputs == {"status_code": 200, "response_size": 6}


def test_closed_early_ends_the_run_and_closes_the_app_iterable() -> None:
    closed: list[bool] = []

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [])
        try:
            for _ in range(100):
                yield b"chunk"
        finally:
            closed.append(get_current_run_tree() is not None)

    with capture_runs() as runs:
        result = TracingMiddleware(app)(wsgi_environ("/gen"), lambda *a: None)
        iterator = iter(result)
        next(iterator)
        result.close()  # type: ignore[attr-defined]
    assert closed == [True]  # the app's cleanup still ran inside the request's run
    run = runs.one("GET /gen")
    assert run.outputs == {"status_code": 200, "response_size": 5, "incomplete": True}
    assert get_current_run_tree() is None


def test_error_while_iterating_is_recorded() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [])
        yield b"a"
        raise RuntimeError("mid-stream")

    with capture_runs() as runs, pytest.raises(RuntimeError, match="mid-stream"):
        call_wsgi(TracingMiddleware(app), wsgi_environ("/gen"))
    error = runs.one("GET /gen").error
    assert error is not None
    assert error.startswith("RuntimeError: mid-stream")
    assert get_current_run_tree() is None


def test_trace_header_sampling_and_parent() -> None:
    caller = RunTree("caller")
    app = make_flask(trace_id_header="x-trace-id", sample_rate=0.0)
    with capture_runs() as runs:
        sampled_out = call_wsgi(app, wsgi_environ("/context"))
        kept = make_flask(trace_id_header="x-trace-id")
        joined = call_wsgi(kept, wsgi_environ("/items/1", headers=caller.to_headers()))
    assert sampled_out.body == b'{"enabled":false,"run":null}\n'
    assert sampled_out.header("x-trace-id") is None
    server = runs.one("GET /items/<int:item_id>")
    assert server.parent_run_id == caller.id
    assert joined.header("x-trace-id") == str(caller.trace_id)
    assert len(runs) == 2  # the server run and its child; nothing for the sampled-out request


def test_exclusions() -> None:
    app = make_flask(exclude=["/status/*"])
    with capture_runs() as runs:
        call_wsgi(app, wsgi_environ("/status/200"))
        call_wsgi(app, wsgi_environ("/items/1", method="OPTIONS"))
    assert len(runs) == 0


def test_internal_error_swallowed_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    from tracestitch.middleware._common import ServerTracer

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(ServerTracer, "start", broken)
    _guard.set_strict(False)
    result = call_wsgi(make_flask(), wsgi_environ("/items/3"))
    assert result.code == 200
    assert result.body == b'{"id":3}\n'
    assert _guard.internal_errors().get("middleware.wsgi.start", 0) >= 1

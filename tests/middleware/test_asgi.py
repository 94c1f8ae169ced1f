"""The ASGI middleware, driven in-process (the ASGI app called directly)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import BackgroundTasks, FastAPI, HTTPException
from fastapi.responses import PlainTextResponse, StreamingResponse
from mw_helpers import call_asgi
from starlette.applications import Starlette
from starlette.routing import Mount, Route

from tracestitch import RunTree, _guard
from tracestitch.context import get_current_run_tree, tracing_enabled
from tracestitch.export.memory import RunCollector
from tracestitch.exporter import set_exporter
from tracestitch.middleware.asgi import TracingMiddleware
from tracestitch.testing import capture_runs
from tracestitch.tracing import traceable


@traceable
async def lookup(item_id: int) -> dict[str, int]:
    return {"id": item_id}


def make_app(**options: Any) -> FastAPI:
    app = FastAPI(title="orders")

    @app.get("/items/{item_id}")
    async def read_item(item_id: int) -> dict[str, int]:
        return await lookup(item_id)

    @app.get("/health")
    async def health() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/healthcheck")
    async def healthcheck() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/boom")
    async def boom() -> None:
        raise ValueError("kaboom")

    @app.get("/status/{code}")
    async def status(code: int) -> PlainTextResponse:
        return PlainTextResponse("s", status_code=code)

    @app.get("/missing")
    async def missing() -> None:
        raise HTTPException(status_code=404, detail="nope")

    @app.get("/context")
    async def context() -> dict[str, Any]:
        run = get_current_run_tree()
        if run is not None and not run.tracing_enabled:
            run = None  # sampled out: a stand-in that records nothing (it passes on -00)
        return {"enabled": tracing_enabled(), "run": None if run is None else str(run.trace_id)}

    app.add_middleware(TracingMiddleware, **options)
    return app


async def test_run_named_by_route_template_with_inputs_outputs_metadata() -> None:
    app = make_app(record_headers=["user-agent", "authorization"])
    with capture_runs() as runs:
        result = await call_asgi(
            app,
            "/items/42",
            query=b"q=1&token=secret",
            headers=[(b"user-agent", b"ua"), (b"authorization", b"Bearer x")],
        )
    assert result.status == 200
    server = runs.one("GET /items/{item_id}")
    assert server.parent_run_id is None
    assert server.inputs == {
        "method": "GET",
        "path": "/items/42",
        "query": "q=1&token=[REDACTED]",
        "client": "127.0.0.1",
        "headers": {"user-agent": "ua", "authorization": "[REDACTED]"},
    }
    assert server.outputs == {"status_code": 200, "response_size": len(result.body)}
    assert server.error is None
    assert server.metadata["service"] == "orders"  # FastAPI title, seen through scope["app"]
    assert server.metadata["server.address"] == "127.0.0.1:8000"
    child = runs.one("lookup")
    assert child.parent_run_id == server.id
    assert child.trace_id == server.trace_id
    assert child.metadata["service"] == "orders"  # inherited


async def test_unrouted_request_is_named_by_path_and_mounts_keep_their_prefix() -> None:
    async def endpoint(request: Any) -> PlainTextResponse:
        return PlainTextResponse("x")

    inner = Starlette(routes=[Route("/users/{user_id:int}", endpoint)])
    app = Starlette(routes=[Mount("/api", inner)])
    wrapped = TracingMiddleware(app, service="svc")
    with capture_runs() as runs:
        assert (await call_asgi(wrapped, "/api/users/7")).status == 200
        assert (await call_asgi(wrapped, "/nowhere/7")).status == 404
    assert runs.one("GET /api/users/{user_id}").outputs["status_code"] == 200  # type: ignore[index]
    assert runs.one("GET /nowhere/7").error is None


async def _plain_asgi(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"raw"})


async def test_parameterised_mounts_are_named_by_their_templates() -> None:
    async def endpoint(request: Any) -> PlainTextResponse:
        return PlainTextResponse("x")

    items = Route("/items/{item_id}", endpoint)
    shared = Starlette(routes=[Route("/users/{user_id:int}", endpoint)])
    app = Starlette(
        routes=[
            Mount("/api", shared),  # the same sub-app at a fixed and at a parameterised prefix
            Mount("/static", app=_plain_asgi),
            Mount("/org/{org}/v{version:int}", routes=[Mount("/{team}", shared)]),
            Mount("/{tenant}", routes=[items, Mount("/files", app=_plain_asgi)]),
        ]
    )
    wrapped = TracingMiddleware(app, service="svc")
    tenants = [f"tenant-{i}" for i in range(50)]
    with capture_runs() as runs:
        for tenant in tenants:
            assert (await call_asgi(wrapped, f"/{tenant}/items/{tenant}")).status == 200
        assert (await call_asgi(wrapped, "/acme/files/a/b.txt")).status == 200
        assert (await call_asgi(wrapped, "/api/users/7")).status == 200
        assert (await call_asgi(wrapped, "/org/acme/v2/red/users/8")).status == 200
        assert (await call_asgi(wrapped, "/static/css/site.css")).status == 200
    names = [r.name for r in runs]
    assert names == ["GET /{tenant}/items/{item_id}"] * len(tenants) + [
        "GET /{tenant}/files/{path}",
        # Fixed prefixes stay as they are.
        "GET /api/users/{user_id}",
        "GET /org/{org}/v{version}/{team}/users/{user_id}",
        # A mounted ASGI app is named once by its mount, not "/static/static/{path}".
        "GET /static/{path}",
    ]
    assert not any(tenant in name for tenant in tenants for name in names)
    # The cache holds one entry per node of the routing tree, not one per caller-chosen tenant.
    places = wrapped._routes._places
    assert len(places) == 8  # five mounts, three routes (one reached by two chains)
    assert all(isinstance(key, int) for key in places)


async def test_mount_templates_when_added_with_add_middleware() -> None:
    """Wrapping Starlette's inner stack: the routes come from the app Starlette put in scope."""

    async def endpoint(request: Any) -> PlainTextResponse:
        return PlainTextResponse("x")

    sub = Starlette(routes=[Route("/items/{item_id}", endpoint)])
    app = FastAPI()
    app.mount("/{tenant}", sub)
    app.add_middleware(TracingMiddleware, service="svc")
    with capture_runs() as runs:
        assert (await call_asgi(app, "/acme/items/1")).status == 200
        assert (await call_asgi(app, "/globex/items/2")).status == 200
    assert [r.name for r in runs] == ["GET /{tenant}/items/{item_id}"] * 2


async def test_mounts_behind_opaque_apps_fall_back_to_the_path_uncached(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A sub-app hidden behind middleware (no ``routes``): its mount templates are unknown."""
    from tracestitch.middleware import _starlette_routes as routes

    walks: list[object] = []
    index_routes = routes._index
    monkeypatch.setattr(routes, "_index", lambda r: walks.append(r) or index_routes(r))

    async def endpoint(request: Any) -> PlainTextResponse:
        return PlainTextResponse("x")

    class Opaque:
        def __init__(self, app: Any) -> None:
            self._app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            await self._app(scope, receive, send)

    inner = Starlette(routes=[Route("/items/{item_id}", endpoint)])
    app = Starlette(
        routes=[Mount("/fixed", app=Opaque(inner)), Mount("/{tenant}", app=Opaque(inner))]
    )
    wrapped = TracingMiddleware(app, service="svc")
    with capture_runs() as runs:
        assert (await call_asgi(wrapped, "/fixed/items/1")).status == 200
        for i in range(20):
            assert (await call_asgi(wrapped, f"/t{i}/items/{i}")).status == 200
    assert runs[0].name == "GET /fixed/items/{item_id}"
    assert [r.name for r in runs[1:]] == [f"GET /t{i}/items/{{item_id}}" for i in range(20)]
    # Nothing keyed by the concrete prefix was cached; the tree was walked once, not per request.
    assert len(wrapped._routes._places) == 3  # the two mounts, and the route found under neither
    assert len(walks) == 1


async def test_exclusions_and_excluded_methods() -> None:
    app = make_app(exclude=["/health"])
    with capture_runs() as runs:
        await call_asgi(app, "/health")
        await call_asgi(app, "/healthcheck")
        await call_asgi(app, "/items/1", method="OPTIONS")
        await call_asgi(app, "/items/1", method="HEAD")
    assert [r.name for r in runs] == ["GET /healthcheck"]


async def test_exception_is_recorded_and_re_raised_unchanged() -> None:
    app = make_app()
    with capture_runs() as runs, pytest.raises(ValueError, match="kaboom") as caught:
        await call_asgi(app, "/boom")
    run = runs.one("GET /boom")
    assert run.error is not None
    assert run.error.startswith("ValueError: kaboom")
    assert "Traceback" in run.error
    assert caught.value.args == ("kaboom",)


@pytest.mark.parametrize(
    ("path", "status", "errored"),
    [
        ("/status/500", 500, True),
        ("/status/503", 503, True),
        ("/status/404", 404, False),
        ("/status/400", 400, False),
        ("/status/302", 302, False),
        ("/missing", 404, False),
    ],
)
async def test_5xx_marks_error_4xx_does_not(path: str, status: int, errored: bool) -> None:
    app = make_app()
    with capture_runs() as runs:
        result = await call_asgi(app, path)
    assert result.status == status
    (run,) = runs.traced_runs
    assert (run.error is not None) is errored
    assert run.outputs is not None
    assert run.outputs["status_code"] == status
    if errored:
        assert run.error == f"HTTP {status} " + {500: "Internal Server Error"}.get(
            status, "Service Unavailable"
        )


async def test_trace_id_response_header() -> None:
    app = make_app(trace_id_header="x-trace-id")
    with capture_runs() as runs:
        result = await call_asgi(app, "/items/1")
    assert result.header("x-trace-id") == str(runs.one("GET /items/{item_id}").trace_id)


async def test_joins_the_callers_trace() -> None:
    caller = RunTree("caller")
    headers = [(k.encode(), v.encode()) for k, v in caller.to_headers().items()]
    with capture_runs() as runs:
        await call_asgi(make_app(), "/items/1", headers=headers)
    server = runs.one("GET /items/{item_id}")
    assert server.trace_id == caller.trace_id
    assert server.parent_run_id == caller.id
    assert server.dotted_order.startswith(caller.dotted_order + ".")
    assert "caller" not in [r.name for r in runs]  # the stand-in is never exported


async def test_sampled_out_root_makes_no_runs_and_propagates_nothing() -> None:
    app = make_app(sample_rate=0.0)
    with capture_runs() as runs:
        result = await call_asgi(app, "/context")
        await call_asgi(app, "/items/3")  # its @traceable child must not make a root either
    assert result.body == b'{"enabled":false,"run":null}'
    assert len(runs) == 0


async def test_a_callers_trace_is_kept_by_its_trace_id_as_the_sdks_keep_it() -> None:
    # As a LangSmith-SDK service with the same rate: the decision is the trace id's hash, so
    # the caller's services and this one keep or drop the trace together.
    from langsmith._internal._sampling import is_sampled_by_id

    app = make_app(sample_rate=0.5)
    callers = [RunTree("caller") for _ in range(24)]
    with capture_runs() as runs:
        for caller in callers:
            headers = [(k.encode(), v.encode()) for k, v in caller.to_headers().items()]
            await call_asgi(app, "/items/1", headers=headers)
    kept = {r.trace_id for r in runs if r.name == "GET /items/{item_id}"}
    expected = {c.trace_id for c in callers if is_sampled_by_id(str(c.trace_id), 0.5)}
    assert kept == expected and 0 < len(kept) < len(callers)


async def test_a_sampled_out_request_passes_the_unsampled_trace_on() -> None:
    import httpx

    from tracestitch.clients.httpx import AsyncTracingTransport

    seen: list[httpx.Headers] = []

    def downstream(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers)
        return httpx.Response(200)

    app = FastAPI()

    @app.get("/call")
    async def call() -> dict[str, Any]:
        transport = AsyncTracingTransport(httpx.MockTransport(downstream))
        async with httpx.AsyncClient(transport=transport) as client:
            await client.get("http://backend.internal/x")
        return {}

    app.add_middleware(TracingMiddleware, sample_rate=0.0)
    with capture_runs() as runs:
        await call_asgi(app, "/call")
    assert len(runs) == 0
    (headers,) = seen
    # Only a W3C traceparent with the sampled flag 00: the next service records nothing.
    assert headers["traceparent"].endswith("-00")
    assert "langsmith-trace" not in headers and "baggage" not in headers


async def test_start_new_trace_off_leaves_untraced_requests_alone() -> None:
    app = make_app(start_new_trace=False)
    with capture_runs() as runs:
        result = await call_asgi(app, "/context")
    assert result.body == b'{"enabled":true,"run":null}'
    assert len(runs) == 0


async def test_streamed_response_run_lasts_as_long_as_the_stream() -> None:
    app = FastAPI()

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for i in range(5):
                await asyncio.sleep(0.2)  # the stream's own pacing, not synchronisation
                yield f"chunk{i}\n".encode()

        return StreamingResponse(chunks())

    app.add_middleware(TracingMiddleware)
    with capture_runs() as runs:
        started = time.monotonic()
        result = await asyncio.wait_for(call_asgi(app, "/stream"), timeout=10)
        elapsed = time.monotonic() - started
    run = runs.one("GET /stream")
    assert result.body.count(b"chunk") == 5
    assert run.latency is not None
    assert 0.9 <= run.latency <= elapsed + 0.05
    assert run.outputs == {"status_code": 200, "response_size": len(result.body)}


async def test_background_task_nests_without_stretching_the_request_run() -> None:
    app = FastAPI()

    @traceable
    async def send_email(to: str) -> str:
        await asyncio.sleep(0.3)  # slow work after the response
        return to

    @app.get("/signup")
    async def signup(background: BackgroundTasks) -> dict[str, bool]:
        background.add_task(send_email, "a@example.com")
        return {"ok": True}

    app.add_middleware(TracingMiddleware)
    with capture_runs() as runs:
        await asyncio.wait_for(call_asgi(app, "/signup"), timeout=10)
    server = runs.one("GET /signup")
    email = runs.one("send_email")
    assert email.parent_run_id == server.id
    assert server.latency is not None
    assert server.latency < 0.3
    assert server.end_time is not None
    assert email.start_time >= server.end_time


async def test_client_disconnect_ends_the_run() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()  # the request body
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        message = await receive()  # the client goes away mid-stream
        assert message["type"] == "http.disconnect"

    with capture_runs() as runs:
        await call_asgi(TracingMiddleware(app), "/s", disconnect_after_body=True)
    run = runs.one("GET /s")
    assert run.outputs == {"status_code": 200, "response_size": 7, "incomplete": True}


async def test_non_http_scopes_pass_through_and_lifespan_shutdown_flushes() -> None:
    events: list[str] = []

    class Exporter(RunCollector):
        def flush(self, timeout: float | None = None) -> bool:
            events.append("flush")
            return True

    set_exporter(Exporter())

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                events.append("app shutdown")
                await send({"type": "lifespan.shutdown.complete"})
                return

    incoming = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def receive() -> dict[str, Any]:
        return next(incoming)

    async def send(message: dict[str, Any]) -> None:
        events.append(message["type"])

    await asyncio.wait_for(TracingMiddleware(app)({"type": "lifespan"}, receive, send), 10)
    assert events == [
        "lifespan.startup.complete",
        "app shutdown",
        "flush",
        "lifespan.shutdown.complete",
    ]


async def test_context_is_clean_after_each_request() -> None:
    app = make_app()
    for path in ("/items/1", "/status/500", "/missing"):
        await call_asgi(app, path)
        assert get_current_run_tree() is None
    with pytest.raises(ValueError, match="kaboom"):
        await call_asgi(app, "/boom")
    assert get_current_run_tree() is None


async def test_internal_error_is_swallowed_and_counted_in_production(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tracestitch.middleware import _exchange

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("bug in tracestitch")

    monkeypatch.setattr(_exchange, "finish_run", broken)
    app = make_app()
    before = _guard.internal_errors().get("middleware.asgi.finish", 0)
    _guard.set_strict(False)
    result = await call_asgi(app, "/items/5")
    assert result.status == 200
    assert result.body == b'{"id":5}'
    assert _guard.internal_errors()["middleware.asgi.finish"] == before + 1
    _guard.set_strict(True)  # under tests the same bug raises, so it cannot hide
    with pytest.raises(RuntimeError, match="bug in tracestitch"):
        await call_asgi(app, "/items/5")


async def test_failing_exporter_never_breaks_the_request() -> None:
    class Failing(RunCollector):
        def submit(self, op: Any, run: Any) -> None:
            raise OSError("disk full")

    set_exporter(Failing())
    _guard.set_strict(False)
    result = await call_asgi(make_app(), "/items/9")
    assert result.status == 200
    assert result.body == b'{"id":9}'
    assert _guard.internal_errors().get("exporter.submit", 0) >= 1


def test_fastapi_under_starlette_testclient_is_traced() -> None:
    # TestClient puts scope["server"] as a list, which the ASGI spec allows.
    from fastapi import FastAPI
    from starlette.testclient import TestClient

    from tracestitch.middleware.asgi import TracingMiddleware
    from tracestitch.testing import capture_runs

    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    app.add_middleware(TracingMiddleware, service="svc")
    with capture_runs() as runs, TestClient(app) as client:
        assert client.get("/items/7").json() == {"id": 7}
    run = runs.one("GET /items/{item_id}")
    assert run.metadata["service"] == "svc"
    assert run.metadata["server.address"] == "testserver:80"


@pytest.mark.parametrize(("trust", "expected"), [(None, None), (True, ["elsewhere"])])
async def test_callers_cannot_add_replicas_unless_trusted(
    trust: bool | None, expected: list[str] | None
) -> None:
    # A replica makes this service write a copy of every run into the named project.
    import json
    from urllib.parse import quote

    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        run = get_current_run_tree()
        seen.append(run.replicas if run is not None else "no run")
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    caller = RunTree("caller", metadata={"m": 1})
    headers = dict(caller.to_headers())
    replicas = quote(json.dumps([{"project_name": "elsewhere"}]))
    headers["baggage"] += f",langsmith-replicas={replicas}"
    options = {} if trust is None else {"trust_incoming": trust}
    traced = TracingMiddleware(app, **options)
    raw = [(k.encode(), v.encode()) for k, v in headers.items()]
    await call_asgi(traced, "/x", headers=raw)
    replicas_seen = seen[0]
    names = None if replicas_seen is None else [r["project_name"] for r in replicas_seen]
    assert names == expected

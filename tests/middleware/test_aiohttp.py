"""The aiohttp middleware, driven in-process through aiohttp's TestServer/TestClient."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tracestitch import RunTree, _guard
from tracestitch.context import get_current_run_tree
from tracestitch.export.memory import RunCollector
from tracestitch.exporter import set_exporter
from tracestitch.middleware.aiohttp import setup_tracing, tracing_middleware
from tracestitch.testing import capture_runs
from tracestitch.tracing import traceable

ClientFactory = Callable[[web.Application], Awaitable[TestClient[Any, Any]]]


@traceable
async def lookup(item_id: str) -> dict[str, str]:
    return {"id": item_id}


def make_app(**options: Any) -> web.Application:
    routes = web.RouteTableDef()

    @routes.get("/items/{item_id}")
    async def item(request: web.Request) -> web.Response:
        return web.json_response(await lookup(request.match_info["item_id"]))

    @routes.get("/boom")
    async def boom(request: web.Request) -> web.Response:
        raise ValueError("kaboom")

    @routes.get("/not-found")
    async def not_found(request: web.Request) -> web.Response:
        raise web.HTTPNotFound(text="nope")

    @routes.get("/redirect")
    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("/items/1")

    @routes.get("/unavailable")
    async def unavailable(request: web.Request) -> web.Response:
        raise web.HTTPServiceUnavailable()

    @routes.get("/stream")
    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(5):
            await asyncio.sleep(0.2)  # the stream's own pacing
            await response.write(b"chunk")
        return response  # aiohttp calls write_eof after the middleware returned

    @routes.get("/context")
    async def context(request: web.Request) -> web.Response:
        run = get_current_run_tree()
        if run is not None and not run.tracing_enabled:
            run = None  # sampled out: a stand-in that records nothing (it passes on -00)
        return web.json_response({"run": None if run is None else str(run.id)})

    app = web.Application()
    app.add_routes(routes)
    setup_tracing(app, **options)
    return app


@pytest.fixture
async def client() -> AsyncIterator[ClientFactory]:
    clients: list[TestClient[Any, Any]] = []

    async def make(app: web.Application) -> TestClient[Any, Any]:
        test_client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
        await test_client.start_server()
        clients.append(test_client)
        return test_client

    yield make
    for test_client in clients:
        await test_client.close()


async def test_route_template_inputs_outputs(client: ClientFactory) -> None:
    c = await client(make_app(service="shop", record_headers=["user-agent", "x-api-key"]))
    with capture_runs() as runs:
        response = await c.get("/items/42?key=k&q=1", headers={"X-Api-Key": "s", "User-Agent": "u"})
        body = await response.read()
    assert response.status == 200
    server = runs.one("GET /items/{item_id}")
    assert server.inputs["path"] == "/items/42"
    assert server.inputs["query"] == "key=[REDACTED]&q=1"
    assert server.inputs["headers"] == {"user-agent": "u", "x-api-key": "[REDACTED]"}
    assert server.inputs["client"] == "127.0.0.1"
    assert server.outputs == {"status_code": 200, "response_size": len(body)}
    assert server.metadata["service"] == "shop"
    assert server.metadata["server.address"].startswith("127.0.0.1:")
    assert runs.one("lookup").parent_run_id == server.id


@pytest.mark.parametrize(
    ("path", "status", "errored"),
    [
        ("/not-found", 404, False),
        ("/redirect", 302, False),
        ("/unavailable", 503, True),
        ("/boom", 500, True),
        ("/no-such-route", 404, False),
    ],
)
async def test_http_exceptions_are_responses(
    client: ClientFactory, path: str, status: int, errored: bool
) -> None:
    c = await client(make_app())
    with capture_runs() as runs:
        response = await c.get(path, allow_redirects=False)
        await response.read()
    assert response.status == status
    (run,) = runs.traced_runs
    assert (run.error is not None) is errored
    if path == "/boom":
        assert run.error is not None
        assert run.error.startswith("ValueError: kaboom")
    if path == "/no-such-route":
        assert run.name == "GET /no-such-route"


async def test_stream_response_ends_at_write_eof(client: ClientFactory) -> None:
    c = await client(make_app())
    with capture_runs() as runs:
        response = await asyncio.wait_for(c.get("/stream"), timeout=10)
        body = await asyncio.wait_for(response.read(), timeout=10)
    assert body == b"chunk" * 5
    run = runs.one("GET /stream")
    assert run.latency is not None
    assert run.latency >= 0.9
    assert run.outputs is not None
    assert run.outputs["status_code"] == 200
    assert run.outputs["response_size"] >= len(body)  # chunked framing counts too


async def test_trace_header_parent_and_sampling(client: ClientFactory) -> None:
    caller = RunTree("caller")
    c = await client(make_app(trace_id_header="x-trace-id", sample_rate=0.0))
    kept = await client(make_app(trace_id_header="x-trace-id"))
    with capture_runs() as runs:
        sampled_out = await c.get("/context")
        assert await sampled_out.json() == {"run": None}
        joined = await kept.get("/items/1", headers=caller.to_headers())
        await joined.read()
    assert "x-trace-id" not in sampled_out.headers
    assert joined.headers["x-trace-id"] == str(caller.trace_id)
    assert runs.one("GET /items/{item_id}").parent_run_id == caller.id


async def test_exclusions(client: ClientFactory) -> None:
    c = await client(make_app(exclude=["/items/*"]))
    with capture_runs() as runs:
        await (await c.get("/items/1")).read()
        await (await c.get("/context")).read()
    assert [r.name for r in runs] == ["GET /context"]


async def test_cleanup_flushes_the_exporter() -> None:
    flushed: list[float | None] = []

    class Exporter(RunCollector):
        def flush(self, timeout: float | None = None) -> bool:
            flushed.append(timeout)
            return True

    set_exporter(Exporter())
    app = make_app(flush_timeout=2.0)
    runner = web.AppRunner(app)
    await runner.setup()
    await runner.cleanup()
    assert flushed == [2.0]


async def test_bare_middleware_factory_and_internal_error_swallowed(
    client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tracestitch.middleware import _exchange

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application(middlewares=[tracing_middleware()])
    app.router.add_get("/", hello)
    c = await client(app)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(_exchange, "finish_run", broken)
    _guard.set_strict(False)
    response = await c.get("/")
    assert response.status == 200
    assert await response.text() == "hello"
    assert _guard.internal_errors().get("middleware.aiohttp.finish", 0) >= 1

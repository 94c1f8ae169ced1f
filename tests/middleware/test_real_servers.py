"""Each middleware under a real server on 127.0.0.1, called with headers made by the real
LangSmith SDK: the server run and its ``@traceable`` child land in the caller's trace."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import langsmith
from aiohttp import web
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from flask import Flask

from servers import run_aiohttp, run_uvicorn, run_wsgi
from tracestitch.context import get_current_run_tree
from tracestitch.export.memory import RunCollector
from tracestitch.middleware.aiohttp import setup_tracing
from tracestitch.middleware.asgi import TracingMiddleware as AsgiTracing
from tracestitch.middleware.wsgi import TracingMiddleware as WsgiTracing
from tracestitch.testing import capture_runs
from tracestitch.tracing import traceable

TIMEOUT = httpx.Timeout(15.0)


@traceable
def fetch(item_id: str) -> dict[str, str]:
    return {"id": item_id}


@traceable(name="fetch")
async def afetch(item_id: str) -> dict[str, str]:
    return {"id": item_id}


def fastapi_app() -> FastAPI:
    app = FastAPI(title="py-api")

    @app.get("/items/{item_id}")
    async def item(item_id: str) -> dict[str, Any]:
        run = get_current_run_tree()
        return {**(await afetch(item_id)), "trace": str(run.trace_id) if run else None}

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(5):
                await asyncio.sleep(0.2)  # the stream's own pacing
                yield b"tick\n"

        return StreamingResponse(chunks())

    app.add_middleware(AsgiTracing)
    return app


def flask_app() -> Any:
    app = Flask("py-flask")

    @app.route("/items/<item_id>")
    def item(item_id: str) -> dict[str, str]:
        return fetch(item_id)

    app.wsgi_app = WsgiTracing(app.wsgi_app)  # type: ignore[method-assign]
    return app


def aiohttp_app() -> web.Application:
    async def item(request: web.Request) -> web.Response:
        return web.json_response(await afetch(request.match_info["item_id"]))

    app = web.Application()
    app.router.add_get("/items/{item_id}", item)
    setup_tracing(app, service="py-aiohttp")
    return app


def _langsmith_caller() -> tuple[langsmith.RunTree, dict[str, str]]:
    caller = langsmith.RunTree(name="caller", run_type="chain", project_name="interop")
    return caller, caller.to_headers()


def _assert_joined(runs: RunCollector, name: str, caller: langsmith.RunTree, service: str) -> None:
    server = runs.one(name)
    child = runs.one("fetch")
    assert server.trace_id == uuid.UUID(str(caller.trace_id))
    assert server.parent_run_id == uuid.UUID(str(caller.id))
    assert server.dotted_order.startswith(caller.dotted_order + ".")
    assert child.trace_id == server.trace_id
    assert child.parent_run_id == server.id
    assert child.dotted_order.startswith(server.dotted_order + ".")
    assert server.metadata["service"] == service
    assert server.session_name == "interop"  # the caller's project travels in baggage
    # Its role and matched route, for OTLP (SERVER, http.route); a child inherits neither.
    assert server.extra is not None and server.extra["span_kind"] == "server"
    assert server.extra["route"] == name.partition(" ")[2]
    assert "span_kind" not in (child.extra or {}) and "route" not in (child.extra or {})


def test_fastapi_under_uvicorn_joins_a_langsmith_trace() -> None:
    caller, headers = _langsmith_caller()
    with capture_runs() as runs, run_uvicorn(fastapi_app()) as url:
        response = httpx.get(f"{url}/items/7", headers=headers, timeout=TIMEOUT)
        assert response.status_code == 200
    _assert_joined(runs, "GET /items/{item_id}", caller, "py-api")


def test_flask_under_werkzeug_joins_a_langsmith_trace() -> None:
    caller, headers = _langsmith_caller()
    with capture_runs() as runs, run_wsgi(flask_app()) as url:
        response = httpx.get(f"{url}/items/7", headers=headers, timeout=TIMEOUT)
        assert response.status_code == 200
    _assert_joined(runs, "GET /items/<item_id>", caller, "py-flask")


def test_aiohttp_under_its_runner_joins_a_langsmith_trace() -> None:
    caller, headers = _langsmith_caller()
    with capture_runs() as runs, run_aiohttp(aiohttp_app()) as url:
        response = httpx.get(f"{url}/items/7", headers=headers, timeout=TIMEOUT)
        assert response.status_code == 200
    _assert_joined(runs, "GET /items/{item_id}", caller, "py-aiohttp")


def test_streamed_response_over_a_socket_lasts_about_a_second() -> None:
    with capture_runs() as runs, run_uvicorn(fastapi_app()) as url:
        started = time.monotonic()
        response = httpx.get(f"{url}/stream", timeout=TIMEOUT)
        elapsed = time.monotonic() - started
    assert response.text == "tick\n" * 5
    run = runs.one("GET /stream")
    assert run.latency is not None
    assert 0.9 <= run.latency <= elapsed


def test_context_isolation_under_100_concurrent_requests() -> None:
    callers = [langsmith.RunTree(name=f"caller-{i}") for i in range(100)]

    async def fire(url: str) -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(timeout=TIMEOUT, limits=limits) as client:
            return await asyncio.wait_for(
                asyncio.gather(
                    *(
                        client.get(f"{url}/items/{i}", headers=c.to_headers())
                        for i, c in enumerate(callers)
                    )
                ),
                timeout=60,
            )

    with capture_runs() as runs, run_uvicorn(fastapi_app()) as url:
        responses = asyncio.run(fire(url))
    for i, (caller, response) in enumerate(zip(callers, responses, strict=True)):
        assert response.status_code == 200
        body = response.json()
        assert body["id"] == str(i)
        assert body["trace"] == str(caller.trace_id)  # the handler saw its own request's run
    servers = runs.named("GET /items/{item_id}")
    assert len(servers) == 100
    by_parent = {s.parent_run_id: s for s in servers}
    for i, caller in enumerate(callers):
        server = by_parent[uuid.UUID(str(caller.id))]
        assert server.inputs["path"] == f"/items/{i}"
        (child,) = runs.children(server)
        assert child.inputs == {"item_id": str(i)}
    assert get_current_run_tree() is None

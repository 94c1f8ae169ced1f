"""Across real services on 127.0.0.1: the three-service chain, LangSmith SDK interop, and many
concurrent calls landing under the right parents."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import httpx
import langsmith
import pytest
import requests
from aiohttp import web
from client_helpers import loopback_port, trace_headers

from run_waits import runs_until
from servers import run_aiohttp, run_uvicorn, run_wsgi
from tracestitch import trace, tracing_context
from tracestitch.clients.aiohttp import trace_config
from tracestitch.clients.httpx import AsyncTracingTransport, TracingTransport
from tracestitch.clients.requests import instrument_session
from tracestitch.export.memory import RunCollector
from tracestitch.schemas import Run
from tracestitch.testing import capture_runs

WAIT = 15.0


def langsmith_app() -> web.Application:
    """A service instrumented only with the real ``langsmith`` SDK: it continues the caller's
    trace from the headers and reports where its run landed."""

    async def handler(request: web.Request) -> web.Response:
        parent = langsmith.RunTree.from_headers(request.headers)
        if parent is None:
            return web.json_response({"parent": None})
        child = parent.create_child(name="langsmith-service", run_type="chain")
        return web.json_response(
            {
                "trace_id": str(child.trace_id),
                "parent_run_id": str(child.parent_run_id),
                "dotted_order": child.dotted_order,
                "received": trace_headers({"headers": dict(request.headers)}),
            }
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


@pytest.fixture(scope="module")
def langsmith_url() -> Iterator[str]:
    with run_aiohttp(langsmith_app()) as url:
        yield url


def _client_run(runs: RunCollector, method: str, url: str) -> Run:
    matches = [r for r in runs if r.name.startswith(f"{method} 127.0.0.1:{loopback_port(url)}/")]
    assert len(matches) == 1, [r.name for r in runs]
    return matches[0]


# ---------------------------------------------------------------------------------------------
# Interop with the LangSmith SDK, for each client library
# ---------------------------------------------------------------------------------------------


async def _call_with(kind: str, url: str) -> dict[str, Any]:
    if kind == "httpx":

        def sync_call() -> dict[str, Any]:
            with httpx.Client(transport=TracingTransport()) as client:
                return dict(client.get(url).json())

        return await asyncio.to_thread(sync_call)  # to_thread carries the context over
    if kind == "httpx-async":
        async with httpx.AsyncClient(transport=AsyncTracingTransport()) as client:
            return dict((await client.get(url)).json())
    if kind == "aiohttp":
        async with (
            aiohttp.ClientSession(trace_configs=[trace_config()]) as session,
            session.get(url) as response,
        ):
            return dict(await response.json())
    session = instrument_session(requests.Session())
    return await asyncio.to_thread(lambda: dict(session.get(url).json()))


@pytest.mark.parametrize("kind", ["httpx", "httpx-async", "aiohttp", "requests"])
async def test_langsmith_sdk_service_continues_our_trace(kind: str, langsmith_url: str) -> None:
    with capture_runs() as runs, trace("caller", metadata={"tenant": "acme"}):
        body = await _call_with(kind, f"{langsmith_url}/work")
    call = _client_run(runs, "GET", langsmith_url)
    assert body["trace_id"] == str(call.trace_id)
    assert body["parent_run_id"] == str(call.id)
    assert body["dotted_order"].startswith(call.dotted_order + ".")
    assert "langsmith-metadata=" in body["received"]["baggage"]


# ---------------------------------------------------------------------------------------------
# The three-service chain
# ---------------------------------------------------------------------------------------------


def flask_service(downstream: str) -> Any:
    from flask import Flask, jsonify

    from tracestitch.middleware.wsgi import TracingMiddleware

    app = Flask("service-c")
    session = instrument_session(requests.Session())

    @app.get("/c")
    def c() -> Any:
        return jsonify(session.get(f"{downstream}/d").json())

    app.wsgi_app = TracingMiddleware(app.wsgi_app, service="service-c")  # type: ignore[method-assign]
    return app


def aiohttp_service(downstream: str) -> web.Application:
    from tracestitch.middleware.aiohttp import tracing_middleware

    async def b(request: web.Request) -> web.Response:
        async with (
            aiohttp.ClientSession(trace_configs=[trace_config()]) as session,
            session.get(f"{downstream}/c") as response,
        ):
            return web.json_response(await response.json())

    app = web.Application(middlewares=[tracing_middleware(service="service-b")])
    app.router.add_get("/b", b)
    return app


def fastapi_service(downstream: str) -> Any:
    from fastapi import FastAPI

    from tracestitch.middleware.asgi import TracingMiddleware

    app = FastAPI(title="service-a")

    @app.get("/a/{item_id}")
    async def a(item_id: int) -> Any:
        async with httpx.AsyncClient(transport=AsyncTracingTransport()) as client:
            return (await client.get(f"{downstream}/b")).json()

    app.add_middleware(TracingMiddleware, service="service-a")
    return app


def test_three_service_chain_is_one_tree(langsmith_url: str) -> None:
    with (
        run_wsgi(flask_service(langsmith_url)) as c_url,
        run_aiohttp(aiohttp_service(c_url)) as b_url,
        run_uvicorn(fastapi_service(b_url)) as a_url,
        # A server, A->B client, B server, B->C client, C server, C->D client.
        runs_until(6) as (runs, done),
    ):
        body = httpx.get(f"{a_url}/a/7", timeout=WAIT).json()
        assert done.wait(WAIT), [r.name for r in runs]

    a_client = _client_run(runs, "GET", b_url)
    b_client = _client_run(runs, "GET", c_url)
    c_client = _client_run(runs, "GET", langsmith_url)
    (a_server,) = [r for r in runs if r.parent_run_id is None]
    (b_server,) = runs.children(a_client)
    (c_server,) = runs.children(b_client)
    chain = [a_server, a_client, b_server, b_client, c_server, c_client]

    assert len(runs) == len(chain)
    assert {r.trace_id for r in runs} == {a_server.id}
    for parent, child in itertools.pairwise(chain):
        assert child.parent_run_id == parent.id, (parent.name, child.name)
        assert child.dotted_order.startswith(parent.dotted_order + "."), child.name
    assert a_server.name == "GET /a/{item_id}"
    assert b_server.name == "GET /b"
    assert runs.children(a_server) == [a_client]
    assert runs.children(b_server) == [b_client]
    assert runs.children(c_server) == [c_client]
    # Causal order is dotted order: sorting the trace gives the chain back.
    assert [r.id for r in runs.trace(a_server.trace_id)] == [r.id for r in chain]
    # The fourth hop (LangSmith SDK only) hangs under C's client run.
    assert body["trace_id"] == str(a_server.trace_id)
    assert body["parent_run_id"] == str(c_client.id)


# ---------------------------------------------------------------------------------------------
# Concurrency
# ---------------------------------------------------------------------------------------------


async def test_concurrent_calls_land_under_the_right_parent(echo_url: str) -> None:
    """50 concurrent requests into a service, each making 4 concurrent calls out (200 in
    flight), half with httpx and half with aiohttp: every call is a child of its own request's
    run, and the downstream saw that call's own headers."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def fan_out(request: Request) -> JSONResponse:
        with tracing_context(parent=request.headers), trace("fan-out") as run:
            assert run is not None
            tag = request.query_params["i"]
            async with (
                # 200 connects at once can overflow the listen backlog on a busy machine; the
                # kernel retries a dropped SYN after 1 s, 3 s..., so allow more than httpx's 5 s.
                httpx.AsyncClient(transport=AsyncTracingTransport(), timeout=WAIT) as client,
                aiohttp.ClientSession(trace_configs=[trace_config()]) as session,
            ):

                async def via_aiohttp(j: int) -> Any:
                    async with session.get(f"{echo_url}/r{tag}/aiohttp{j}") as response:
                        return await response.json()

                async def via_httpx(j: int) -> Any:
                    return (await client.get(f"{echo_url}/r{tag}/httpx{j}")).json()

                bodies = await asyncio.gather(
                    via_httpx(0), via_httpx(1), via_aiohttp(0), via_aiohttp(1)
                )
            return JSONResponse({"run": str(run.id), "bodies": bodies})

    app = Starlette(routes=[Route("/fan", fan_out)])
    with run_uvicorn(app) as url, runs_until(50 * 5) as (runs, done):
        async with httpx.AsyncClient(transport=AsyncTracingTransport(), timeout=WAIT) as client:

            async def one(i: int) -> Any:
                with trace(f"request-{i}"):
                    return (await client.get(f"{url}/fan", params={"i": i})).json()

            results = await asyncio.gather(*(one(i) for i in range(50)))
        assert done.wait(WAIT)

    by_id = {r.id: r for r in runs}
    calls = 0
    for i, result in enumerate(results):
        fan = by_id[uuid.UUID(result["run"])]
        # The fan-out run's parent is this request's client run, under request-i.
        assert by_id[fan.parent_run_id].parent_run_id == runs.one(f"request-{i}").id  # type: ignore[index]
        children = runs.children(fan)
        assert len(children) == 4
        for body in result["bodies"]:
            (child,) = [c for c in children if c.inputs["url"].endswith(body["path"])]
            assert body["path"].startswith(f"/r{i}/")
            assert trace_headers(body)["langsmith-trace"] == child.dotted_order
            calls += 1
    assert calls == 200

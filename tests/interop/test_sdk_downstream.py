"""A service instrumented with the LangSmith Python SDK behind a tracestitch service: the user's
metadata reaches its runs, the tracestitch service's own facts (its name, its address) do not,
so the collector files the SDK's runs under the SDK service, not under the caller."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from interop_helpers import API_KEY, Collector, clean_env, service_process
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import tracestitch
from servers import run_uvicorn
from tracestitch.clients.httpx import AsyncTracingTransport
from tracestitch.middleware.asgi import TracingMiddleware

HERE = Path(__file__).resolve().parent


@contextmanager
def _sdk_service(collector: Collector) -> Iterator[str]:
    env = clean_env(
        LANGSMITH_TRACING="true",
        LANGSMITH_ENDPOINT=collector.url,
        LANGSMITH_API_KEY=API_KEY,
        LANGSMITH_PROJECT="sdk-proj",
    )
    with service_process([sys.executable, str(HERE / "sdk_service.py")], env) as url:
        yield url


def _tracestitch_service() -> Starlette:
    async def start(request: Request) -> JSONResponse:
        with tracestitch.tracing_context(metadata={"tenant": "acme corp"}):
            async with httpx.AsyncClient(transport=AsyncTracingTransport()) as client:
                reply = await client.get(request.query_params["down"] + "/work")
        return JSONResponse(reply.json())

    return Starlette(
        routes=[Route("/start", start)],
        middleware=[Middleware(TracingMiddleware, service="ts-front", metadata={"team": "core"})],
    )


def test_service_facts_stay_home_and_user_metadata_travels(collector: Collector) -> None:
    exporter = tracestitch.configure(
        endpoint=collector.url, api_key=API_KEY, spool_dir=None, flush_interval=0.05
    )
    try:
        with (
            _sdk_service(collector) as down_url,
            run_uvicorn(_tracestitch_service()) as front_url,
        ):
            reply = httpx.get(f"{front_url}/start", params={"down": down_url}, timeout=30)
            assert reply.json() == {"ok": "yes"}
            httpx.get(down_url + "/flush", timeout=30).raise_for_status()
        assert exporter.flush(10)
    finally:
        exporter.shutdown(5)
    by_name = collector.wait_for({"GET /start", "sdk-handler"})
    front, handler = by_name["GET /start"], by_name["sdk-handler"]
    assert handler["trace_id"] == front["trace_id"]
    meta = handler["extra"]["metadata"]
    # The user's metadata (the middleware's metadata= and the handler's) travelled ...
    assert meta["tenant"] == "acme corp" and meta["team"] == "core"
    # ... this service's facts did not: the SDK's run names no service, so the collector shows
    # none (neither the caller's nor its project), files it under its project (the caller's,
    # which the SDK follows), and the caller's address stayed home.
    assert "service" not in meta and "server.address" not in meta
    assert front["service"] == "ts-front"
    assert handler["service"] is None
    assert handler["project"] == front["project"]
    assert front["extra"]["metadata"]["server.address"].startswith("127.0.0.1:")

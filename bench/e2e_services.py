"""The two services of the end-to-end bench (``bench_e2e.py``), one per subprocess.

Service B answers a small JSON body at ``/items/{id}``; service A answers ``/a/{id}`` by calling
B once with its server's usual client. Three server shapes, each with the same modes:

* ``asgi``: Starlette under uvicorn, A calls B with an ``httpx.AsyncClient``;
* ``wsgi``: Flask under werkzeug's threaded server (what the tests use), A calls B with a
  ``requests.Session`` shared by the request threads;
* ``aiohttp``: two ``aiohttp.web`` applications, A calls B with an ``aiohttp.ClientSession``.

Modes: ``untraced``; ``tracestitch`` (its middleware on both and its client hook in A: three
runs per request); ``ts-server-only`` (the middleware without the client hook: splits the
cost); ``otel`` (OpenTelemetry's instrumentation for that server and that client, SDK with a
``BatchSpanProcessor`` and a no-op exporter); ``langsmith`` (ASGI only: its ``TracingMiddleware``
on both, a ``@traceable`` run for each handler and one around the call to B, whose headers A adds
itself since the SDK has no client hook: three runs per request). Exporters keep serialization
and drop the bytes: tracestitch's real ``BatchExporter`` into ``DiscardSink``; LangSmith's real
``Client`` whose session answers 200 without a network.

Every service also answers ``/health`` and ``/flush`` (untraced): ``/flush`` returns once the
exporter has handed on everything it was given (so all-thread CPU read after it includes the
export work of the round) with the number of records handed on so far.

    python bench/e2e_services.py SERVER MODE ROLE PORT [DOWNSTREAM_URL]
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import install_real_exporter

SERVERS = {
    "asgi": ("untraced", "tracestitch", "ts-server-only", "otel", "langsmith"),
    "wsgi": ("untraced", "tracestitch", "ts-server-only", "otel"),
    "aiohttp": ("untraced", "tracestitch", "ts-server-only", "otel"),
}
#: What each peer's mode imports, per server (a mode whose modules are missing is skipped).
PEER_MODULES = {
    ("asgi", "otel"): ("opentelemetry.instrumentation.asgi", "opentelemetry.instrumentation.httpx"),
    ("wsgi", "otel"): (
        "opentelemetry.instrumentation.wsgi",
        "opentelemetry.instrumentation.requests",
    ),
    ("aiohttp", "otel"): (
        "opentelemetry.instrumentation.aiohttp_server",
        "opentelemetry.instrumentation.aiohttp_client",
    ),
    ("asgi", "langsmith"): ("langsmith",),
}
POOL = 32  # connections A keeps to B: the load's concurrency
#: Seconds a server keeps an idle connection: longer than a round of the other pairs, so A never
#: reuses a connection B has just closed (uvicorn's default is 5 s).
KEEP_ALIVE = 3600
UNTRACED = ["/health", "/flush"]
_INFO = (
    b'{"batch_ingest_config": {"use_multipart_endpoint": true, "size_limit": 100,'
    b' "size_limit_bytes": 20971520, "scale_up_qsize_trigger": 1000,'
    b' "scale_up_nthreads_limit": 16, "scale_down_nempty_trigger": 4}}'
)


def missing(server: str, mode: str) -> list[str]:
    """The modules ``mode`` needs under ``server`` that are not installed."""
    import importlib.util

    needed = PEER_MODULES.get((server, mode), ())
    return [name for name in needed if importlib.util.find_spec(name) is None]


def _otel_provider() -> Any:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class NullExporter(SpanExporter):
        spans = 0

        def export(self, spans: Any) -> SpanExportResult:
            NullExporter.spans += len(spans)
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(NullExporter(), max_queue_size=100_000))
    return provider, NullExporter


def _langsmith_client() -> Any:
    """LangSmith's real ``Client`` (background batching, serialization) whose session reads
    each body and answers 200 without a network."""
    import logging

    import langsmith
    import requests

    class NoNetwork(requests.Session):
        def send(self, request: Any, **kwargs: Any) -> requests.Response:
            body = request.body
            if body is not None and not isinstance(body, (bytes, str)):
                for _ in body:  # a streamed body is produced as if sent
                    pass
            response = requests.Response()
            response.status_code = 200
            response._content = _INFO
            response.headers["content-type"] = "application/json"
            response.request = request
            response.url = request.url or ""
            return response

    class CountingClient(langsmith.Client):
        runs_created = 0

        def create_run(self, *args: Any, **kwargs: Any) -> Any:
            CountingClient.runs_created += 1
            return super().create_run(*args, **kwargs)

    logging.getLogger("langsmith").setLevel(logging.CRITICAL)
    client = CountingClient(
        api_url="http://langsmith.invalid", api_key="bench", session=NoNetwork()
    )
    langsmith.configure(client=client)
    return client


class Tracing:
    """What one mode installs in a service process, and how its exporter is flushed."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.provider: Any = None
        self.client: Any = None
        self.exporter: Any = None
        if mode in ("tracestitch", "ts-server-only"):
            self.exporter = install_real_exporter()
        elif mode == "otel":
            self.provider, self.spans = _otel_provider()
        elif mode == "langsmith":
            os.environ["LANGSMITH_TRACING"] = "true"
            self.client = _langsmith_client()

    def flush(self) -> int:
        """Hand on everything recorded so far; how many records (tracestitch's operations,
        OpenTelemetry's spans, LangSmith's runs created) were handed on since the start."""
        if self.exporter is not None:
            self.exporter.flush(30)
            return int(self.exporter.sink.ops)
        if self.provider is not None:
            self.provider.force_flush(30_000)
            return int(self.spans.spans)
        if self.client is not None:
            self.client.flush()
            return int(self.client.runs_created)
        return 0

    @property
    def client_hook(self) -> bool:
        return self.mode in ("tracestitch", "otel")


# ---------------------------------------------------------------------------------------------
# ASGI: Starlette under uvicorn, httpx
# ---------------------------------------------------------------------------------------------


def _asgi(tracing: Tracing, role: str, downstream: str) -> Any:
    import httpx
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route

    mode = tracing.mode
    client: httpx.AsyncClient | None = None

    def make_client() -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=POOL, max_keepalive_connections=POOL)
        transport: httpx.AsyncBaseTransport = httpx.AsyncHTTPTransport(limits=limits)
        if mode == "tracestitch":
            from tracestitch.clients.httpx import AsyncTracingTransport

            transport = AsyncTracingTransport(transport)
        elif mode == "otel":
            from opentelemetry.instrumentation.httpx import AsyncOpenTelemetryTransport

            transport = AsyncOpenTelemetryTransport(transport, tracer_provider=tracing.provider)
        return httpx.AsyncClient(transport=transport, timeout=30)

    async def call_b(item: str) -> Any:
        nonlocal client
        client = client or make_client()
        response = await client.get(f"{downstream}/items/{item}")
        return response.json()

    async def serve_b(item: str) -> dict[str, Any]:
        return {"item": item, "ok": True}

    if mode == "langsmith":
        from langsmith import get_current_run_tree, traceable

        async def call_b_ls(item: str) -> Any:
            nonlocal client
            client = client or make_client()
            headers = get_current_run_tree().to_headers()  # type: ignore[union-attr]
            response = await client.get(f"{downstream}/items/{item}", headers=headers)
            return response.json()

        call_b = traceable(name="GET service-b", run_type="tool")(call_b_ls)
        serve_b = traceable(name="GET /items/{item_id}")(serve_b)

    async def handle_a(item: str) -> dict[str, Any]:
        return {"from_b": await call_b(item)}

    if mode == "langsmith":
        handle_a = traceable(name="GET /a/{item_id}")(handle_a)

    async def a(request: Request) -> JSONResponse:
        return JSONResponse(await handle_a(request.path_params["item_id"]))

    async def b(request: Request) -> JSONResponse:
        return JSONResponse(await serve_b(request.path_params["item_id"]))

    async def health(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    async def flush(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(tracing.flush()))

    route = Route("/a/{item_id}", a) if role == "a" else Route("/items/{item_id}", b)
    app: Any = Starlette(routes=[Route("/health", health), Route("/flush", flush), route])
    if mode in ("tracestitch", "ts-server-only"):
        from tracestitch.middleware.asgi import TracingMiddleware

        app = TracingMiddleware(app, service=f"service-{role}", exclude=UNTRACED)
    elif mode == "otel":
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        app = OpenTelemetryMiddleware(
            app, tracer_provider=tracing.provider, excluded_urls="health,flush"
        )
    elif mode == "langsmith":
        from langsmith.middleware import TracingMiddleware as LangSmithMiddleware

        app = LangSmithMiddleware(app)
    return app


def _serve_asgi(app: Any, port: int) -> None:
    import uvicorn

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=KEEP_ALIVE,
    )


# ---------------------------------------------------------------------------------------------
# WSGI: Flask under werkzeug's threaded server, requests
# ---------------------------------------------------------------------------------------------


def _wsgi(tracing: Tracing, role: str, downstream: str) -> Any:
    import requests
    from flask import Flask, jsonify
    from requests.adapters import HTTPAdapter

    mode = tracing.mode
    session = requests.Session()
    adapter: HTTPAdapter = HTTPAdapter(pool_connections=1, pool_maxsize=POOL)
    if mode == "tracestitch":
        from tracestitch.clients.requests import TracingAdapter

        adapter = TracingAdapter(pool_connections=1, pool_maxsize=POOL)
    elif mode == "otel":
        from opentelemetry.instrumentation.requests import RequestsInstrumentor

        RequestsInstrumentor().instrument(tracer_provider=tracing.provider)
    session.mount("http://", adapter)

    flask_app = Flask(f"service-{role}")

    @flask_app.get("/health")
    def health() -> str:
        return "ok"

    @flask_app.get("/flush")
    def flush() -> str:
        return str(tracing.flush())

    if role == "a":

        @flask_app.get("/a/<item_id>")
        def a(item_id: str) -> Any:
            response = session.get(f"{downstream}/items/{item_id}", timeout=30)
            return jsonify({"from_b": response.json()})

    else:

        @flask_app.get("/items/<item_id>")
        def b(item_id: str) -> Any:
            return jsonify({"item": item_id, "ok": True})

    if mode in ("tracestitch", "ts-server-only"):
        from tracestitch.middleware.wsgi import TracingMiddleware

        flask_app.wsgi_app = TracingMiddleware(  # type: ignore[method-assign]
            flask_app.wsgi_app, service=f"service-{role}", exclude=UNTRACED
        )
    elif mode == "otel":
        from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware

        traced = OpenTelemetryMiddleware(flask_app.wsgi_app, tracer_provider=tracing.provider)
        plain = flask_app.wsgi_app

        def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            # OpenTelemetry's WSGI middleware has no excluded-URL option of its own.
            inner = plain if environ.get("PATH_INFO") in UNTRACED else traced
            return inner(environ, start_response)

        flask_app.wsgi_app = wsgi_app  # type: ignore[method-assign]
    return flask_app


def _serve_wsgi(app: Any, port: int) -> None:
    import logging

    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log
    make_server("127.0.0.1", port, app, threaded=True).serve_forever()


# ---------------------------------------------------------------------------------------------
# aiohttp: aiohttp.web, aiohttp's client
# ---------------------------------------------------------------------------------------------


def _aiohttp(tracing: Tracing, role: str, downstream: str) -> Any:
    import aiohttp
    from aiohttp import web

    mode = tracing.mode
    middlewares: list[Any] = []
    trace_configs: list[Any] = []
    if mode in ("tracestitch", "ts-server-only"):
        from tracestitch.middleware.aiohttp import tracing_middleware

        middlewares.append(tracing_middleware(service=f"service-{role}", exclude=UNTRACED))
        if mode == "tracestitch":
            from tracestitch.clients.aiohttp import trace_config

            trace_configs.append(trace_config())
    elif mode == "otel":
        from opentelemetry.instrumentation.aiohttp_client import create_trace_config
        from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor

        # The server instrumentor replaces web.Application with one that adds its middleware;
        # it reads the excluded URLs when instrumenting.
        os.environ["OTEL_PYTHON_AIOHTTP_SERVER_EXCLUDED_URLS"] = "health,flush"
        AioHttpServerInstrumentor().instrument(tracer_provider=tracing.provider)
        trace_configs.append(create_trace_config(tracer_provider=tracing.provider))

    app = web.Application(middlewares=middlewares)
    session_key = web.AppKey("session", aiohttp.ClientSession)

    async def start_session(app: web.Application) -> None:
        connector = aiohttp.TCPConnector(limit=POOL)
        app[session_key] = aiohttp.ClientSession(connector=connector, trace_configs=trace_configs)

    async def close_session(app: web.Application) -> None:
        await app[session_key].close()

    async def a(request: web.Request) -> web.Response:
        item = request.match_info["item_id"]
        async with request.app[session_key].get(f"{downstream}/items/{item}") as response:
            body = await response.json()
        return web.json_response({"from_b": body})

    async def b(request: web.Request) -> web.Response:
        return web.json_response({"item": request.match_info["item_id"], "ok": True})

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def flush(request: web.Request) -> web.Response:
        return web.Response(text=str(tracing.flush()))

    app.router.add_get("/health", health)
    app.router.add_get("/flush", flush)
    if role == "a":
        app.router.add_get("/a/{item_id}", a)
        app.on_startup.append(start_session)
        app.on_cleanup.append(close_session)
    else:
        app.router.add_get("/items/{item_id}", b)
    return app


def _serve_aiohttp(app: Any, port: int) -> None:
    from aiohttp import web

    web.run_app(
        app,
        host="127.0.0.1",
        port=port,
        print=None,
        access_log=None,
        keepalive_timeout=KEEP_ALIVE,
    )


BUILD = {"asgi": _asgi, "wsgi": _wsgi, "aiohttp": _aiohttp}
SERVE = {"asgi": _serve_asgi, "wsgi": _serve_wsgi, "aiohttp": _serve_aiohttp}


def _profiled(path: str) -> Callable[[], None]:
    """cProfile every thread of this process from now on (one profiler per thread, started by
    the thread's first call, timing the thread's CPU: waits and a busy machine's preemption
    do not count); returns what writes their merged stats to ``path``."""
    import cProfile
    import pstats
    import threading
    import time

    profilers = [cProfile.Profile(time.thread_time)]

    def start_in_thread(frame: Any, event: str, arg: Any) -> None:
        sys.setprofile(None)
        profiler = cProfile.Profile(time.thread_time)
        profilers.append(profiler)
        profiler.enable()

    threading.setprofile(start_in_thread)
    profilers[0].enable()

    def dump() -> None:
        stats = pstats.Stats(profilers[0])
        for profiler in profilers[1:]:
            stats.add(profiler)
        stats.dump_stats(path)

    return dump


def serve(server: str, mode: str, role: str, port: int, downstream: str) -> None:
    """Build the ``role`` service of ``server`` in ``mode`` and serve it on ``port``; with
    ``E2E_PROFILE`` set, profile it (all threads) and write the stats there on SIGTERM."""
    import signal

    profile = os.environ.get("E2E_PROFILE")
    dump = _profiled(profile) if profile else None
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))  # servers may override
    try:
        app = BUILD[server](Tracing(mode), role, downstream)
        SERVE[server](app, port)
    finally:
        if dump is not None:
            dump()


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), "".join(sys.argv[5:6]))

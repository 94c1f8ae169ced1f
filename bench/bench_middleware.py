"""Server middleware overhead: tracestitch against the bare app and the peers.

Two in-process harnesses, each a minimal route driven by calling the app directly (no sockets,
so only the middleware's own cost shows):

* ASGI: a Starlette route, called as ``await app(scope, receive, send)``. Variants: bare;
  tracestitch (server run + one ``@traceable`` child, exporter on, sending to an in-process
  sink); the floor (``floor.py``: the same two runs and wire fields done plainly, the reference
  tracestitch is measured against); OpenTelemetry's ASGI middleware + one child span, in-memory
  span exporter; LangSmith's ``TracingMiddleware`` + async ``@traceable`` with its client
  stubbed (nothing leaves the process). The handler answers ``hello`` (5 bytes of text) or,
  with ``handler="json5k"``, a ~5 KB JSON body.
* WSGI: a Flask route, called as a WSGI app. Variants: bare; tracestitch; OpenTelemetry's WSGI
  middleware + one child span.

CPU is all-thread process CPU (``time.process_time``), so work an exporter does on a background
thread is counted. Rounds are interleaved so drift on a shared machine hits every variant alike;
the best round is reported. Peak-RSS growth is measured per variant in a fresh subprocess
(``ru_maxrss`` after N requests minus after a warm-up).

    python bench/bench_middleware.py          # full: 20,000 requests x 5 rounds
    python bench/bench_middleware.py --quick  # a smoke run
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import floor
from common import DiscardSink, asgi_scope, install_real_exporter

from tracestitch.exporter import get_exporter

# LangSmith's @traceable only traces when its tracing switch is on; its client is stubbed below.
os.environ.setdefault("LANGSMITH_TRACING", "true")
os.environ.setdefault("LANGSMITH_API_KEY", "bench-not-used")

FULL_REQUESTS = 20_000
FULL_ROUNDS = 5
QUICK_REQUESTS = 2_000
QUICK_ROUNDS = 2

_HEADERS = [
    (b"host", b"127.0.0.1:8000"),
    (b"user-agent", b"bench/1.0"),
    (b"accept", b"*/*"),
    (b"accept-encoding", b"gzip, deflate"),
]


class SinkExporter:
    """A background exporter delivering to an in-process sink: tracestitch's real one (see
    ``common.install_real_exporter``), or what ``make`` installs (the floor's); installed on
    first use, flushed (drained) after."""

    def __init__(self, make: Callable[[], Any] = install_real_exporter) -> None:
        self.make = make
        self.exporter: Any = None

    def install(self) -> None:
        if self.exporter is None:
            self.exporter = self.make()
        else:
            self.exporter.flush(30)


def flush_exporters(timeout: float = 30) -> None:
    """Wait until every exporter's worker has serialized and delivered what it was given
    (tracestitch's and the floor's): their CPU is part of each request's."""
    get_exporter().flush(timeout)
    floor_exporter = floor.exporter()
    if floor_exporter is not None:
        floor_exporter.flush(timeout)


class _StubLangSmithClient:
    """Accepts every call LangSmith's run tree makes and drops it."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        def noop(*args: Any, **kwargs: Any) -> None:
            return None

        return noop


# ---------------------------------------------------------------------------------------------
# ASGI
# ---------------------------------------------------------------------------------------------


async def _work(x: int) -> int:
    return x + 1


#: The ~5 KB JSON document the ``json5k`` handler answers with (47 catalogue items: 5,044 bytes).
JSON_5K = {
    "items": [
        {
            "id": i,
            "sku": f"SKU-{i:06d}",
            "name": f"Item number {i}",
            "price": round(9.99 + i * 0.5, 2),
            "in_stock": i % 3 != 0,
            "tags": ["bench", "json"],
        }
        for i in range(47)
    ],
    "page": 1,
}
HANDLERS = ("hello", "json5k")


def _asgi_app(variant: str, handler: str = "hello") -> tuple[Any, Callable[[], None]]:
    """(app, per-round reset) for one variant; ``handler``: see :data:`HANDLERS`."""
    from starlette.applications import Starlette
    from starlette.routing import Route

    reset: Callable[[], None] = lambda: None  # noqa: E731
    respond = _responder(handler)

    if variant == "bare":

        async def endpoint(request: Any) -> Any:
            await _work(1)
            return respond()

        return Starlette(routes=[Route("/items/{item_id}", endpoint)]), reset

    if variant == "tracestitch":
        from tracestitch.middleware.asgi import TracingMiddleware
        from tracestitch.tracing import traceable

        sink = SinkExporter()
        child = traceable(name="work")(_work)

        async def ts_endpoint(request: Any) -> Any:
            await child(1)
            return respond()

        app = Starlette(routes=[Route("/items/{item_id}", ts_endpoint)])
        app.add_middleware(TracingMiddleware, service="bench")
        return app, sink.install

    if variant == "floor":
        floor_sink = SinkExporter(lambda: floor.install(DiscardSink()))
        floor_child = floor.traceable(name="work")(_work)

        async def floor_endpoint(request: Any) -> Any:
            await floor_child(1)
            return respond()

        app = Starlette(routes=[Route("/items/{item_id}", floor_endpoint)])
        app.add_middleware(floor.FloorMiddleware, service="bench")
        return app, floor_sink.install

    if variant == "opentelemetry":
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = provider.get_tracer("bench")

        async def otel_endpoint(request: Any) -> Any:
            with tracer.start_as_current_span("work"):
                await _work(1)
            return respond()

        app = Starlette(routes=[Route("/items/{item_id}", otel_endpoint)])
        app.add_middleware(OpenTelemetryMiddleware, tracer_provider=provider)
        return app, exporter.clear

    if variant == "langsmith":
        import langsmith
        from langsmith import traceable as ls_traceable
        from langsmith.middleware import TracingMiddleware as LangSmithMiddleware

        client = _StubLangSmithClient()
        # The process-wide client too: a run under a caller's (langsmith-trace) takes the
        # global one, not the decorator's, and the real one would try the network.
        langsmith.configure(client=client)  # type: ignore[arg-type]
        ls_child = ls_traceable(name="work", client=client)(_work)  # type: ignore[call-overload]

        async def ls_endpoint(request: Any) -> Any:
            await ls_child(1)
            return respond()

        app = Starlette(routes=[Route("/items/{item_id}", ls_endpoint)])
        app.add_middleware(LangSmithMiddleware)
        return app, reset

    raise ValueError(variant)


def _responder(handler: str) -> Callable[[], Any]:
    """The handler's response, made anew per request as an app makes it."""
    from starlette.responses import JSONResponse, PlainTextResponse

    if handler == "hello":
        return lambda: PlainTextResponse("hello")
    if handler == "json5k":
        return lambda: JSONResponse(JSON_5K)
    raise ValueError(handler)


def _asgi_driver(app: Any) -> Callable[[int], None]:
    base = asgi_scope(_HEADERS)
    request_message = {"type": "http.request", "body": b"", "more_body": False}

    async def receive() -> dict[str, Any]:
        return request_message

    async def send(message: Any) -> None:
        return None

    async def many(n: int) -> None:
        for _ in range(n):
            await app(dict(base), receive, send)

    loop = asyncio.new_event_loop()

    def drive(n: int) -> None:
        loop.run_until_complete(many(n))

    return drive


# ---------------------------------------------------------------------------------------------
# WSGI
# ---------------------------------------------------------------------------------------------


def _wsgi_app(variant: str) -> tuple[Any, Callable[[], None]]:
    from flask import Flask

    def work(x: int) -> int:
        return x + 1

    flask_app = Flask("bench")
    reset: Callable[[], None] = lambda: None  # noqa: E731

    if variant == "bare":

        @flask_app.route("/items/<item_id>")
        def endpoint(item_id: str) -> str:
            work(1)
            return "hello"

        return flask_app, reset

    if variant == "tracestitch":
        from tracestitch.middleware.wsgi import TracingMiddleware
        from tracestitch.tracing import traceable

        sink = SinkExporter()
        child = traceable(name="work")(work)

        @flask_app.route("/items/<item_id>")
        def ts_endpoint(item_id: str) -> str:
            child(1)
            return "hello"

        return TracingMiddleware(flask_app, service="bench"), sink.install

    if variant == "opentelemetry":
        from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = provider.get_tracer("bench")

        @flask_app.route("/items/<item_id>")
        def otel_endpoint(item_id: str) -> str:
            with tracer.start_as_current_span("work"):
                work(1)
            return "hello"

        return OpenTelemetryMiddleware(flask_app, tracer_provider=provider), exporter.clear

    raise ValueError(variant)


def _wsgi_driver(app: Any) -> Callable[[int], None]:
    import io

    base = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/items/42",
        "QUERY_STRING": "q=1",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_USER_AGENT": "bench/1.0",
        "HTTP_ACCEPT": "*/*",
        "HTTP_ACCEPT_ENCODING": "gzip, deflate",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        return None

    def drive(n: int) -> None:
        for _ in range(n):
            environ = dict(base)
            environ["wsgi.input"] = io.BytesIO(b"")
            result = app(environ, start_response)
            try:
                for _chunk in result:
                    pass
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()

    return drive


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------

HARNESSES: dict[str, tuple[Callable[[str], tuple[Any, Callable[[], None]]], Any, list[str]]] = {
    "asgi": (
        _asgi_app,
        _asgi_driver,
        ["bare", "floor", "tracestitch", "opentelemetry", "langsmith"],
    ),
    "wsgi": (_wsgi_app, _wsgi_driver, ["bare", "tracestitch", "opentelemetry"]),
}


def _measure(
    drive: Callable[[int], None], reset: Callable[[], None], n: int
) -> tuple[float, float]:
    reset()
    gc.collect()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    drive(n)
    # The exporter's worker serializes on its own thread: wait for it inside the timed window,
    # so all-thread CPU includes the export work (a no-op for the variants without it).
    flush_exporters(30)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return wall / n * 1e6, cpu / n * 1e6


def _rss_growth(harness: str, variant: str, n: int) -> float | None:
    """Peak RSS growth (MiB) over ``n`` requests, in a fresh interpreter."""
    cmd = [sys.executable, __file__, "--rss", harness, variant, str(n)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True)
        return float(json.loads(out.stdout.strip().splitlines()[-1])["rss_growth_mib"])
    except (subprocess.SubprocessError, ValueError, KeyError, IndexError):
        return None


def _rss_child(harness: str, variant: str, n: int) -> None:
    make_app, make_driver, _ = HARNESSES[harness]
    app, reset = make_app(variant)
    drive = make_driver(app)
    reset()
    drive(min(n, 1000))  # warm-up: imports, caches, first allocations
    reset()
    gc.collect()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(n // 1000):
        drive(1000)
        reset()  # the sink/exporter is drained as a real one would be
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"rss_growth_mib": (after - before) / 1024}))


def run(quick: bool) -> list[dict[str, Any]]:
    """One row per (harness, variant): µs/request, CPU µs/request, x bare, RSS growth."""
    n = QUICK_REQUESTS if quick else FULL_REQUESTS
    rounds = QUICK_ROUNDS if quick else FULL_ROUNDS
    rows: list[dict[str, Any]] = []
    for harness, (make_app, make_driver, variants) in HARNESSES.items():
        drivers: dict[str, tuple[Callable[[int], None], Callable[[], None]]] = {}
        for variant in variants:
            app, reset = make_app(variant)
            drivers[variant] = (make_driver(app), reset)
        best: dict[str, tuple[float, float]] = {}
        for _ in range(rounds):
            for variant in variants:
                drive, reset = drivers[variant]
                wall, cpu = _measure(drive, reset, n)
                prev = best.get(variant)
                best[variant] = (
                    (wall, cpu) if prev is None else (min(prev[0], wall), min(prev[1], cpu))
                )
        bare_wall, bare_cpu = best["bare"]
        for variant in variants:
            wall, cpu = best[variant]
            rows.append(
                {
                    "harness": harness,
                    "variant": variant,
                    "requests": n,
                    "rounds": rounds,
                    "us_per_request": round(wall, 2),
                    "cpu_us_per_request": round(cpu, 2),
                    "x_bare_cpu": round(cpu / bare_cpu, 2),
                    "x_bare_wall": round(wall / bare_wall, 2),
                    "rss_growth_mib": _rss_growth(harness, variant, n),
                }
            )
    return rows


def _table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'harness':<8}{'variant':<15}{'µs/req':>9}{'CPU µs/req':>12}"
        f"{'x bare CPU':>12}{'x bare wall':>13}{'RSS +MiB':>10}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        rss = r["rss_growth_mib"]
        lines.append(
            f"{r['harness']:<8}{r['variant']:<15}{r['us_per_request']:>9.1f}"
            f"{r['cpu_us_per_request']:>12.1f}{r['x_bare_cpu']:>12.2f}{r['x_bare_wall']:>13.2f}"
            f"{'n/a' if rss is None else f'{rss:.2f}':>10}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "--rss":
        _rss_child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        quick = "--quick" in sys.argv
        results = run(quick)
        print(_table(results))
        if "--json" in sys.argv:
            print(json.dumps(results, indent=2))

"""Client hooks: what tracing adds to an outgoing HTTP call, and to a two-service request path.

Part 1, per call (in-process, one thread): µs added per call by tracestitch's httpx transport
(sync and async) and aiohttp trace config, against the same client without the hook, next to
OpenTelemetry's httpx instrumentation (``opentelemetry-instrumentation-httpx`` + SDK with a
``BatchSpanProcessor`` and a no-op exporter) measured in the same rounds. httpx runs on
``MockTransport`` so the figure is the hook's own cost; aiohttp talks to a loopback server in
the same loop. Each call is made inside a current run/span (the case where the hook works).
Rounds interleave the variants; the median of per-round differences is reported.

Part 2, end to end: two uvicorn services, each in its own subprocess; A calls B with httpx
per request. A bounded load of N requests at concurrency 32 per round, rounds interleaving the
modes: untraced, tracestitch (ASGI middleware on both + ``AsyncTracingTransport`` in A),
``ts-server-only`` (the middleware without the client hook, to split the cost) and
OpenTelemetry (ASGI middleware on both + its httpx transport in A). Reports throughput and each
service's CPU µs/request (from /proc), best round.

Exporter: runs are handed to a tiny in-process exporter (``submit`` appends to a bounded deque),
so the figures are the request-path cost; OpenTelemetry gets the equivalent (a batch processor
with a no-op exporter).

    .venv/bin/python bench/bench_clients.py [--quick] [--json]
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import install_real_exporter

PER_CALL = {True: (2000, 5), False: (5000, 9)}  # quick: (calls per round, rounds)
E2E = {True: (1000, 3), False: (3000, 5)}  # quick: (requests per round, rounds)
CONCURRENCY = 32
URL = "http://service-b/items/42"


# ---------------------------------------------------------------------------------------------
# Exporters that keep the cost on the request path comparable
# ---------------------------------------------------------------------------------------------


def _otel_provider() -> Any:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class NullExporter(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(NullExporter(), max_queue_size=100_000))
    return provider


def _install_tracestitch() -> None:
    # The real background exporter to an in-process sink, as in production minus the network.
    install_real_exporter()


# ---------------------------------------------------------------------------------------------
# Part 1: per call
# ---------------------------------------------------------------------------------------------


def _per_call_sync(n: int, rounds: int) -> dict[str, list[float]]:
    import httpx
    from opentelemetry.instrumentation.httpx import SyncOpenTelemetryTransport

    from tracestitch import RunTree
    from tracestitch.clients.httpx import TracingTransport
    from tracestitch.context import tracing_context

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b'{"ok":true}')

    provider = _otel_provider()
    clients = {
        "bare": httpx.Client(transport=httpx.MockTransport(handler)),
        "tracestitch": httpx.Client(transport=TracingTransport(httpx.MockTransport(handler))),
        "otel": httpx.Client(
            transport=SyncOpenTelemetryTransport(
                httpx.MockTransport(handler), tracer_provider=provider
            )
        ),
    }
    tracer = provider.get_tracer("bench")
    times: dict[str, list[float]] = {k: [] for k in clients}
    with (
        tracing_context(parent=RunTree("request")),
        tracer.start_as_current_span("request"),
    ):
        for client in clients.values():
            for _ in range(200):
                client.get(URL)
        for _ in range(rounds):
            for name, client in clients.items():
                get = client.get
                start = time.perf_counter()
                for _ in range(n):
                    get(URL)
                times[name].append((time.perf_counter() - start) / n * 1e6)
    provider.shutdown()
    return times


async def _time_async(call: Callable[[], Awaitable[Any]], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        await call()
    return (time.perf_counter() - start) / n * 1e6


async def _per_call_async(n: int, rounds: int) -> dict[str, list[float]]:
    import httpx
    from opentelemetry.instrumentation.httpx import AsyncOpenTelemetryTransport

    from tracestitch import RunTree
    from tracestitch.clients.httpx import AsyncTracingTransport
    from tracestitch.context import tracing_context

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b'{"ok":true}')

    provider = _otel_provider()
    clients = {
        "bare": httpx.AsyncClient(transport=httpx.MockTransport(handler)),
        "tracestitch": httpx.AsyncClient(
            transport=AsyncTracingTransport(httpx.MockTransport(handler))
        ),
        "otel": httpx.AsyncClient(
            transport=AsyncOpenTelemetryTransport(
                httpx.MockTransport(handler), tracer_provider=provider
            )
        ),
    }
    tracer = provider.get_tracer("bench")
    times: dict[str, list[float]] = {k: [] for k in clients}
    with (
        tracing_context(parent=RunTree("request")),
        tracer.start_as_current_span("request"),
    ):
        for client in clients.values():
            await _time_async(lambda c=client: c.get(URL), 200)  # type: ignore[misc]
        for _ in range(rounds):
            for name, client in clients.items():
                times[name].append(await _time_async(lambda c=client: c.get(URL), n))  # type: ignore[misc]
    for client in clients.values():
        await client.aclose()
    provider.shutdown()
    return times


async def _per_call_aiohttp(n: int, rounds: int) -> dict[str, list[float]]:
    import aiohttp
    from aiohttp import web

    from tracestitch import RunTree
    from tracestitch.clients.aiohttp import trace_config
    from tracestitch.context import tracing_context

    async def ok(request: web.Request) -> web.Response:
        return web.Response(body=b'{"ok":true}', content_type="application/json")

    app = web.Application()
    app.router.add_get("/items/{id}", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}/items/42"
    sessions = {
        "bare": aiohttp.ClientSession(),
        "tracestitch": aiohttp.ClientSession(trace_configs=[trace_config()]),
    }

    async def fetch(session: aiohttp.ClientSession) -> None:
        async with session.get(url) as response:
            await response.read()

    times: dict[str, list[float]] = {k: [] for k in sessions}
    with tracing_context(parent=RunTree("request")):
        for session in sessions.values():
            await _time_async(lambda s=session: fetch(s), 200)  # type: ignore[misc]
        for _ in range(rounds):
            for name, session in sessions.items():
                times[name].append(await _time_async(lambda s=session: fetch(s), n))  # type: ignore[misc]
    for session in sessions.values():
        await session.close()
    await runner.cleanup()
    return times


def _added(times: dict[str, list[float]], name: str) -> float:
    return statistics.median(t - b for t, b in zip(times[name], times["bare"], strict=True))


def per_call(quick: bool) -> list[dict[str, Any]]:
    n, rounds = PER_CALL[quick]
    _install_tracestitch()
    rows: list[dict[str, Any]] = []
    for client, times in (
        ("httpx sync (MockTransport)", _per_call_sync(n, rounds)),
        ("httpx async (MockTransport)", asyncio.run(_per_call_async(n, rounds))),
        ("aiohttp (loopback server)", asyncio.run(_per_call_aiohttp(n // 2, rounds))),
    ):
        ours = _added(times, "tracestitch")
        row: dict[str, Any] = {
            "bench": "per-call",
            "client": client,
            "bare_us": round(statistics.median(times["bare"]), 1),
            "tracestitch_added_us": round(ours, 1),
        }
        if "otel" in times:
            theirs = _added(times, "otel")
            row["otel_added_us"] = round(theirs, 1)
            row["x_otel_added"] = round(ours / theirs, 2) if theirs > 0 else None
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# Part 2: end to end, two services in subprocesses
# ---------------------------------------------------------------------------------------------


def _service_app(mode: str, role: str, downstream: str | None) -> Any:
    """Service B answers a small JSON body; service A calls B once per request."""
    import httpx
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route

    client: httpx.AsyncClient | None = None
    provider = _otel_provider() if mode == "otel" else None

    async def b(request: Request) -> JSONResponse:
        return JSONResponse({"item": request.path_params["item_id"], "ok": True})

    async def a(request: Request) -> JSONResponse:
        nonlocal client
        if client is None:
            if mode == "tracestitch":
                from tracestitch.clients.httpx import AsyncTracingTransport

                transport: httpx.AsyncBaseTransport = AsyncTracingTransport()
            elif mode == "otel":
                from opentelemetry.instrumentation.httpx import AsyncOpenTelemetryTransport

                transport = AsyncOpenTelemetryTransport(
                    httpx.AsyncHTTPTransport(), tracer_provider=provider
                )
            else:
                transport = httpx.AsyncHTTPTransport()
            client = httpx.AsyncClient(transport=transport, timeout=30)
        item = request.path_params["item_id"]
        response = await client.get(f"{downstream}/items/{item}")
        return JSONResponse({"from_b": response.json()})

    async def health(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    routes = [Route("/health", health)]
    if role == "a":
        routes.append(Route("/a/{item_id}", a))
    else:
        routes.append(Route("/items/{item_id}", b))
    app: Any = Starlette(routes=routes)
    if mode in ("tracestitch", "ts-server-only"):
        from tracestitch.middleware.asgi import TracingMiddleware

        _install_tracestitch()
        app = TracingMiddleware(app, service=f"service-{role}", exclude=["/health"])
    elif mode == "otel":
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        app = OpenTelemetryMiddleware(app, tracer_provider=provider, excluded_urls="health")
    return app


def _serve(mode: str, role: str, port: int, downstream: str) -> None:
    import uvicorn

    app = _service_app(mode, role, downstream or None)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cpu_us(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime
    return ticks / os.sysconf("SC_CLK_TCK") * 1e6


def _start(mode: str, role: str, downstream: str) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", mode, role, str(port), downstream],
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # bench only: wait for the child to listen
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{mode}/{role} did not start")


async def _load(url: str, n: int) -> float:
    import httpx

    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        todo = iter(range(n))

        async def worker() -> None:
            for i in todo:
                for attempt in range(3):  # a connection reset under load is retried, bounded
                    try:
                        response = await client.get(f"{url}/a/{i}")
                        break
                    except httpx.TransportError:
                        if attempt == 2:
                            raise
                response.raise_for_status()

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return n / (time.perf_counter() - start)


def end_to_end(quick: bool) -> list[dict[str, Any]]:
    n, rounds = E2E[quick]
    # "ts-server-only": tracestitch middleware on both services but a plain httpx transport in
    # A, which separates the client hook's share from the server middleware's.
    modes = ["untraced", "tracestitch", "ts-server-only", "otel"]
    services: dict[str, tuple[subprocess.Popen[bytes], subprocess.Popen[bytes], str]] = {}
    try:
        for mode in modes:
            b_proc, b_url = _start(mode, "b", "")
            a_proc, a_url = _start(mode, "a", b_url)
            services[mode] = (a_proc, b_proc, a_url)
        best: dict[str, tuple[float, float, float]] = {}
        for mode in modes:
            asyncio.run(_load(services[mode][2], 300))  # warm-up
        for _ in range(rounds):
            for mode in modes:
                a_proc, b_proc, a_url = services[mode]
                cpu_a, cpu_b = _cpu_us(a_proc.pid), _cpu_us(b_proc.pid)
                rps = asyncio.run(_load(a_url, n))
                used_a = (_cpu_us(a_proc.pid) - cpu_a) / n
                used_b = (_cpu_us(b_proc.pid) - cpu_b) / n
                prev = best.get(mode)
                if prev is None:
                    best[mode] = (rps, used_a, used_b)
                else:
                    best[mode] = (max(prev[0], rps), min(prev[1], used_a), min(prev[2], used_b))
    finally:
        for a_proc, b_proc, _url in services.values():
            for proc in (a_proc, b_proc):
                proc.terminate()
                proc.wait(10)
    base = best["untraced"][0]
    return [
        {
            "bench": "end-to-end",
            "mode": mode,
            "requests": n,
            "rounds": rounds,
            "rps": round(rps, 1),
            "x_untraced_rps": round(rps / base, 3),
            "cpu_us_per_req_a": round(cpu_a, 1),
            "cpu_us_per_req_b": round(cpu_b, 1),
        }
        for mode, (rps, cpu_a, cpu_b) in best.items()
    ]


def run(quick: bool) -> list[dict[str, Any]]:
    """Per-call rows (added µs, x OpenTelemetry's added cost) then end-to-end rows."""
    return [*per_call(quick), *end_to_end(quick)]


def _table(rows: list[dict[str, Any]]) -> str:
    lines = []
    head = f"{'client':<30}{'bare µs':>9}{'+ours µs':>10}{'+otel µs':>10}{'x otel':>8}"
    lines += [head, "-" * len(head)]
    for r in rows:
        if r["bench"] == "per-call":
            otel = r.get("otel_added_us")
            ratio = r.get("x_otel_added")
            lines.append(
                f"{r['client']:<30}{r['bare_us']:>9.1f}{r['tracestitch_added_us']:>10.1f}"
                f"{'n/a' if otel is None else f'{otel:.1f}':>10}"
                f"{'n/a' if ratio is None else f'{ratio:.2f}':>8}"
            )
    head = f"{'mode':<14}{'req/s':>9}{'x untraced':>12}{'A CPU µs/req':>14}{'B CPU µs/req':>14}"
    lines += ["", head, "-" * len(head)]
    for r in rows:
        if r["bench"] == "end-to-end":
            lines.append(
                f"{r['mode']:<14}{r['rps']:>9.1f}{r['x_untraced_rps']:>12.3f}"
                f"{r['cpu_us_per_req_a']:>14.1f}{r['cpu_us_per_req_b']:>14.1f}"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "--serve":
        _serve(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
    else:
        results = run("--quick" in sys.argv)
        print(_table(results))
        if "--json" in sys.argv:
            print(json.dumps(results, indent=2))

"""Client hooks: what tracing adds to an outgoing HTTP call.

Per call (in-process, one thread): µs added per call by tracestitch's httpx transport
(sync and async) and aiohttp trace config, against the same client without the hook, next to
OpenTelemetry's httpx instrumentation (``opentelemetry-instrumentation-httpx`` + SDK with a
``BatchSpanProcessor`` and a no-op exporter) measured in the same rounds. httpx runs on
``MockTransport`` so the figure is the hook's own cost; aiohttp talks to a loopback server in
the same loop. Each call is made inside a current run/span (the case where the hook works).
Rounds interleave the variants; the median of per-round differences is reported.

The end-to-end bench (two services, A calling B, under ASGI, WSGI and aiohttp) is
``bench_e2e.py``.

Exporter: tracestitch's real background exporter into an in-process sink
(``common.install_real_exporter``); OpenTelemetry gets the equivalent (a batch processor with a
no-op exporter).

    .venv/bin/python bench/bench_clients.py [--quick] [--json]
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import install_real_exporter

PER_CALL = {True: (2000, 5), False: (5000, 9)}  # quick: (calls per round, rounds)
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
# Per call
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


def run(quick: bool) -> list[dict[str, Any]]:
    """Per-call rows (added µs, x OpenTelemetry's added cost)."""
    return per_call(quick)


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
    return "\n".join(lines)


if __name__ == "__main__":
    results = run("--quick" in sys.argv)
    print(_table(results))
    if "--json" in sys.argv:
        print(json.dumps(results, indent=2))

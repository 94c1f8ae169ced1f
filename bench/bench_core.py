"""Per-operation cost of the core, next to the langsmith SDK and OpenTelemetry in the same run.

Each operation runs in interleaved rounds (ours, langsmith's, OpenTelemetry's, then again), and
the median of the per-round means is reported, so a noisy moment hits all three alike.
Exporters: ours is the real background ``BatchExporter`` delivering to an in-process sink; the
langsmith ``Client`` batches in its background thread to a session that answers 200 without a
network; OpenTelemetry's ``BatchSpanProcessor`` feeds an in-memory exporter.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from common import Result, install_real_exporter, print_table

ROUNDS = 7


def _measure(fn: Callable[[], Any], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def _measure_async(fn: Callable[[], Any], n: int) -> float:
    async def body() -> float:
        start = time.perf_counter()
        for _ in range(n):
            await fn()
        return (time.perf_counter() - start) / n * 1e6

    return asyncio.run(body())


# ----------------------------------------------------------------------------------- ours
def _ours() -> dict[str, Callable[[], Any]]:
    import tracestitch as ts
    from tracestitch.run_context import _current_run

    install_real_exporter()
    parent = ts.RunTree("parent")
    headers = parent.create_child("client").to_headers()

    @ts.traceable
    def sync_fn(x: int) -> int:
        return x

    @ts.traceable
    async def async_fn(x: int) -> int:
        return x

    def root() -> Any:
        return ts.RunTree("root", inputs={"x": 1})

    def child() -> Any:
        return parent.create_child("child", inputs={"x": 1})

    def end_submit() -> None:
        run = parent.create_child("child")
        run.end(outputs={"y": 1})
        run.post()

    def hop() -> None:
        remote = ts.RunTree.from_headers(headers)
        assert remote is not None
        run = remote.create_child("server", inputs={"x": 1})
        run.post()
        token = _current_run.set(run)
        run.to_headers()
        run.end(outputs={"y": 1})
        run.patch()
        _current_run.reset(token)

    return {
        "root creation": root,
        "create_child": child,
        "end + submit": end_submit,
        "to_headers": lambda: parent.to_headers(),
        "from_headers": lambda: ts.RunTree.from_headers(headers),
        "sync @traceable": lambda: sync_fn(1),
        "async @traceable": lambda: async_fn(1),
        "hop": hop,
    }


# ------------------------------------------------------------------------------ langsmith
def _langsmith_client() -> Any:
    """A langsmith Client whose background thread really sends, to a loopback sink."""
    import logging

    from common import ok_sink_url
    from langsmith import Client

    logging.getLogger("langsmith").setLevel(logging.CRITICAL)
    return Client(api_url=ok_sink_url(), api_key="bench", auto_batch_tracing=True)


def _langsmith() -> dict[str, Callable[[], Any]]:
    import langsmith
    from langsmith import run_helpers

    client = _langsmith_client()
    parent = langsmith.RunTree(name="parent", client=client)
    headers = parent.create_child(name="client").to_headers()

    @langsmith.traceable(client=client)
    def sync_fn(x: int) -> int:
        return x

    @langsmith.traceable(client=client)
    async def async_fn(x: int) -> int:
        return x

    def end_submit() -> None:
        run = parent.create_child(name="child")
        run.end(outputs={"y": 1})
        run.post()

    def hop() -> None:
        remote = langsmith.RunTree.from_headers(headers, client=client)
        assert remote is not None
        run = remote.create_child(name="server", inputs={"x": 1})
        run.post()
        run.to_headers()
        run.end(outputs={"y": 1})
        run.patch()

    def traced(fn: Callable[[], Any]) -> Callable[[], Any]:
        def call() -> Any:
            with run_helpers.tracing_context(enabled=True, client=client):
                return fn()

        return call

    async def async_call() -> Any:
        with run_helpers.tracing_context(enabled=True, client=client):
            return await async_fn(1)

    return {
        "root creation": lambda: langsmith.RunTree(name="root", inputs={"x": 1}, client=client),
        "create_child": lambda: parent.create_child(name="child", inputs={"x": 1}),
        "end + submit": end_submit,
        "to_headers": lambda: parent.to_headers(),
        "from_headers": lambda: langsmith.RunTree.from_headers(headers, client=client),
        "sync @traceable": traced(lambda: sync_fn(1)),
        "async @traceable": async_call,
        "hop": hop,
    }


# -------------------------------------------------------------------------- OpenTelemetry
def _otel() -> dict[str, Callable[[], Any]]:
    from opentelemetry import context as otel_context
    from opentelemetry import trace as otel_trace
    from opentelemetry.propagate import extract, inject
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(InMemorySpanExporter()))
    tracer = provider.get_tracer("bench")
    parent = tracer.start_span("parent")
    parent_ctx = otel_trace.set_span_in_context(parent)
    headers: dict[str, str] = {}
    inject(headers, context=parent_ctx)

    def sync_fn(x: int) -> int:
        with tracer.start_as_current_span("sync_fn"):
            return x

    async def async_fn(x: int) -> int:
        with tracer.start_as_current_span("async_fn"):
            return x

    def end_submit() -> None:
        span = tracer.start_span("child", context=parent_ctx)
        span.set_attribute("y", 1)
        span.end()

    def hop() -> None:
        ctx = extract(headers)
        span = tracer.start_span("server", context=ctx, attributes={"x": 1})
        token = otel_context.attach(otel_trace.set_span_in_context(span, ctx))
        inject({})
        span.end()
        otel_context.detach(token)

    def to_headers() -> None:
        inject({}, context=parent_ctx)

    return {
        "root creation": lambda: tracer.start_span("root", attributes={"x": 1}),
        "create_child": lambda: tracer.start_span("child", context=parent_ctx, attributes={"x": 1}),
        "end + submit": end_submit,
        "to_headers": to_headers,
        "from_headers": lambda: extract(headers),
        "sync @traceable": lambda: sync_fn(1),
        "async @traceable": lambda: async_fn(1),
        "hop": hop,
    }


def run(quick: bool = False) -> list[Result]:
    n = 2000 if quick else 10_000
    suites = {"tracestitch": _ours(), "langsmith": _langsmith(), "opentelemetry": _otel()}
    samples: dict[tuple[str, str], list[float]] = {}
    for _ in range(3 if quick else ROUNDS):
        for op in suites["tracestitch"]:
            for who, ops in suites.items():
                fn = ops[op]
                n_op = n // 10 if who == "langsmith" else n
                measure = _measure_async if op.startswith("async") else _measure
                samples.setdefault((op, who), []).append(measure(fn, n_op))
    results: list[Result] = []
    for op in suites["tracestitch"]:
        ours = statistics.median(samples[(op, "tracestitch")])
        ls = statistics.median(samples[(op, "langsmith")])
        otel = statistics.median(samples[(op, "opentelemetry")])
        results.append(
            Result(
                bench="core",
                case=op,
                figures={"tracestitch µs": ours, "langsmith µs": ls, "otel µs": otel},
                ratios={"vs langsmith": ours / ls, "vs otel": ours / otel},
            )
        )
    from tracestitch.exporter import get_exporter

    get_exporter().shutdown(2.0)
    return results


if __name__ == "__main__":
    print_table(run(quick="--quick" in sys.argv))

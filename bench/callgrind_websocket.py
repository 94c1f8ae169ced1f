"""Instructions per WebSocket connection and per message under the ASGI middleware, counted by
callgrind: bare, with tracestitch's ``TracingMiddleware`` (messages as events, the default, and
as child runs), and with OpenTelemetry's ASGI middleware (``OpenTelemetryMiddleware``, which
handles websocket scopes: a server span per connection, a span per ``receive`` and ``send``), in
one run.

The app is a Starlette ``WebSocketRoute`` that accepts and echoes each text message, driven
in-process (no server, no socket, which cost every variant the same): the handshake carries a
caller's ``langsmith-trace``/``baggage`` and ``traceparent``, so each variant joins a trace;
the client sends ``k`` messages and closes (1000). A case is ``k`` messages per connection:
``connect`` (0) gives the cost of a connection, ``chat`` (10) minus ``connect``, over 10, that of
a message (within the default event budget of 100, so no event is dropped).

tracestitch exports through its real background exporter (a sink that serializes and drops);
OpenTelemetry through the SDK's ``SimpleSpanProcessor`` into an in-memory exporter, as in
``bench_middleware``. Each case runs twice under callgrind (two connection counts); the
difference of the totals over the difference of the counts is the per-connection cost,
start-up and imports cancelled out::

    python bench/callgrind_websocket.py --measure      # runs valgrind itself, prints the table
    python bench/callgrind_websocket.py --wall         # the same connections timed, no valgrind

Not part of ``make test``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import (  # noqa: E402 (bench/ on the path first)
    best_microseconds,
    callgrind_instructions,
    print_overheads,
)

os.environ.setdefault("TRACESTITCH_TRACING", "true")  # before tracestitch is imported

VARIANTS = ("bare", "tracestitch", "tracestitch-runs", "opentelemetry")
CASES = {"connect": 0, "chat": 10}

_CALLER_ORDER = (
    b"20240315T120000000000Z0190a4f3-7f2b-7c3d-8e4f-0123456789ab."
    b"20240315T120000001000Z0190a4f3-7f2b-7c3d-8e4f-0123456789ac"
)
HEADERS = [
    (b"host", b"127.0.0.1:8000"),
    (b"user-agent", b"bench/1.0"),
    (b"upgrade", b"websocket"),
    (b"connection", b"Upgrade"),
    (b"sec-websocket-version", b"13"),
    (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
    (b"langsmith-trace", _CALLER_ORDER),
    (b"baggage", b"langsmith-metadata=%7B%22tenant%22%3A%22acme%22%7D,langsmith-tags=a%2Cb"),
    (b"traceparent", b"00-0190a4f37f2b7c3d8e4f0123456789ab-8e4f0123456789ac-01"),
]
SCOPE: dict[str, Any] = {
    "type": "websocket",
    "asgi": {"version": "3.0", "spec_version": "2.4"},
    "http_version": "1.1",
    "scheme": "ws",
    "server": ("127.0.0.1", 8000),
    "client": ("127.0.0.1", 50000),
    "root_path": "",
    "path": "/chat/7",
    "raw_path": b"/chat/7",
    "query_string": b"",
    "headers": HEADERS,
    "subprotocols": [],
}

Message = MutableMapping[str, Any]
App = Callable[[Any, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Any]


def _app(variant: str) -> tuple[App, Callable[[], int]]:
    """The echo app with the variant's middleware, and how many runs (spans) it has made so
    far (to check that it records what it should: a bench of a tracer that records nothing
    would flatter it)."""
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        async for text in websocket.iter_text():
            await websocket.send_text(text)

    app = Starlette(routes=[WebSocketRoute("/chat/{room}", echo)])
    if variant.startswith("tracestitch"):
        from common import install_real_exporter

        from tracestitch.exporter import add_listener
        from tracestitch.middleware import WebSocketOptions
        from tracestitch.middleware.asgi import TracingMiddleware

        install_real_exporter()
        messages = "runs" if variant == "tracestitch-runs" else "events"
        app.add_middleware(
            TracingMiddleware, service="bench", websocket=WebSocketOptions(messages=messages)
        )
        ended: list[int] = [0]

        def count(run: Any) -> None:
            if run.end_time_us is not None:
                ended[0] += 1

        add_listener(count)
        return app, lambda: ended[0]
    if variant == "opentelemetry":
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        app.add_middleware(OpenTelemetryMiddleware, tracer_provider=provider)
        spans: list[int] = [0]

        def made() -> int:
            spans[0] += len(exporter.get_finished_spans())
            exporter.clear()  # memory stays flat over thousands of connections
            return spans[0]

        return app, made
    return app, lambda: 0


async def _connection(app: App, k: int) -> None:
    inbox: list[Message] = [{"type": "websocket.connect"}]
    inbox += [{"type": "websocket.receive", "text": f"message {i}"} for i in range(k)]
    inbox.append({"type": "websocket.disconnect", "code": 1000})
    messages = iter(inbox)
    sent: list[Message] = []

    async def receive() -> Message:
        return next(messages)

    async def send(message: Message) -> None:
        sent.append(message)

    await app(dict(SCOPE), receive, send)
    if sent[0]["type"] != "websocket.accept" or len(sent) != 1 + k:
        raise RuntimeError(f"the echo app answered {sent!r}")


#: Runs (spans) one connection of k messages makes at the least, per variant.
def _expected(variant: str, k: int) -> int:
    return {"bare": 0, "tracestitch": 1, "tracestitch-runs": 1 + k, "opentelemetry": 4 + 2 * k}[
        variant
    ]


def _build(variant: str, k: int) -> Callable[[], Awaitable[None]]:
    app, made = _app(variant)

    async def cycle() -> None:
        await _connection(app, k)

    async def check() -> None:
        before = made()
        await cycle()
        if variant.startswith("tracestitch"):
            from tracestitch.exporter import get_exporter

            get_exporter().flush(10)
        if made() - before < _expected(variant, k):
            raise RuntimeError(f"{variant} made {made() - before} runs for {k} messages")

    asyncio.run(check())
    if variant == "opentelemetry":

        async def cycle_and_clear() -> None:
            await _connection(app, k)
            made()

        return cycle_and_clear
    return cycle


def _drive(variant: str, case: str, n: int) -> None:
    cycle = _build(variant, CASES[case])

    async def run() -> None:
        for _ in range(n):
            await cycle()

    asyncio.run(run())
    if variant.startswith("tracestitch"):
        from tracestitch.exporter import get_exporter

        get_exporter().flush(60)  # the worker's serialization is part of each connection's cost
    os._exit(0)


def _instructions(variant: str, case: str, n: int) -> int:
    return callgrind_instructions(__file__, variant, case, str(n), fair_sched=True)


def _report(costs: dict[str, dict[str, float]], unit: str) -> None:
    """Per connection and per message, each for messages as events (the default) and as
    child runs (``tracestitch`` in the lines labelled ``/runs``)."""
    k = CASES["chat"]
    per_connection = {v: costs[v]["connect"] for v in VARIANTS}
    per_message = {v: (costs[v]["chat"] - costs[v]["connect"]) / k for v in VARIANTS}
    for label, figures in (("connection", per_connection), ("message", per_message)):
        print_overheads(label, figures, unit, width=16)
        runs = {**figures, "tracestitch": figures["tracestitch-runs"]}
        print_overheads(f"{label}/runs", runs, unit, width=16)


def measure(low: int, high: int) -> None:
    costs = {
        v: {c: (_instructions(v, c, high) - _instructions(v, c, low)) / (high - low) for c in CASES}
        for v in VARIANTS
    }
    _report(costs, "instructions")


def wall(n: int) -> None:
    """Wall clock per connection (best of 3, each variant in its own process): noisy on a
    shared machine; the callgrind figures are the ones to quote."""
    costs: dict[str, dict[str, float]] = {}
    for variant in VARIANTS:
        for case in CASES:
            out = subprocess.run(
                [sys.executable, __file__, "--time", variant, case, str(n)],
                capture_output=True,
                text=True,
                check=True,
            )
            costs.setdefault(variant, {})[case] = float(out.stdout.strip().splitlines()[-1])
    _report(costs, "µs")


def _time(variant: str, case: str, n: int) -> None:
    cycle = _build(variant, CASES[case])
    loop = asyncio.new_event_loop()  # one loop for every connection: its cost the same for all
    print(best_microseconds(lambda: loop.run_until_complete(cycle()), n), flush=True)
    os._exit(0)


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--measure"]:
        low, high = (int(args[1]), int(args[2])) if len(args) > 2 else (50, 200)
        measure(low, high)
    elif args[:1] == ["--wall"]:
        wall(int(args[1]) if len(args) > 1 else 300)
    elif args[:1] == ["--time"]:
        _time(args[1], args[2], int(args[3]))
    else:
        _drive(args[0], args[1], int(args[2]))

"""Instructions per WebSocket connection opened by a client, counted by callgrind: the
``websockets`` asyncio client bare, with tracestitch's ``TracingClientConnection`` inside a
current run (a client run per connection, the trace on the handshake), and both outside any run (the
hook's floor), and aiohttp's ``ws_connect`` bare and through tracestitch's
``trace_config`` (the handshake's client run), in one run.

Each connection opens to a loopback echo server, sends one text message, reads the answer and
closes (1000). The server runs in another process, which callgrind does not follow, so the
figures are the client process's own: the client library, the hook, and tracestitch's real
background exporter (a sink that serializes and drops) flushed before the count ends.
OpenTelemetry has no instrumentation of ``websockets``; its aiohttp client instrumentation is
not installed here (not a dev dependency), so there is no OpenTelemetry peer in this table.

Each case runs twice under callgrind (two connection counts); the difference of the totals
over the difference of the counts is the per-connection cost, start-up cancelled out::

    python bench/callgrind_ws_client.py --measure      # runs valgrind itself, prints the table

2026-12-02, CPython 3.11.7 (instructions per connection): websockets bare 3,059,405, traced
3,363,019 (1.10x), outside any run 2,861,894 / 2,863,040 (1.00x); aiohttp ``ws_connect`` bare
1,212,202, through ``trace_config()`` 1,524,177 (1.26x). Between two runs the traced figure
moved by about 75k (the export worker's batching).

Not part of ``make test``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import callgrind_instructions  # noqa: E402 (bench/ on the path first)

os.environ.setdefault("TRACESTITCH_TRACING", "true")  # before tracestitch is imported

CASES = (
    "bare",
    "tracestitch",
    "bare-no-run",
    "tracestitch-no-run",
    "aiohttp-bare",
    "aiohttp-tracestitch",
)


def _serve() -> None:
    """The echo server (another process): prints its port, serves until killed."""
    from websockets.asyncio.server import ServerConnection, serve

    async def echo(websocket: ServerConnection) -> None:
        async for message in websocket:
            await websocket.send(message)

    async def main() -> None:
        async with serve(echo, "127.0.0.1", 0) as server:
            print(server.sockets[0].getsockname()[1], flush=True)
            await asyncio.Future()

    asyncio.run(main())


def _server() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    port = proc.stdout.readline().strip()
    if not port:
        proc.kill()
        raise RuntimeError("the echo server did not start")
    return proc, f"ws://127.0.0.1:{port}/chat/7"


async def _websockets(url: str, case: str, n: int) -> int:
    from contextlib import nullcontext

    from websockets.asyncio.client import ClientConnection, connect

    from tracestitch import trace
    from tracestitch.clients.websockets import TracingClientConnection

    hooked = case.startswith("tracestitch")
    kind: type[ClientConnection] = TracingClientConnection if hooked else ClientConnection
    in_run = not case.endswith("-no-run")
    for _ in range(n):
        # A run current in bare too, so the difference is the hook's alone.
        with trace("request") if in_run else nullcontext():
            async with connect(url, create_connection=kind) as ws:
                await ws.send("hello")
                await ws.recv()
    return n * {"bare": 1, "tracestitch": 2}.get(case, 0)


async def _aiohttp(url: str, case: str, n: int) -> int:
    import aiohttp

    from tracestitch import trace
    from tracestitch.clients.aiohttp import trace_config

    configs: list[Any] = [trace_config()] if case == "aiohttp-tracestitch" else []
    async with aiohttp.ClientSession(trace_configs=configs) as session:
        for _ in range(n):
            # A run current in both, so the bare case pays the caller's run as well.
            with trace("request"):
                async with session.ws_connect(url.replace("ws://", "http://")) as ws:
                    await ws.send_str("hello")
                    await ws.receive()
    return n * (2 if configs else 1)


def _drive(case: str, n: int) -> None:
    from common import install_real_exporter

    from tracestitch.exporter import add_listener, get_exporter

    install_real_exporter()
    ended = [0]

    def count(run: Any) -> None:
        if run.end_time_us is not None:
            ended[0] += 1

    add_listener(count)
    proc, url = _server()
    try:
        drive = _aiohttp if case.startswith("aiohttp") else _websockets
        expected = asyncio.run(drive(url, case, n))
        get_exporter().flush(60)  # the worker's serialization is part of each connection's cost
    finally:
        proc.kill()
        proc.wait()
    # A bench of a hook that records nothing would flatter it.
    if ended[0] < expected:
        raise RuntimeError(f"{case}: {ended[0]} runs for {n} connections, expected {expected}")
    os._exit(0)


def measure(low: int = 40, high: int = 160) -> None:
    costs = {
        case: (
            callgrind_instructions(__file__, case, str(high), fair_sched=True)
            - callgrind_instructions(__file__, case, str(low), fair_sched=True)
        )
        / (high - low)
        for case in CASES
    }
    print(f"{'case':<22}{'instructions/connection':>26}{'x bare':>10}")
    for case, cost in costs.items():
        bare = costs[case.replace("tracestitch", "bare")]
        print(f"{case:<22}{cost:>26,.0f}{cost / bare:>10.3f}")
    hook = costs["tracestitch"] - costs["bare"]
    print(f"websockets hook: +{hook:,.0f} instructions per traced connection")
    hook = costs["tracestitch-no-run"] - costs["bare-no-run"]
    print(f"websockets hook outside any run: +{hook:,.0f} instructions per connection")
    hook = costs["aiohttp-tracestitch"] - costs["aiohttp-bare"]
    print(f"aiohttp trace_config on ws_connect: +{hook:,.0f} instructions per connection")


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--measure"]:
        measure(*(int(a) for a in args[1:3]))
    elif args[:1] == ["--serve"]:
        _serve()
    else:
        _drive(args[0], int(args[1]))

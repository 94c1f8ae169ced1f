"""Instructions per request of the traced ASGI bench app, counted by callgrind.

Drives the ``tracestitch`` variant of ``bench_middleware``'s ASGI harness (server run, one
``@traceable`` child, the real exporter serializing to an in-process sink) ``N`` times, with or
without incoming trace headers, and exits. Run it twice under callgrind with two request counts;
the difference of the totals divided by the difference of the counts is the per-request cost,
start-up and imports cancelled out::

    python bench/callgrind_asgi.py --measure            # runs valgrind itself, prints the table
    # whole requests (exporter included), then RunTree.from_headers alone ("extract:<case>"),
    # then the core hop alone ("hop:<case>": from_headers, create_child, to_headers, end, post)

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python bench/callgrind_asgi.py parent 2000       # one raw run
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import asgi_scope, callgrind_instructions  # noqa: E402 (bench/ on the path first)

#: Incoming header sets: none (a new root), and a caller's run as the LangSmith SDK sends it.
_CALLER_ORDER = (
    b"20240315T120000000000Z0190a4f3-7f2b-7c3d-8e4f-0123456789ab."
    b"20240315T120000001000Z0190a4f3-7f2b-7c3d-8e4f-0123456789ac"
)
CASES: dict[str, list[tuple[bytes, bytes]]] = {
    "root": [],
    "parent": [
        (b"langsmith-trace", _CALLER_ORDER),
        (b"baggage", b"langsmith-metadata=%7B%22tenant%22%3A%22acme%22%7D,langsmith-tags=a%2Cb"),
    ],
    "w3c": [
        (b"traceparent", b"00-0190a4f37f2b7c3d8e4f0123456789ab-8e4f0123456789ac-01"),
        (b"tracestate", b"vendor=opaque-value,other@sys=1"),
    ],
}
_BASE_HEADERS = [
    (b"host", b"127.0.0.1:8000"),
    (b"user-agent", b"bench/1.0"),
    (b"accept", b"*/*"),
]


def _drive(case: str, n: int) -> None:
    import bench_middleware

    app, reset = bench_middleware._asgi_app("tracestitch")
    reset()
    scope = asgi_scope([*_BASE_HEADERS, *CASES[case]])
    request = {"type": "http.request", "body": b"", "more_body": False}

    async def receive() -> dict[str, Any]:
        return request

    async def send(message: Any) -> None:
        return None

    async def many() -> None:
        for _ in range(n):
            await app(dict(scope), receive, send)

    asyncio.new_event_loop().run_until_complete(many())
    from tracestitch.exporter import get_exporter

    get_exporter().flush(60)  # the worker's serialization is part of each request's cost


def _drive_extract(case: str, n: int) -> None:
    """Only the propagation step: ``RunTree.from_headers`` on the ASGI header list."""
    from tracestitch.run_tree import RunTree

    headers = [*_BASE_HEADERS, *CASES[case]]
    for _ in range(n):
        RunTree.from_headers(headers)


def _drive_hop(case: str, n: int) -> None:
    """The core hop without a server: the caller's run from the headers, this service's run
    under it, the headers for a downstream call, the end handed to the (no-op) exporter."""
    from tracestitch.run_tree import RunTree

    headers = [*_BASE_HEADERS, *CASES[case]]
    for _ in range(n):
        parent = RunTree.from_headers(headers)
        run = (
            parent.create_child("server", inputs={"x": 1})
            if parent is not None
            else RunTree("server", inputs={"x": 1})
        )
        run.to_headers()
        run.end(outputs={"y": 1})
        run.post()


def _instructions(case: str, n: int) -> int:
    return callgrind_instructions(__file__, case, str(n))


def measure(low: int = 500, high: int = 2500) -> None:
    print(f"{'case':<16}{'instructions/request':>22}")
    for case in CASES:
        per_request = (_instructions(case, high) - _instructions(case, low)) / (high - low)
        print(f"{case:<16}{per_request:>22,.0f}")
    for case in CASES:  # the propagation step alone: far less noise than a whole request
        name = f"extract:{case}"
        per_call = (_instructions(name, high * 4) - _instructions(name, low * 4)) / (
            (high - low) * 4
        )
        print(f"{name:<16}{per_call:>22,.0f}")
    for case in CASES:  # the core hop alone, no server and no exporter
        name = f"hop:{case}"
        per_call = (_instructions(name, high * 4) - _instructions(name, low * 4)) / (
            (high - low) * 4
        )
        print(f"{name:<16}{per_call:>22,.0f}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--measure"]:
        measure()
    elif sys.argv[1].startswith("extract:"):
        _drive_extract(sys.argv[1].partition(":")[2], int(sys.argv[2]))
    elif sys.argv[1].startswith("hop:"):
        _drive_hop(sys.argv[1].partition(":")[2], int(sys.argv[2]))
    else:
        _drive(sys.argv[1], int(sys.argv[2]))

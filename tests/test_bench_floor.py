"""The bench's floor (``bench/floor.py``) exports what tracestitch exports: for one request of the
bench app (a server run and one child), the same keys and shape, the same values where they do
not depend on the clock or fresh ids, and the same reading of incoming headers, good and bad.

The reference is tracestitch's real export: its middleware and ``@traceable``, through its
``BatchExporter``, into a sink that keeps the serialized operations.
"""

from __future__ import annotations

import asyncio
import re
import sys
import threading
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from tracestitch.export.worker import BatchExporter
from tracestitch.exporter import set_exporter
from tracestitch.middleware.asgi import TracingMiddleware
from tracestitch.tracing import traceable

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import floor
from common import asgi_scope

CALLER = (
    "20240315T120000000000Z0190a4f3-7f2b-7c3d-8e4f-0123456789ab."
    "20240315T120000001000Z0190a4f3-7f2b-7c3d-8e4f-0123456789ac"
)
META = b"langsmith-metadata=%7B%22tenant%22%3A%22acme%22%7D"
TRACEPARENT = b"00-0190a4f37f2b7c3d8e4f0123456789ab-8e4f0123456789ac-01"
BASE = [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"bench/1.0"), (b"accept", b"*/*")]
#: The bench's header cases (callgrind_asgi.CASES), then hostile and unusual ones.
CASES: dict[str, list[tuple[bytes, bytes]]] = {
    "root": [],
    "parent": [
        (b"langsmith-trace", CALLER.encode()),
        (b"baggage", META + b",langsmith-tags=a%2Cb"),
    ],
    "w3c": [(b"traceparent", TRACEPARENT), (b"tracestate", b"vendor=opaque-value,other@sys=1")],
    "order-garbage": [(b"langsmith-trace", b"garbage"), (b"traceparent", TRACEPARENT)],
    "order-bad-date": [(b"langsmith-trace", CALLER.replace("0315T", "0231T").encode())],
    "order-future": [(b"langsmith-trace", CALLER.replace("2024", "2099").encode())],
    "order-one-segment": [(b"langsmith-trace", CALLER.split(".")[0].encode())],
    "order-twice": [
        (b"langsmith-trace", CALLER.encode()),
        (b"langsmith-trace", CALLER.split(".")[0].encode()),
    ],
    "order-not-utf8": [(b"langsmith-trace", b"\xff" * 58)],
    "traceparent-upper": [(b"traceparent", TRACEPARENT.upper())],
    "traceparent-ff": [(b"traceparent", b"ff" + TRACEPARENT[2:])],
    "traceparent-zero": [(b"traceparent", b"00-" + b"0" * 32 + TRACEPARENT[35:])],
    "traceparent-unsampled": [(b"traceparent", TRACEPARENT[:-2] + b"00")],
    "traceparent-ancestor": [
        (b"traceparent", TRACEPARENT),
        (b"tracestate", b"tracestitch=00000000000000aa,vendor=x"),
    ],
    "baggage-bad-json": [
        (b"langsmith-trace", CALLER.encode()),
        (b"baggage", b"langsmith-metadata=%7B"),
    ],
    "baggage-project": [
        (b"langsmith-trace", CALLER.encode()),
        (b"baggage", b"other=1, langsmith-project=elsewhere;p=1"),
    ],
    "baggage-project-and-address": [
        (b"langsmith-trace", CALLER.encode()),
        (
            b"baggage",
            b"langsmith-project=p,langsmith-address=lrn%3Aagents%2Fa1%2Fenvironments%2Flocal",
        ),
    ],
    "baggage-address": [
        (b"langsmith-trace", CALLER.encode()),
        (b"baggage", b"langsmith-address=lrn%3Aagents%2Fa1%2Fenvironments%2FStaging"),
    ],
    "baggage-plus-and-raw": [
        (b"langsmith-trace", CALLER.encode()),
        (b"baggage", b"langsmith-tags=x+y%2C%20z,langsmith-metadata=%7B%22a%22:%22%C3%A9%22%7D"),
    ],
    "baggage-invalid-value": [
        (b"langsmith-trace", CALLER.encode()),
        (b"baggage", b'langsmith-tags="quoted"'),
    ],
}


class KeepSink:
    """Keeps every exported run (as its JSON object) and says when ``n`` have arrived."""

    def __init__(self) -> None:
        self.runs: list[dict[str, Any]] = []
        self.changed = threading.Condition()

    def send(self, ops: Sequence[Any]) -> None:
        with self.changed:
            for op in ops:
                self.runs.append(orjson.loads(op if isinstance(op, bytes) else op.json()))
            self.changed.notify_all()

    def close(self) -> None:
        return None


async def _work(x: int) -> int:
    return x + 1


def _app(kind: str, handler: str = "hello") -> Any:
    """The bench app (bench_middleware's ASGI harness) traced by ``kind``."""
    child = (traceable(name="work") if kind == "tracestitch" else floor.traceable(name="work"))(
        _work
    )

    async def endpoint(request: Any) -> Any:
        await child(1)
        if handler == "json":
            return JSONResponse({"items": list(range(10))})
        if handler == "fail":
            return PlainTextResponse("no", status_code=503)
        return PlainTextResponse("hello")

    app = Starlette(routes=[Route("/items/{item_id}", endpoint)])
    if kind == "tracestitch":
        app.add_middleware(TracingMiddleware, service="bench")
    else:
        app.add_middleware(floor.FloorMiddleware, service="bench")
    return app


def _request(app: Any, headers: list[tuple[bytes, bytes]]) -> None:
    scope = asgi_scope([*BASE, *headers], query=b"q=1&api_key=sk-1")

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        return None

    asyncio.run(app(scope, receive, send))


@pytest.fixture
def exported() -> Iterator[Any]:
    """``run(kind, headers, handler)``: the runs one request of the bench app exports."""
    ts_sink, floor_sink = KeepSink(), KeepSink()
    ts_exporter = BatchExporter(ts_sink, spool=None)
    set_exporter(ts_exporter)
    floor_exporter = floor.install(floor_sink)

    def run(kind: str, headers: list[tuple[bytes, bytes]], handler: str = "hello") -> Any:
        sink = ts_sink if kind == "tracestitch" else floor_sink
        before = len(sink.runs)
        _request(_app(kind, handler), headers)
        assert (ts_exporter if kind == "tracestitch" else floor_exporter).flush(10)
        return sink.runs[before:]

    yield run
    ts_exporter.shutdown(5)
    floor_exporter.shutdown(5)


def _shape(value: Any) -> Any:
    """Keys and value types, all the way down; lists by their items' shape."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v) for v in value]
    return type(value).__name__


def _by_name(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {"server": next(r for r in runs if r["name"] != "work"), "child": one(runs, "work")}


def one(runs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found = [r for r in runs if r["name"] == name]
    assert len(found) == 1, runs
    return found[0]


SEGMENT = re.compile(r"(\d{8}T\d{12}Z)([0-9a-f-]{36})")


def _ids_and_times(run: dict[str, Any]) -> None:
    """What every exported run must hold whoever made it: a UUIDv7 id that ends its dotted
    order, whose stamp is its start time; the trace id first; the parent id next to last."""
    segments = [SEGMENT.fullmatch(s) for s in run["dotted_order"].split(".")]
    assert all(segments), run["dotted_order"]
    stamp, last = segments[-1].groups()  # type: ignore[union-attr]
    assert last == run["id"] and uuid.UUID(run["id"]).version == 7
    assert segments[0].group(2) == run["trace_id"]  # type: ignore[union-attr]
    if len(segments) > 1:
        assert segments[-2].group(2) == run["parent_run_id"]  # type: ignore[union-attr]
    start = run["start_time"]
    assert stamp == start[:4] + start[5:7] + start[8:10] + "T" + start[11:13] + start[14:16] + (
        start[17:19] + start[20:26] + "Z"
    )
    assert start.endswith("+00:00") and run["end_time"] >= start


@pytest.mark.parametrize("case", ["root", "parent", "w3c"])
def test_the_floor_exports_what_tracestitch_exports(exported: Any, case: str) -> None:
    ours = _by_name(exported("tracestitch", CASES[case]))
    theirs = _by_name(exported("floor", CASES[case]))
    for role in ("server", "child"):
        a, b = ours[role], theirs[role]
        assert list(a) == list(b)  # the same keys, in the same order
        assert _shape(a) == _shape(b)
        for key in ("name", "run_type", "session_name", "extra", "tags", "events", "inputs"):
            assert a[key] == b[key], key
        assert a["outputs"] == b["outputs"]
        _ids_and_times(a)
        _ids_and_times(b)
        assert len(a["dotted_order"]) == len(b["dotted_order"])
    assert theirs["child"]["parent_run_id"] == theirs["server"]["id"]
    assert theirs["child"]["trace_id"] == theirs["server"]["trace_id"]
    assert theirs["child"]["dotted_order"].startswith(theirs["server"]["dotted_order"] + ".")
    if case == "root":
        assert theirs["server"]["trace_id"] == theirs["server"]["id"]
        assert "parent_run_id" not in theirs["server"]
    else:  # the caller's trace and run, exactly
        assert theirs["server"]["trace_id"] == ours["server"]["trace_id"]
        assert theirs["server"]["parent_run_id"] == ours["server"]["parent_run_id"]
    if case == "parent":  # the caller's part of the order is kept as it came
        assert theirs["server"]["dotted_order"].startswith(CALLER + ".")


def _outcome(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """What reading the incoming headers decided, clock and fresh ids left out."""
    if not runs:
        return {"traced": False}
    server = _by_name(runs)["server"]
    root = server["trace_id"] == server["id"]
    return {
        "traced": True,
        "root": root,
        "trace_id": None if root else server["trace_id"],
        "parent_run_id": server.get("parent_run_id"),
        "depth": server["dotted_order"].count("."),
        "session_name": server.get("session_name"),
        "address": server.get("address"),
        "extra": server["extra"],
        "tags": server["tags"],
    }


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_floor_reads_incoming_headers_as_tracestitch_does(exported: Any, case: str) -> None:
    from tracestitch._guard import set_strict

    previous = set_strict(False)  # hostile headers are counted, not raised
    try:
        ours = _outcome(exported("tracestitch", CASES[case]))
        theirs = _outcome(exported("floor", CASES[case]))
    finally:
        set_strict(previous)
    assert theirs == ours


def test_errors_and_bodies_are_recorded_alike(exported: Any) -> None:
    for handler in ("json", "fail"):
        ours = _by_name(exported("tracestitch", [], handler))["server"]
        theirs = _by_name(exported("floor", [], handler))["server"]
        assert list(ours) == list(theirs)
        assert ours["outputs"] == theirs["outputs"]
        assert ours.get("error") == theirs.get("error")
    assert theirs["error"] == "HTTP 503 Service Unavailable"


def test_headers_for_an_outgoing_call_match_what_the_worker_exports(exported: Any) -> None:
    """A run's id and order are computed on demand by the request thread exactly as the worker
    computes them later (no shared mutable state between the two)."""
    seen: dict[str, str] = {}

    async def endpoint(request: Any) -> Any:
        seen.update(floor.current_headers())
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/items/{item_id}", endpoint)])
    app.add_middleware(floor.FloorMiddleware, service="bench")
    sink = KeepSink()
    exporter = floor.install(sink)
    _request(app, CASES["parent"])
    assert exporter.flush(10)
    (server,) = sink.runs
    assert seen["langsmith-trace"] == server["dotted_order"]
    assert seen["traceparent"] == (
        f"00-{server['trace_id'].replace('-', '')}-{server['id'].replace('-', '')[16:]}-01"
    )
    assert "langsmith-metadata=%7B%22tenant%22%3A%22acme%22%7D" in seen["baggage"]
    exporter.shutdown(5)

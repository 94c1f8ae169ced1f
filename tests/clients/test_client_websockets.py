"""The websockets client hook (``create_connection=TracingClientConnection``, asyncio and sync)
against a real uvicorn serving a Starlette app under the ASGI middleware: a client run per
connection, child of the current run, whose handshake carries the trace the server's connection
run joins; who closed and how; refused handshakes and lost connections as errors; the policy;
hostile trace headers; internal faults. And aiohttp's ``ws_connect``, which goes through the
aiohttp hook's ``trace_config``."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import connect as aconnect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from servers import run_uvicorn
from tracestitch import _guard, continue_trace, trace
from tracestitch.clients import websockets as hook
from tracestitch.clients._common import ClientTracer
from tracestitch.clients.aiohttp import trace_config
from tracestitch.clients.websockets import (
    SyncTracingClientConnection,
    TracingClientConnection,
    connection_class,
)
from tracestitch.export.memory import RunCollector
from tracestitch.middleware.asgi import TracingMiddleware
from tracestitch.testing import capture_runs

SERVER = "WS /chat/{room}"
TRACE_HEADERS = ("langsmith-trace", "baggage", "traceparent", "tracestate")
TIMEOUT = 15.0
#: Trace headers a caller could hand-write that say nothing believable (test_conformance's).
HOSTILE = [
    {"langsmith-trace": "garbage", "baggage": "langsmith-metadata=%7Bnot-json"},
    {"langsmith-trace": "20990101T000000000000Z0190a4f3-7f2b-7c3d-8e4f-0123456789ab"},
    {"traceparent": "ff-" + "1" * 32 + "-" + "0" * 16 + "-01", "tracestate": "x" * 5000},
    {"baggage": "langsmith-project=" + "p" * 5000 + ",langsmith-tags=" + "t," * 500},
    {"langsmith-trace": "x" * 6000},
]


async def chat(websocket: WebSocket) -> None:
    """Answers each text with the trace headers of the handshake; ``bye`` closes with 4001,
    ``fail`` with 1011."""
    await websocket.accept()
    received = {k: v for k, v in websocket.headers.items() if k in TRACE_HEADERS}
    while True:
        try:
            text = await websocket.receive_text()
        except WebSocketDisconnect:
            return
        if text == "bye":
            await websocket.close(4001, "bye")
            return
        if text == "fail":
            await websocket.close(1011)
            return
        await websocket.send_text(json.dumps({"echo": text, "headers": received}))


async def reject(websocket: WebSocket) -> None:
    await websocket.close(4003)  # before accepting: uvicorn answers 403


def _app() -> Starlette:
    app = Starlette(routes=[WebSocketRoute("/chat/{room}", chat), WebSocketRoute("/no", reject)])
    app.add_middleware(TracingMiddleware, service="chat")
    return app


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with run_uvicorn(_app()) as base:
        yield base.replace("http://", "ws://")


@pytest.fixture
def runs() -> Iterator[RunCollector]:
    with capture_runs() as collected:
        yield collected


def settled(runs: RunCollector, count: int) -> RunCollector:
    """The runs once ``count`` have ended (the server's ends when its app returns, the client's
    when the connection closes: a moment after the caller saw the close; bounded wait)."""
    waiter = threading.Event()
    for _ in range(1500):
        if len(runs) >= count:
            break
        waiter.wait(0.01)
    assert len(runs) == count, [r.name for r in runs]
    return runs


def malformed(headers: dict[str, str]) -> list[str]:
    """The trace headers received that are not printable ASCII of a sane length."""
    return [
        k for k, v in headers.items() if not (v.isascii() and v.isprintable() and len(v) < 8192)
    ]


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def test_a_connection_in_a_run_is_a_client_run_the_server_joins(
    url: str, runs: RunCollector
) -> None:
    with (
        trace("handler"),
        connect(url + "/chat/7?token=s3cret", create_connection=SyncTracingClientConnection) as ws,
    ):
        ws.send("hi")
        answer = json.loads(ws.recv(timeout=TIMEOUT))
    settled(runs, 3)
    client = runs.one(f"WS 127.0.0.1:{port_of(url)}/chat/{{id}}")
    assert client.parent_run_id == runs.one("handler").id
    assert client.extra is not None and client.extra["span_kind"] == "client"
    assert client.inputs == {"method": "WS", "url": f"{url}/chat/7?token=[REDACTED]"}
    assert client.outputs == {"status_code": 101, "closed_by": "client", "close_code": 1000}
    assert client.error is None
    assert answer["headers"]["langsmith-trace"] == client.dotted_order
    server = runs.one(SERVER)
    assert server.parent_run_id == client.id and server.trace_id == client.trace_id


async def test_the_asyncio_client_and_a_server_that_closes(url: str, runs: RunCollector) -> None:
    with trace("handler"):
        async with aconnect(url + "/chat/8", create_connection=TracingClientConnection) as ws:
            await ws.send("hi")
            assert json.loads(await ws.recv())["echo"] == "hi"
            await ws.send("bye")
            with pytest.raises(ConnectionClosed):
                await ws.recv()
    settled(runs, 3)
    client = runs.one(f"WS 127.0.0.1:{port_of(url)}/chat/{{id}}")
    assert client.parent_run_id == runs.one("handler").id
    assert client.outputs == {
        "status_code": 101,
        "closed_by": "server",
        "close_code": 4001,
        "close_reason": "bye",
    }
    assert client.error is None  # an application's close code is its word, not a failure
    assert runs.one(SERVER).parent_run_id == client.id


def test_a_server_failing_with_1011_is_an_error(url: str, runs: RunCollector) -> None:
    with (
        trace("handler"),
        connect(url + "/chat/9", create_connection=SyncTracingClientConnection) as ws,
    ):
        ws.send("fail")
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=TIMEOUT)
    client = settled(runs, 3).one(f"WS 127.0.0.1:{port_of(url)}/chat/{{id}}")
    assert client.outputs is not None and client.outputs["close_code"] == 1011
    assert client.error == "WebSocket closed with 1011"


async def test_a_connection_lost_without_a_close_frame_is_an_error(runs: RunCollector) -> None:
    from websockets.asyncio.server import ServerConnection, serve

    async def drop(websocket: ServerConnection) -> None:
        await websocket.recv()
        websocket.transport.abort()  # no close frame: the client sees 1006

    async with serve(drop, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        with trace("handler"):
            async with aconnect(
                f"ws://127.0.0.1:{port}/feed", create_connection=TracingClientConnection
            ) as ws:
                await ws.send("hi")
                with pytest.raises(ConnectionClosed):
                    await ws.recv()
    client = settled(runs, 2).one(f"WS 127.0.0.1:{port}/feed")
    assert client.outputs == {"status_code": 101, "closed_by": None, "close_code": 1006}
    assert client.error == "WebSocket closed without a close frame"


def test_a_refused_handshake_is_the_runs_error(url: str, runs: RunCollector) -> None:
    with (
        trace("handler"),
        pytest.raises(InvalidStatus) as refused,
        connect(url + "/no", create_connection=SyncTracingClientConnection),
    ):
        pass
    assert refused.value.response.status_code == 403
    client = settled(runs, 3).one(f"WS 127.0.0.1:{port_of(url)}/no")
    assert client.outputs == {"status_code": 403}
    assert client.error is not None and "403" in client.error


async def test_nobody_listening_raises_as_untraced_and_makes_no_client_run(
    runs: RunCollector,
) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with trace("handler"), pytest.raises(ConnectionRefusedError):
        async with aconnect(f"ws://127.0.0.1:{port}/x", create_connection=TracingClientConnection):
            pass
    # websockets makes the connection object once the socket is open: a refused connection
    # never reaches the hook (the README says so), only the caller's run is recorded.
    assert [r.name for r in settled(runs, 1)] == ["handler"]


def test_outside_any_run_nothing_is_recorded_or_sent(url: str, runs: RunCollector) -> None:
    with connect(url + "/chat/1", create_connection=SyncTracingClientConnection) as ws:
        ws.send("hi")
        assert json.loads(ws.recv(timeout=TIMEOUT))["headers"] == {}
    assert runs.one(SERVER).parent_run_id is None  # a trace of the server's own
    assert len(settled(runs, 1)) == 1


def test_options_the_policy_and_the_callers_own_headers(url: str, runs: RunCollector) -> None:
    # A destination the policy refuses: the run is recorded, no trace header leaves, and the
    # caller's own langsmith-trace (ours, from an earlier hop) is stripped; its other headers
    # are sent as they were, and its header object is left unchanged.
    mine = {"langsmith-trace": "20240101T000000000000Zabc", "baggage": "vendor=x", "x-a": "b"}
    with (
        trace("handler"),
        connect(
            f"ws://partner.example:{port_of(url)}/chat/2",
            create_connection=connection_class(sync=True, propagate_to=["*.corp.example"]),
            additional_headers=mine,
            sock=socket.create_connection(("127.0.0.1", port_of(url))),
        ) as ws,
    ):
        ws.send("hi")
        received = json.loads(ws.recv(timeout=TIMEOUT))["headers"]
    assert received == {"baggage": "vendor=x"}
    assert mine["langsmith-trace"] == "20240101T000000000000Zabc"
    client = settled(runs, 3).one(f"WS partner.example:{port_of(url)}/chat/{{id}}")
    assert runs.one(SERVER).parent_run_id is None
    assert client.parent_run_id == runs.one("handler").id


@pytest.mark.parametrize("headers", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_trace_headers_leave_the_connection_as_it_was(
    url: str, runs: RunCollector, headers: dict[str, str]
) -> None:
    # Hand-written trace headers next to the hook: ours replace them, the connection works.
    with (
        trace("handler"),
        connect(
            url + "/chat/3",
            create_connection=SyncTracingClientConnection,
            additional_headers=headers,
        ) as ws,
    ):
        ws.send("hi")
        received = json.loads(ws.recv(timeout=TIMEOUT))["headers"]
    client = settled(runs, 3).one(f"WS 127.0.0.1:{port_of(url)}/chat/{{id}}")
    assert received["langsmith-trace"] == client.dotted_order
    assert runs.one(SERVER).parent_run_id == client.id
    assert malformed(received) == []


@pytest.mark.parametrize("headers", HOSTILE, ids=range(len(HOSTILE)))
async def test_a_run_continued_from_hostile_headers_sends_well_formed_ones(
    url: str, runs: RunCollector, headers: dict[str, str]
) -> None:
    # What a service was sent (hostile), continued, then passed on over a WebSocket.
    with continue_trace(headers, name="consumer"):
        async with aconnect(url + "/chat/4", create_connection=TracingClientConnection) as ws:
            await ws.send("hi")
            received = json.loads(await ws.recv())["headers"]
    client = settled(runs, 3).one(f"WS 127.0.0.1:{port_of(url)}/chat/{{id}}")
    assert client.parent_run_id == runs.one("consumer").id
    assert malformed(received) == []
    assert runs.one(SERVER).parent_run_id == client.id


def test_an_internal_error_leaves_the_connection_untraced(
    url: str, runs: RunCollector, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("bug in tracestitch")

    before = _guard.internal_errors().get("clients.begin", 0)
    previous = _guard.set_strict(False)
    try:
        monkeypatch.setattr(ClientTracer, "_begin", broken)
        with (
            trace("handler"),
            connect(url + "/chat/5", create_connection=SyncTracingClientConnection) as ws,
        ):
            ws.send("hi")
            assert json.loads(ws.recv(timeout=TIMEOUT))["headers"] == {}
        monkeypatch.undo()
        monkeypatch.setattr(hook, "_closed", broken)
        with (
            trace("again"),
            connect(url + "/chat/5", create_connection=SyncTracingClientConnection) as ws,
        ):
            ws.send("hi")
            assert "langsmith-trace" in json.loads(ws.recv(timeout=TIMEOUT))["headers"]
    finally:
        _guard.set_strict(previous)
    assert _guard.internal_errors()["clients.begin"] == before + 1
    assert _guard.internal_errors()["clients.websockets.finish"] >= 1
    # The first connection untraced (the server's run a root); the second's client run kept,
    # without the outputs its recording failed to make.
    settled(runs, 5)
    client = runs.one(f"WS 127.0.0.1:{port_of(url)}/chat/{{id}}")
    assert client.parent_run_id == runs.one("again").id and not client.outputs
    assert [r.parent_run_id for r in runs if r.name == SERVER].count(None) == 1


async def test_aiohttp_ws_connect_goes_through_the_trace_config(
    url: str, runs: RunCollector
) -> None:
    # aiohttp's ws_connect sends its handshake as a request, through the session's trace
    # config: a client run for the handshake (ended at the 101), whose trace the server joins.
    base = url.replace("ws://", "http://")
    async with aiohttp.ClientSession(trace_configs=[trace_config()]) as session:
        with trace("handler"):
            async with session.ws_connect(base + "/chat/6") as ws:
                await ws.send_str("hi")
                answer = json.loads((await ws.receive(timeout=TIMEOUT)).data)
    client = settled(runs, 3).one(f"GET 127.0.0.1:{port_of(url)}/chat/{{id}}")
    assert client.outputs is not None and client.outputs["status_code"] == 101
    assert answer["headers"]["langsmith-trace"] == client.dotted_order
    assert runs.one(SERVER).parent_run_id == client.id


async def test_concurrent_connections_each_under_their_own_run(
    url: str, runs: RunCollector
) -> None:
    async def one(n: int) -> None:
        with trace(f"handler {n}"):
            async with aconnect(
                url + f"/chat/{n}", create_connection=TracingClientConnection
            ) as ws:
                await ws.send("hi")
                await ws.recv()

    await asyncio.gather(*(one(n) for n in range(4)))
    settled(runs, 12)
    for n in range(4):
        (client,) = runs.children(runs.one(f"handler {n}"))
        (server,) = runs.children(client)
        assert server.name == SERVER

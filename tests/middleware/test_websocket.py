"""WebSocket connections under the ASGI middleware, with a real uvicorn on 127.0.0.1 and the real
``websockets`` client: one run per connection in the caller's trace, named by its route, current
while the app handles it; messages as events or child runs; who closed and how; rejections,
errors, hostile handshakes, exclusion, sampling, tracing off, internal faults.

The promises of ``test_conformance`` (never break, names, errors, exclusion, sampling, context
isolation) held for a connection instead of a request, with its hostile headers.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

import langsmith
import pytest
from test_conformance import HOSTILE
from websockets.asyncio.client import connect as aconnect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol
from ws_app import APP_CLOSE, INTERNAL_ERROR, websocket_app

from servers import run_uvicorn
from tracestitch import RunTree, _guard
from tracestitch.context import tracing_context
from tracestitch.export.memory import RunCollector
from tracestitch.middleware import WebSocketOptions
from tracestitch.middleware import _websocket as websocket_module
from tracestitch.middleware._common import ServerTracer
from tracestitch.propagation import stats
from tracestitch.testing import capture_runs

OPTIONS: dict[str, Any] = {"service": "ws", "exclude": ["/health"], "trace_id_header": "x-trace-id"}
CHAT = "WS /chat/{room}"
TIMEOUT = 15.0


def settled(runs: RunCollector, count: int) -> RunCollector:
    """The runs once ``count`` have ended: a connection's run ends when the app returns, which
    may be a moment after the client saw the close (bounded wait, no fixed sleep)."""
    done = threading.Event()
    for _ in range(1500):
        if len(runs) >= count:
            break
        done.wait(0.01)
    assert len(runs) == count, [r.name for r in runs]
    return runs


def ask(ws: ClientConnection, text: str) -> dict[str, Any]:
    ws.send(text)
    answer: dict[str, Any] = json.loads(ws.recv(timeout=TIMEOUT))
    return answer


def closed_with(ws: ClientConnection) -> int | None:
    """The close code the server sent, once the connection is closed."""
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=TIMEOUT)
    return closed.value.rcvd.code if closed.value.rcvd is not None else None


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with run_uvicorn(websocket_app(**OPTIONS)) as base:
        yield base.replace("http://", "ws://")


@pytest.fixture
def runs() -> Iterator[RunCollector]:
    with capture_runs() as collected:
        yield collected


def test_a_connection_is_one_run_in_the_callers_trace(url: str, runs: RunCollector) -> None:
    caller = langsmith.RunTree(name="caller", run_type="chain")
    with connect(url + "/chat/7?token=s3cret", additional_headers=caller.to_headers()) as ws:
        assert ws.response.headers["x-trace-id"] == str(caller.trace_id)
        first = ask(ws, "hello")
        assert ask(ws, "again")["echo"] == "AGAIN"
        ws.send("bye")
        assert closed_with(ws) == APP_CLOSE
    # The handler ran with the connection's run current, in the caller's trace.
    assert first == {"echo": "HELLO", "trace": str(caller.trace_id), "run": CHAT}
    run = settled(runs, 3).one(CHAT)
    assert run.parent_run_id == caller.id and run.trace_id == caller.trace_id
    assert run.inputs["method"] == "WS" and run.inputs["path"] == "/chat/7"
    assert run.inputs["query"] == "token=[REDACTED]"
    assert run.metadata["service"] == "ws"
    assert run.extra is not None and run.extra["span_kind"] == "server"
    assert run.extra["route"] == "/chat/{room}"
    assert run.outputs == {
        "accepted": True,
        "closed_by": "server",
        "close_code": APP_CLOSE,
        "close_reason": "bye",
        "messages_received": 3,
        "messages_sent": 2,
    }
    assert run.error is None
    assert {c.name for c in runs.children(run)} == {"shout"}
    # Messages are events with their sizes, not their contents.
    kinds = [(e["name"], e["kwargs"]["type"]) for e in run.events]
    assert kinds == [
        ("websocket.receive", "text"),
        ("websocket.send", "text"),
        ("websocket.receive", "text"),
        ("websocket.send", "text"),
        ("websocket.receive", "text"),
    ]
    assert run.events[0]["kwargs"] == {"type": "text", "size": len("hello")}


def test_a_caller_whose_clock_runs_ahead_gets_events_after_the_connections_start(
    url: str, runs: RunCollector
) -> None:
    ahead = datetime.now(timezone.utc) + timedelta(seconds=30)
    caller = RunTree("caller", start_time=ahead)
    with connect(url + "/chat/1", additional_headers=caller.to_headers()) as ws:
        ask(ws, "x")
    run = settled(runs, 2).one(CHAT)
    assert run.start_time >= ahead
    times = [datetime.fromisoformat(e["time"]) for e in run.events]
    assert len(times) == 2 and run.start_time <= times[0] <= times[1]
    assert run.end_time is not None and times[1] <= run.end_time


def test_a_w3c_caller_is_joined_too(url: str, runs: RunCollector) -> None:
    caller = RunTree("otel-caller")
    headers = {"traceparent": caller.to_headers()["traceparent"]}
    with connect(url + "/chat/1", additional_headers=headers) as ws:
        assert ask(ws, "x")["trace"] == str(caller.trace_id)
    run = settled(runs, 2).one(CHAT)
    assert run.trace_id == caller.trace_id and run.parent_run_id is not None


def test_a_route_under_a_mount_is_named_by_its_whole_template(url: str, runs: RunCollector) -> None:
    with connect(url + "/v1/rooms/9", subprotocols=[Subprotocol("chat.v1")]) as ws:
        assert ask(ws, "x")["run"] == "WS /v1/rooms/{room}"
    run = settled(runs, 2).one("WS /v1/rooms/{room}")
    assert run.parent_run_id is None  # a new trace
    assert run.inputs["subprotocols"] == ["chat.v1"]  # those the client offered


def test_the_client_closing_is_recorded(url: str, runs: RunCollector) -> None:
    with connect(url + "/chat/2") as ws:
        ask(ws, "x")
    run = settled(runs, 2).one(CHAT)
    assert run.outputs is not None and run.error is None
    assert (run.outputs["closed_by"], run.outputs["close_code"]) == ("client", 1000)


def test_a_client_that_drops_the_connection_is_recorded(url: str, runs: RunCollector) -> None:
    async def drop() -> None:
        async with aconnect(url + "/chat/3") as ws:
            await ws.send("x")
            await asyncio.wait_for(ws.recv(), TIMEOUT)
            ws.transport.abort()  # no close frame: the TCP connection just goes

    asyncio.run(drop())
    run = settled(runs, 2).one(CHAT)
    assert run.outputs is not None and run.error is None
    # The code the server reports for a connection lost without a close frame: uvicorn's
    # websockets-sansio protocol (its default) says 1005, its other protocols 1006.
    assert run.outputs["closed_by"] == "client" and run.outputs["close_code"] in (1005, 1006)


def test_an_exception_in_the_app_is_the_runs_error(url: str, runs: RunCollector) -> None:
    with connect(url + "/chat/4") as ws:
        ask(ws, "x")
        ws.send("boom")
        closed_with(ws)  # uvicorn drops the connection after the app raised
    run = settled(runs, 2).one(CHAT)
    assert run.error is not None and "boom" in run.error
    assert run.outputs is not None and run.outputs["accepted"] is True


def test_a_server_closing_with_1011_is_an_error(url: str, runs: RunCollector) -> None:
    with connect(url + "/chat/4") as ws:
        ws.send("fail")
        assert closed_with(ws) == INTERNAL_ERROR
    run = settled(runs, 1).one(CHAT)
    assert run.error == "WebSocket closed with 1011 (internal error)"


def test_the_disconnect_starlette_raises_after_the_client_left_is_no_error(
    url: str, runs: RunCollector
) -> None:
    with connect(url + "/strict") as ws:
        ask(ws, "x")
    run = settled(runs, 2).one("WS /strict")
    assert run.error is None
    assert run.outputs is not None and run.outputs["closed_by"] == "client"


def test_an_app_returning_without_closing_is_closed_by_the_server(
    url: str, runs: RunCollector
) -> None:
    with connect(url + "/chat/5") as ws:
        ws.send("leave")
        closed_with(ws)
    run = settled(runs, 1).one(CHAT)
    assert run.outputs is not None and run.error is None
    assert (run.outputs["closed_by"], run.outputs["close_code"]) == ("server", None)


@pytest.mark.parametrize(
    ("path", "status", "recorded"),
    [
        ("/reject", 403, {"close_code": 4003, "closed_by": "server"}),  # closed before accept
        ("/deny", 401, {"status_code": 401}),  # a denial response
    ],
)
def test_a_refused_handshake_is_a_rejection(
    url: str, runs: RunCollector, path: str, status: int, recorded: dict[str, Any]
) -> None:
    with pytest.raises(InvalidStatus) as refused:
        connect(url + path)
    assert refused.value.response.status_code == status
    run = settled(runs, 1).one(f"WS {path}")
    assert run.error is None and run.outputs is not None
    assert run.outputs["rejected"] is True and run.outputs["accepted"] is False
    assert recorded.items() <= run.outputs.items()


@pytest.mark.parametrize("headers", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_handshake_headers_never_change_the_connection(
    url: str, runs: RunCollector, headers: dict[str, str]
) -> None:
    with connect(url + "/chat/6", additional_headers=headers) as ws:
        assert ask(ws, "x")["echo"] == "X"
    run = settled(runs, 2).one(CHAT)
    assert run.parent_run_id is None  # none of those is a parent to believe: a new trace
    if {"langsmith-trace", "traceparent"} & set(headers):  # a parent header, ignored: counted
        assert sum(stats().values()) > 0


def test_an_internal_error_never_reaches_the_app(
    url: str, runs: RunCollector, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("bug in tracestitch")

    before = dict(_guard.internal_errors())
    previous = _guard.set_strict(False)
    try:
        monkeypatch.setattr(ServerTracer, "start", broken)
        with connect(url + "/chat/8") as ws:
            assert ask(ws, "x") == {"echo": "X", "trace": None, "run": None}
        monkeypatch.undo()
        monkeypatch.setattr(websocket_module, "_details", broken)  # every message's recording
        with connect(url + "/chat/8") as ws:
            assert ask(ws, "y")["echo"] == "Y"
            ws.send("bye")
            assert closed_with(ws) == APP_CLOSE
    finally:
        _guard.set_strict(previous)
    errors = _guard.internal_errors()
    site = "middleware.asgi.websocket"
    assert errors[f"{site}.start"] == before.get(f"{site}.start", 0) + 1
    assert errors[f"{site}.receive"] == before.get(f"{site}.receive", 0) + 2
    assert errors[f"{site}.send"] == before.get(f"{site}.send", 0) + 1
    # The first connection ran untraced (its "shout" a root), the second still traced and closed.
    run = settled(runs, 3).one(CHAT)
    assert run.outputs is not None and run.outputs["close_code"] == APP_CLOSE


def test_an_excluded_path_makes_no_runs_at_all(url: str, runs: RunCollector) -> None:
    caller = RunTree("caller")
    with connect(url + "/health", additional_headers=caller.to_headers()) as ws:
        assert ask(ws, "x") == {"echo": "X", "trace": None, "run": None}
    with connect(url + "/chat/1") as ws:  # then one traced connection, to wait on
        ask(ws, "x")
    assert {r.name for r in settled(runs, 2)} == {CHAT, "shout"}


def test_concurrent_connections_each_see_their_own_run(url: str, runs: RunCollector) -> None:
    callers = [RunTree(f"caller-{i}") for i in range(10)]

    async def chat(i: int) -> list[dict[str, Any]]:
        async with aconnect(f"{url}/chat/{i}", additional_headers=callers[i].to_headers()) as ws:
            answers = []
            for n in range(3):
                await ws.send(f"{i}-{n}")
                answers.append(json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT)))
            return answers

    async def all_of_them() -> list[list[dict[str, Any]]]:
        return list(await asyncio.gather(*(chat(i) for i in range(10))))

    for caller, answers in zip(callers, asyncio.run(all_of_them()), strict=True):
        assert {a["trace"] for a in answers} == {str(caller.trace_id)}
    connections = {r.parent_run_id: r for r in settled(runs, 40).named(CHAT)}
    for i, caller in enumerate(callers):
        run = connections[caller.id]
        assert run.inputs["path"] == f"/chat/{i}"
        assert sorted(c.inputs["text"] for c in runs.children(run)) == [
            f"{i}-{n}" for n in range(3)
        ]


@contextmanager
def serving(*wrap: Any, **options: Any) -> Iterator[str]:
    """The app under its own server, with these options: its ``ws://`` base URL."""
    with run_uvicorn(websocket_app(*wrap, **{**OPTIONS, **options})) as base:
        yield base.replace("http://", "ws://")


def test_messages_as_child_runs_nest_what_their_handling_calls(runs: RunCollector) -> None:
    options = WebSocketOptions(messages="runs")
    with serving(websocket=options) as base, connect(base + "/chat/1") as ws:
        answers = [ask(ws, "one"), ask(ws, "two")]
        ws.send("boom")  # the app raises while handling this one
        closed_with(ws)
    assert [a["run"] for a in answers] == ["websocket.receive"] * 2
    run = settled(runs, 6).one(CHAT)
    messages = runs.children(run)
    assert [m.name for m in messages] == ["websocket.receive"] * 3
    assert [m.inputs for m in messages] == [{"type": "text", "size": 3}] * 2 + [
        {"type": "text", "size": 4}
    ]
    for message in messages[:2]:
        assert message.error is None
        assert [c.name for c in runs.children(message)] == ["shout"]
        assert [e["name"] for e in message.events] == ["websocket.send"]
    assert messages[2].error is not None and "boom" in messages[2].error
    assert run.error is not None and "boom" in run.error
    assert run.events == [] and run.outputs is not None
    assert run.outputs["messages_received"] == 3


def test_events_are_bounded_and_counted_and_content_is_recorded_only_if_asked(
    runs: RunCollector,
) -> None:
    options = WebSocketOptions(max_events=3, record_content=True)
    with serving(websocket=options) as base, connect(base + "/chat/1") as ws:
        for n in range(5):
            ask(ws, f"m{n}")
    run = settled(runs, 6).one(CHAT)
    assert len(run.events) == 3 and run.outputs is not None
    assert run.outputs["events_dropped"] == 5 + 5 - 3
    assert run.events[0]["kwargs"] == {"type": "text", "size": 2, "content": "m0"}


def test_messages_off_keeps_only_the_counts(runs: RunCollector) -> None:
    off = WebSocketOptions(messages="off")
    with serving(websocket=off) as base, connect(base + "/chat/1") as ws:
        ask(ws, "x")
    run = settled(runs, 2).one(CHAT)
    assert run.events == [] and run.outputs is not None
    assert (run.outputs["messages_received"], run.outputs["messages_sent"]) == (1, 1)


@pytest.mark.parametrize(
    ("bad", "says"), [({"messages": "all"}, "messages"), ({"max_events": -1}, "max_events")]
)
def test_bad_websocket_options_fail_when_the_app_is_built(bad: dict[str, Any], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        WebSocketOptions(**bad)


def test_a_sampled_out_connection_makes_no_runs(runs: RunCollector) -> None:
    with serving(sample_rate=0.0) as base, connect(base + "/chat/1") as ws:
        assert ask(ws, "x")["echo"] == "X"
    assert len(runs) == 0


def test_excluding_the_ws_method_leaves_every_connection_untraced(runs: RunCollector) -> None:
    with (
        serving(exclude_methods=["OPTIONS", "HEAD", "WS"]) as base,
        connect(base + "/chat/1") as ws,
    ):
        assert ask(ws, "x") == {"echo": "X", "trace": None, "run": None}
    assert len(runs) == 0


def test_where_tracing_is_off_a_caller_cannot_turn_it_on(runs: RunCollector) -> None:
    def off(app: Any) -> Any:
        async def wrapped(scope: Any, receive: Any, send: Any) -> None:
            with tracing_context(enabled=False):
                await app(scope, receive, send)

        return wrapped

    caller = RunTree("caller")
    with (
        serving(off) as base,
        connect(base + "/chat/1", additional_headers=caller.to_headers()) as ws,
    ):
        assert ask(ws, "x") == {"echo": "X", "trace": None, "run": None}
        assert "x-trace-id" not in ws.response.headers
    assert len(runs) == 0

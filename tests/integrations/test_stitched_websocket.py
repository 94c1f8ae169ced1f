"""One trace across a WebSocket hop, as a user meets it: service A (FastAPI under uvicorn, a
fresh process configured only through the environment) handles a request by opening a
WebSocket to service B (Starlette under uvicorn, the middleware tracing its WebSocket route,
messages as child runs) through the ``websockets`` client hook and exchanging messages; both
report to the real ``tracestitch serve``, which must hold one tree with no orphans:

    POST /ask/{room} (A) → WS 127.0.0.1:<port>/chat/{id} (A's client run)
      → WS /chat/{room} (B's connection run) → websocket.receive (per message) → answer
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from integration_helpers import Collector, Service, one_tree, serve_uvicorn, service, traced_env

#: Service B: answers each message through a traced function; prints ``ready <url>``.
CHAT = """

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute

from tracestitch import traceable
from tracestitch.middleware import WebSocketOptions
from tracestitch.middleware.asgi import TracingMiddleware


@traceable(run_type="tool")
def answer(question):
    return question.upper()


async def chat(websocket):
    await websocket.accept()
    async for question in websocket.iter_text():  # until the client closes
        await websocket.send_text(answer(question))


app = Starlette(routes=[WebSocketRoute("/chat/{room}", chat)])
app.add_middleware(TracingMiddleware, service="chat", websocket=WebSocketOptions(messages="runs"))
""" + serve_uvicorn(scheme="ws")

#: Service A: a request that asks B its questions over one WebSocket.
FRONT = """
import os

from fastapi import FastAPI
from websockets.asyncio.client import connect

from tracestitch.clients.websockets import TracingClientConnection
from tracestitch.middleware.asgi import TracingMiddleware

app = FastAPI()
app.add_middleware(TracingMiddleware, service="front", trace_id_header="x-trace-id")


@app.post("/ask/{room}")
async def ask(room: int, questions: list[str]):
    answers = []
    url = f"{os.environ['CHAT']}/chat/{room}"
    async with connect(url, create_connection=TracingClientConnection) as ws:
        for question in questions:
            await ws.send(question)
            answers.append(await ws.recv())
    return {"answers": answers}

""" + serve_uvicorn()


@pytest.fixture(scope="module")
def services(
    collector: Collector, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """Both services; yields their URLs (A's, B's)."""
    cwd: Path = tmp_path_factory.mktemp("stitched-ws")
    env = traced_env(collector.url)
    chat = Service([sys.executable, "-c", CHAT], env, cwd, "ready ")
    try:
        front = Service([sys.executable, "-c", FRONT], {**env, "CHAT": chat.detail}, cwd, "ready ")
        try:
            yield front.detail, chat.detail
        finally:
            front.stop()
    finally:
        chat.stop()


def test_a_websocket_hop_is_one_tree(services: tuple[str, str], collector: Collector) -> None:
    front, chat = services
    response = httpx.post(f"{front}/ask/7", json=["hi", "again"], timeout=30)
    assert response.status_code == 200, response.text
    assert response.json() == {"answers": ["HI", "AGAIN"]}
    trace_id = response.headers["x-trace-id"]

    runs = collector.wait_for_runs(trace_id, 7)
    children = one_tree(runs, trace_id, 7)
    (root,) = children[None]
    assert root["name"] == "POST /ask/{room}"
    (client,) = children[root["id"]]
    assert client["name"] == f"WS {chat.removeprefix('ws://')}/chat/{{id}}"
    assert client["extra"]["span_kind"] == "client"
    assert client["outputs"] == {"status_code": 101, "closed_by": "client", "close_code": 1000}
    (connection,) = children[client["id"]]
    assert connection["name"] == "WS /chat/{room}"
    assert connection["outputs"]["closed_by"] == "client"
    assert connection["outputs"]["messages_received"] == 2
    messages = sorted(children[connection["id"]], key=lambda r: r["start_time"])
    assert [m["name"] for m in messages] == ["websocket.receive"] * 2
    for message, question in zip(messages, ["hi", "again"], strict=True):
        (answer,) = children[message["id"]]
        assert answer["name"] == "answer" and answer["inputs"] == {"question": question}

    # Each service names its own runs (the client run is A's); no name travels over the hop.
    assert service(root) == service(client) == "front"
    assert service(connection) == "chat" and {service(m) for m in messages} == {"chat"}
    assert all(r["error"] is None for r in runs)

"""The Starlette app the WebSocket tests run under a real uvicorn (``test_websocket``):

- ``/chat/{room}`` (and ``/v1/rooms/{room}``, under a mount): accepts, then for each text
  message calls the traced ``shout`` and answers ``{"echo", "trace", "run"}`` (the trace and
  run name its handler saw as current); ``"bye"`` closes with 4001, ``"fail"`` with 1011,
  ``"boom"`` raises, ``"leave"`` returns without closing; a client that leaves ends it;
- ``/strict``: echoes, letting ``WebSocketDisconnect`` propagate when the client leaves;
- ``/reject``: closes before accepting (uvicorn answers 403); ``/deny``: a denial response
  (401); ``/health``: echoes through ``shout`` (excluded by the tests' options).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from tracestitch.context import get_current_run_tree
from tracestitch.middleware.asgi import TracingMiddleware
from tracestitch.tracing import traceable

APP_CLOSE = 4001
INTERNAL_ERROR = 1011


@traceable
def shout(text: str) -> str:
    return text.upper()


def _answer(text: str) -> str:
    echo = shout(text)
    run = get_current_run_tree()
    return json.dumps(
        {
            "echo": echo,
            "trace": str(run.trace_id) if run is not None else None,
            "run": run.name if run is not None else None,
        }
    )


async def chat(websocket: WebSocket) -> None:
    await websocket.accept()
    while True:
        try:
            text = await websocket.receive_text()
        except WebSocketDisconnect:
            return
        if text == "bye":
            await websocket.close(APP_CLOSE, "bye")
            return
        if text == "boom":
            raise RuntimeError("boom")
        if text == "fail":  # the server's own failure, said with the close code
            await websocket.close(INTERNAL_ERROR)
            return
        if text == "leave":
            return
        await websocket.send_text(_answer(text))


async def strict(websocket: WebSocket) -> None:
    await websocket.accept()
    while True:
        await websocket.send_text(_answer(await websocket.receive_text()))


async def reject(websocket: WebSocket) -> None:
    await websocket.close(4003)


async def deny(websocket: WebSocket) -> None:
    await websocket.send_denial_response(PlainTextResponse("no", status_code=401))


def websocket_app(wrap: Any = None, **options: Any) -> Any:
    """The app with ``TracingMiddleware(**options)``; ``wrap`` (if given) wraps the result."""
    app = Starlette(
        routes=[
            WebSocketRoute("/chat/{room}", chat),
            WebSocketRoute("/strict", strict),
            WebSocketRoute("/reject", reject),
            WebSocketRoute("/deny", deny),
            WebSocketRoute("/health", strict),
            Mount("/v1", routes=[WebSocketRoute("/rooms/{room}", chat)]),
        ]
    )
    app.add_middleware(TracingMiddleware, **options)
    return app if wrap is None else wrap(app)

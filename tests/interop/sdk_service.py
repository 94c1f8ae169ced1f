"""A service instrumented with the LangSmith Python SDK alone (its ASGI middleware and
``@traceable``), configured by the environment as a user runs it; prints ``listening on URL``
once bound. ``GET /work`` makes one run, ``sdk-handler``; ``GET /flush`` flushes the SDK."""

from __future__ import annotations

import asyncio
import socket

import langsmith
import uvicorn
from langsmith.middleware import TracingMiddleware
from langsmith.run_trees import get_cached_client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


@langsmith.traceable(name="sdk-handler")
def handle() -> dict[str, str]:
    return {"ok": "yes"}


async def work(request: Request) -> JSONResponse:
    return JSONResponse(handle())


async def flush(request: Request) -> JSONResponse:
    get_cached_client().flush()  # the client @traceable sends through
    return JSONResponse({"flushed": True})


def main() -> None:
    app = Starlette(routes=[Route("/work", work), Route("/flush", flush)])
    # Bound before the server starts, so the port can be told as soon as it is known.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    print(f"listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    server = uvicorn.Server(uvicorn.Config(TracingMiddleware(app), log_level="warning"))
    asyncio.run(server.serve(sockets=[sock]))


if __name__ == "__main__":
    main()

"""Real servers on 127.0.0.1 with ephemeral ports, for tests that cross a socket.

Each helper is a context manager yielding the base URL; it returns only once the server accepts
connections (it waits on the server's own readiness signal, never on a sleep) and stops the
server on exit.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

READY_TIMEOUT = 15.0


@contextmanager
def run_uvicorn(app: Any, **config: Any) -> Iterator[str]:
    """An ASGI app under a real uvicorn server in a background thread."""
    import uvicorn

    config = {"host": "127.0.0.1", "port": 0, "log_level": "warning", "lifespan": "on", **config}
    cfg = uvicorn.Config(app, **config)
    server = uvicorn.Server(cfg)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    try:
        _wait(lambda: server.started or not thread.is_alive(), "uvicorn")
        if not server.started:
            raise RuntimeError("uvicorn did not start")
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(READY_TIMEOUT)


@contextmanager
def run_aiohttp(app: Any) -> Iterator[str]:
    """An aiohttp ``web.Application`` under its ``AppRunner`` in a background event loop."""
    from aiohttp import web

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="aiohttp-test", daemon=True)
    thread.start()
    runner = web.AppRunner(app)

    async def start() -> int:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    try:
        port = asyncio.run_coroutine_threadsafe(start(), loop).result(READY_TIMEOUT)
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(READY_TIMEOUT)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(READY_TIMEOUT)
        loop.close()


@contextmanager
def run_wsgi(app: Any, ssl_context: ssl.SSLContext | None = None) -> Iterator[str]:
    """A WSGI app under werkzeug's threaded server (a real HTTP/1.1 server, one thread per
    request); over TLS with ``ssl_context`` (the URL is then ``https://``)."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True, ssl_context=ssl_context)
    thread = threading.Thread(target=server.serve_forever, name="wsgi-test", daemon=True)
    thread.start()
    try:
        scheme = "https" if ssl_context is not None else "http"
        yield f"{scheme}://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(READY_TIMEOUT)
        server.server_close()


def _wait(predicate: Any, what: str) -> None:
    event = threading.Event()
    for _ in range(int(READY_TIMEOUT / 0.01)):
        if predicate():
            return
        event.wait(0.01)  # polling a readiness flag the server sets itself
    raise TimeoutError(f"{what} not ready after {READY_TIMEOUT}s")

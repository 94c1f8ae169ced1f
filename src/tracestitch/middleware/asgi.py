"""Pure ASGI middleware: one run per HTTP request (Starlette, FastAPI, any ASGI app).

Written as Starlette writes its own middleware (never ``BaseHTTPMiddleware``, which runs the app
in another task and so loses context variables). Needs no framework: Starlette's router leaves
the matched route in ``scope["route"]`` (see :mod:`._starlette_routes` for mounts).
"""

from __future__ import annotations

from typing import Any

from tracestitch.instrument import attach, detach, report, stopping
from tracestitch.middleware._common import (
    ASGIApp,
    Message,
    MiddlewareOptions,
    Receive,
    Scope,
    Send,
    ServerTracer,
    Untraced,
    resolve_options,
    start_asgi_run,
)
from tracestitch.middleware._exchange import (
    Exchange,
    flush_at_shutdown,
    flush_if_stopping_async,
    untraced,
)
from tracestitch.middleware._starlette_routes import StarletteRoutes
from tracestitch.middleware._websocket import WebSocketTracer

__all__ = ["TracingMiddleware"]


_SHUTDOWN_DONE = frozenset(("lifespan.shutdown.complete", "lifespan.shutdown.failed"))


class TracingMiddleware:
    """Traces every HTTP request as a run named ``"{METHOD} {route}"``, and every WebSocket
    connection as one named ``"WS {route}"`` (its messages as set by ``websocket=``); lifespan
    shutdown flushes the exporter::

        app.add_middleware(TracingMiddleware, service="checkout", exclude=["/health"])

    Keyword options are those of :class:`tracestitch.middleware.MiddlewareOptions` (or pass
    ``options=MiddlewareOptions(...)``).
    """

    def __init__(
        self, app: ASGIApp, *, options: MiddlewareOptions | None = None, **kwargs: Any
    ) -> None:
        self.app = app
        options = resolve_options(options, kwargs)
        self.options = options
        self._tracer = ServerTracer(options, app)
        self._routes = StarletteRoutes(app)
        header = self._tracer.trace_header
        self._trace_header = header.encode("latin-1") if header else None
        self._websocket = WebSocketTracer(app, self._tracer, self._routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http":
            if kind == "lifespan":
                await self.app(scope, receive, self._lifespan_send(send))
            elif kind == "websocket":
                await self._websocket(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        exchange: Any = None
        try:
            exchange = self._begin(scope, receive, send)
        except Exception as exc:
            report("middleware.asgi.start", exc)
        if exchange is None:
            await self.app(scope, receive, send)
            return
        if not isinstance(exchange, _Exchange):
            with untraced(exchange):
                await self.app(scope, receive, send)
            return
        token = attach(exchange.run)
        try:
            await self.app(scope, exchange.receive, exchange.send)
        except Exception as exc:
            exchange.end(exc)
            if stopping():
                await flush_if_stopping_async("middleware.asgi")
            raise
        except BaseException as exc:  # cancelled: nothing more to await
            exchange.end(exc)
            raise
        finally:
            # The run stays current until the app returns, so Starlette background tasks
            # (run after the last body chunk) still nest under it.
            detach(token)
        if not exchange.done:  # the app returned before the last chunk
            exchange.end(None, incomplete=True)
        if stopping():  # SIGTERM came: out before the server may re-raise it (no lifespan)
            await flush_if_stopping_async("middleware.asgi")

    def _begin(self, scope: Scope, receive: Receive, send: Send) -> Any:
        tracer = self._tracer
        method: str = scope["method"]
        run = start_asgi_run(tracer, scope, method)
        if run is None or isinstance(run, Untraced):
            return run
        exchange = _Exchange(tracer, run, scope, method)
        exchange._receive = receive
        exchange._send = send
        exchange._header = self._trace_header
        exchange._routes = self._routes
        exchange.root_path = scope.get("root_path", "")
        # Starlette's app as it was when we were called: a mounted sub-app replaces it later.
        exchange.app = scope.get("app")
        return exchange

    def _lifespan_send(self, send: Send) -> Send:
        async def lifespan_send(message: Message) -> None:
            # After the app's own shutdown handlers (which may still make runs), before the
            # server is told it may exit.
            if message.get("type") in _SHUTDOWN_DONE:
                await flush_at_shutdown(self.options.flush_timeout, "middleware.asgi")
            await send(message)

        return lifespan_send


class _Exchange(Exchange):
    """Wraps ``send`` to see the status and the last body chunk, ``receive`` to see the
    client leave."""

    __slots__ = ("_header", "_receive", "_routes", "_send", "app", "root_path")
    site = "middleware.asgi"
    _header: bytes | None
    _receive: Receive
    _routes: StarletteRoutes
    _send: Send
    app: Any
    root_path: str

    def route_template(self) -> str | None:
        return self._routes.template(self.request, self.root_path, self.app)

    async def send(self, message: Message) -> None:
        final = False
        if not self.done:
            try:
                kind = message["type"]
                if kind == "http.response.body":
                    body = message.get("body")
                    if body:
                        self.size += len(body)
                    final = not message.get("more_body", False)
                elif kind == "http.response.start":
                    self.status = message.get("status")
                    name = self._header
                    if name is not None:
                        value = str(self.run.trace_id).encode("latin-1")
                        headers = [*message.get("headers", ()), (name, value)]
                        message = {**message, "headers": headers}
                else:
                    final = kind == "http.response.pathsend"
            except Exception as exc:
                report("middleware.asgi.send", exc)
        await self._send(message)
        if final:
            # After the server took the last chunk: a streamed response's run lasts as long
            # as the stream did.
            self.end()

    async def receive(self) -> Message:
        message = await self._receive()
        if not self.done and message.get("type") == "http.disconnect":
            self.end(incomplete=True)
        return message

"""WebSocket connections under the ASGI middleware: one run per connection, in the caller's trace.

The handshake's headers are decided on exactly as an HTTP request's (the same
:meth:`ServerTracer.decide <._common.ServerTracer.decide>`: exclusion, sampling, the caller's
``langsmith-trace``/``baggage`` or ``traceparent``, hostile values ignored and counted), with
``WS`` for the method, so the run is ``"WS /chat/{room}"`` once Starlette has routed it, and it
is current for as long as the app handles the connection. Messages are events on that run, or
child runs per received message (:class:`WebSocketOptions <._options.WebSocketOptions>`); the
run ends when the app returns, with who closed the connection and the close code, a rejected
handshake (``websocket.close`` before ``websocket.accept``, or a denial response), or the
error the app raised.

Every piece of tracing work sits in a ``try`` that reports and swallows; the app's own calls to
``receive``/``send`` are made outside them, so what it sees is what it would without us.
"""

from __future__ import annotations

from contextlib import suppress
from contextvars import Token
from typing import Any

from tracestitch import ids
from tracestitch.instrument import attach, detach, finish_run, report, start_run
from tracestitch.middleware._common import (
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    ServerTracer,
    Untraced,
    start_asgi_run,
)
from tracestitch.middleware._exchange import Exchange, untraced
from tracestitch.middleware._recording import readable
from tracestitch.middleware._starlette_routes import StarletteRoutes
from tracestitch.run_tree import RunTree

__all__ = ["WebSocketTracer"]


SITE = "middleware.asgi.websocket"
METHOD = "WS"
RECEIVED = "websocket.receive"
SENT = "websocket.send"
MAX_CONTENT_CHARS = 1024
MAX_SUBPROTOCOLS = 8
MAX_REASON_CHARS = 256
#: Close code a server sends when it failed (RFC 6455 7.4.1): the WebSocket's 500.
INTERNAL_ERROR = 1011
#: What Starlette raises from ``receive_*`` once the client has left, and uvicorn from ``send``
#: after it: once the client's close is seen, the consequence of it, not the app's fault.
_AFTER_CLIENT_LEFT = frozenset(("WebSocketDisconnect", "ClientDisconnected"))


class WebSocketTracer:
    """Traces the ``websocket`` scopes of one :class:`TracingMiddleware
    <tracestitch.middleware.asgi.TracingMiddleware>`, with its tracer and route cache."""

    __slots__ = ("_header", "_routes", "_tracer", "app")

    def __init__(self, app: ASGIApp, tracer: ServerTracer, routes: StarletteRoutes) -> None:
        self.app = app
        self._tracer = tracer
        self._routes = routes
        header = tracer.trace_header
        self._header = header.encode("latin-1") if header else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        connection: Any = None
        try:
            connection = self._begin(scope)
        except Exception as exc:
            report(f"{SITE}.start", exc)
        if connection is None:
            await self.app(scope, receive, send)
            return
        if not isinstance(connection, _Connection):
            with untraced(connection):
                await self.app(scope, receive, send)
            return
        connection._receive = receive
        connection._send = send
        token = attach(connection.run)
        try:
            await self.app(scope, connection.receive, connection.send)
        except BaseException as exc:
            connection.end(exc)
            raise
        else:
            connection.end()
        finally:
            # After end(): a message run made current inside is detached first.
            detach(token)

    def _begin(self, scope: Scope) -> _Connection | Untraced | None:
        tracer = self._tracer
        offered = scope.get("subprotocols")
        # Read before the run starts: a run started is a run that must end.
        protocols = [readable(str(p))[:64] for p in offered[:MAX_SUBPROTOCOLS]] if offered else None
        run = start_asgi_run(tracer, scope, METHOD)
        if run is None or isinstance(run, Untraced):
            return run
        if protocols:
            run.inputs["subprotocols"] = protocols
        connection = _Connection(tracer, run, scope, METHOD)
        connection.routes = self._routes
        connection.root_path = scope.get("root_path", "")
        connection.app = scope.get("app")  # before a mounted sub-app replaces it
        connection.header = self._header
        return connection


class _Events:
    """Events kept on one run, at most ``limit``; the rest counted.

    Written as the wire has them (``{"name", "time", "kwargs"}``) rather than through
    ``RunTree.add_event``, whose generic path (any event shape, ``datetime.isoformat``) costs
    about six times as much: two per message, that was most of a message's cost. Times are
    shifted as the run's own are (``skew``: how far ahead of this clock a remote caller's
    clock ran, which the run's start was clamped by)."""

    __slots__ = ("dropped", "kept", "limit", "run", "skew")

    def __init__(self, run: RunTree, limit: int, skew: int) -> None:
        self.run = run
        self.limit = limit
        self.skew = skew
        self.kept = 0
        self.dropped = 0

    def add(self, name: str, details: dict[str, Any]) -> None:
        if self.kept < self.limit:
            self.kept += 1
            time = ids.format_iso(ids.now_micros() + self.skew)
            self.run.events.append({"name": name, "time": time, "kwargs": details})
        else:
            self.dropped += 1


class _Connection(Exchange):
    """One traced WebSocket connection: wraps ``receive`` to see messages and the client's
    close, ``send`` to see the handshake's answer, messages and the app's close."""

    __slots__ = (
        "_receive",
        "_send",
        "accepted",
        "app",
        "close_code",
        "close_reason",
        "closed_by",
        "events",
        "header",
        "message",
        "message_events",
        "message_token",
        "received",
        "root_path",
        "routes",
        "sent",
        "skew",
    )
    site = SITE
    _receive: Receive
    _send: Send
    app: Any
    header: bytes | None
    root_path: str
    routes: StarletteRoutes

    def __init__(self, tracer: ServerTracer, run: RunTree, request: Any, method: str) -> None:
        super().__init__(tracer, run, request, method)
        self.accepted = False
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.closed_by: str | None = None
        self.received = 0
        self.sent = 0
        options = tracer.options.websocket
        # The run's start is now, unless a caller's clock ahead of ours moved it later.
        self.skew = max(run.start_time_us - ids.now_micros(), 0)
        self.events = _Events(run, options.max_events, self.skew)
        self.message: RunTree | None = None
        self.message_events: _Events | None = None
        self.message_token: Token[RunTree | None] | None = None

    def route_template(self) -> str | None:
        return self.routes.template(self.request, self.root_path, self.app)

    # -- the app's side ---------------------------------------------------------------------

    async def receive(self) -> Message:
        if self.message is not None:  # asking for the next message: done with the last one
            self._end_message(None)
        message = await self._receive()
        if not self.done:
            try:
                self._received(message)
            except Exception as exc:
                report(f"{SITE}.receive", exc)
        return message

    async def send(self, message: Message) -> None:
        if not self.done:
            try:
                message = self._sending(message)
            except Exception as exc:
                report(f"{SITE}.send", exc)
        await self._send(message)

    # -- what it is told and tells --------------------------------------------------------

    def _received(self, message: Message) -> None:
        kind = message.get("type")
        if kind == "websocket.receive":
            self.received += 1
            options = self.tracer.options.websocket
            if options.messages == "off":
                return
            details = _details(message, options.record_content)
            if options.messages == "runs":
                run = start_run(RECEIVED, "chain", self.run, details)
                if run is not None:
                    self.message = run
                    self.message_events = _Events(run, options.max_events, self.skew)
                    # Current until the app asks for the next message (see receive()).
                    self.message_token = attach(run)
            else:
                self.events.add(RECEIVED, details)
        elif kind == "websocket.disconnect" and self.closed_by is None:
            self.closed_by = "client"
            self._closed(message, 1005)  # the ASGI spec's code for a close frame without one

    def _sending(self, message: Message) -> Message:
        kind = message.get("type")
        if kind == "websocket.send":
            self.sent += 1
            options = self.tracer.options.websocket
            if options.messages != "off":
                events = self.message_events if self.message is not None else self.events
                if events is not None:
                    events.add(SENT, _details(message, options.record_content))
        elif kind == "websocket.accept":
            self.accepted = True
            self._name()
            if self.header is not None:
                value = str(self.run.trace_id).encode("latin-1")
                headers = [*message.get("headers", ()), (self.header, value)]
                message = {**message, "headers": headers}
        elif kind == "websocket.close":
            self._name()
            if self.closed_by is None:
                self.closed_by = "server"
                self._closed(message, 1000)  # the ASGI spec's default
        elif kind == "websocket.http.response.start":  # the denial response extension
            self._name()
            self.status = message.get("status")
        elif kind == "websocket.http.response.body":
            body = message.get("body")
            if body:
                self.size += len(body)
        return message

    def _closed(self, message: Message, default: int) -> None:
        code = message.get("code", default)
        self.close_code = code if isinstance(code, int) else None
        reason = message.get("reason")
        if reason:
            self.close_reason = readable(str(reason))[:MAX_REASON_CHARS]

    def _name(self) -> None:
        # Routed by the time the app answers the handshake: the run takes the template.
        if self.name is None:
            self.routed(self.run_name())

    # -- the end ---------------------------------------------------------------------------

    def _end_message(self, error: BaseException | None) -> None:
        run, token, events = self.message, self.message_token, self.message_events
        self.message = self.message_token = self.message_events = None
        try:
            if token is not None:
                # Made current in another task (a reader task): it stays there.
                with suppress(ValueError):
                    detach(token)
            if run is not None:
                outputs = {"events_dropped": events.dropped} if events and events.dropped else None
                finish_run(run, outputs, error)
        except Exception as exc:
            report(f"{SITE}.message", exc)

    def end(self, error: BaseException | None = None, *, incomplete: bool = False) -> None:
        """End the connection's run (once): who closed it and how, the counts, and the error
        the app raised (unless it only followed the client's leaving)."""
        if self.done:
            return
        self.done = True
        try:
            left = self.closed_by == "client"
            if error is not None and left and type(error).__name__ in _AFTER_CLIENT_LEFT:
                error = None
            self._end_message(error)
            self._name()
            if self.accepted and self.closed_by is None:
                self.closed_by = "server"  # the app returned without closing: the server closes
            outputs: dict[str, Any] = {
                "accepted": self.accepted,
                "closed_by": self.closed_by,
                "close_code": self.close_code,
                "messages_received": self.received,
                "messages_sent": self.sent,
            }
            if self.close_reason is not None:
                outputs["close_reason"] = self.close_reason
            if self.events.dropped:
                outputs["events_dropped"] = self.events.dropped
            status = self.status
            failure: BaseException | str | None = error
            if not self.accepted:
                if status is not None or self.closed_by == "server":
                    outputs["rejected"] = True
                if status is not None:
                    outputs["status_code"] = status
                    if status >= 500 and failure is None:
                        failure = self.tracer.status_error(status)
                elif failure is None and self.closed_by is None:
                    # uvicorn answers such a handshake with a 500.
                    failure = "the app returned without accepting or rejecting the connection"
            elif self.closed_by == "server" and self.close_code == INTERNAL_ERROR:
                failure = failure or f"WebSocket closed with {INTERNAL_ERROR} (internal error)"
            finish_run(self.run, outputs, failure)
        except Exception as exc:
            report(f"{SITE}.finish", exc)


def _details(message: Message, content: bool) -> dict[str, Any]:
    """A message's type and size (characters of text, bytes of binary), and its content
    (capped) when asked for."""
    text = message.get("text")
    if text is not None:
        details: dict[str, Any] = {"type": "text", "size": len(text)}
        if content:
            details["content"] = readable(str(text)[:MAX_CONTENT_CHARS])
        return details
    data = message.get("bytes") or b""
    details = {"type": "bytes", "size": len(data)}
    if content:
        details["content"] = bytes(data[:MAX_CONTENT_CHARS]).decode("utf-8", "replace")
    return details

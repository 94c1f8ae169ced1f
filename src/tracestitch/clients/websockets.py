"""websockets: client connections that send the trace on the opening handshake and record a
client run per connection, from the handshake until the connection closes.

Pass the class as ``create_connection``, the ``websockets`` hook for the connection class (the
asyncio and the threading clients alike)::

    from websockets.asyncio.client import connect
    from tracestitch.clients.websockets import TracingClientConnection

    async with connect("ws://chat.internal/rooms/7", create_connection=TracingClientConnection):
        ...

    from websockets.sync.client import connect
    from tracestitch.clients.websockets import SyncTracingClientConnection

    with connect("ws://chat.internal/rooms/7", create_connection=SyncTracingClientConnection):
        ...

A connection opened inside a run is a client run named ``"WS chat.internal/rooms/{id}"``, a
child of that run, whose headers (``langsmith-trace``, ``baggage``, ``traceparent``) go on the
handshake where the ``propagate_to`` policy allows; a traced server (the ASGI middleware) makes
its connection run a child of it. The run ends when the connection closes, with who closed it,
the close code and reason; a refused handshake, a lost connection (no close frame, 1006) or a
server's failure (1011, 1014) is its error. Each hop of a redirect is a connection of its own,
checked against the policy on its own. A connection that cannot be opened makes no run:
websockets creates the connection object once the socket is open. :func:`connection_class`
makes classes with other options (those of :class:`tracestitch.clients.ClientOptions`).
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any, ClassVar

try:
    from websockets.asyncio.client import ClientConnection as _AsyncConnection
    from websockets.client import ClientProtocol
    from websockets.datastructures import Headers, HeadersLike
    from websockets.exceptions import InvalidStatus
    from websockets.http11 import USER_AGENT
    from websockets.protocol import State
    from websockets.sync.client import ClientConnection as _SyncConnection
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    from tracestitch.clients._common import missing_framework

    raise missing_framework("websockets", "websockets", exc) from exc

from tracestitch.clients._common import ClientTracer, UrlParts
from tracestitch.instrument import finish_run, report
from tracestitch.run_tree import RunTree

__all__ = ["SyncTracingClientConnection", "TracingClientConnection", "connection_class"]

METHOD = "WS"
#: Close codes that say the connection or the server failed, as a 5xx says of an HTTP call:
#: no close frame at all (1006), the server's internal error (1011), a bad gateway (1014).
#: Other codes are the applications' own words, not errors.
FAILED = frozenset((1006, 1011, 1014))
MAX_REASON_CHARS = 256


class _HeaderView(MutableMapping[str, str]):
    """websockets' ``Headers`` as the client tracer writes headers: setting a name replaces
    its values (``Headers`` appends one), reading gives them joined."""

    __slots__ = ("headers",)

    def __init__(self, headers: Headers) -> None:
        self.headers = headers

    def __getitem__(self, name: str) -> str:
        values = self.headers.get_all(name)
        if not values:
            raise KeyError(name)
        return ",".join(values)

    def __setitem__(self, name: str, value: str) -> None:
        if name in self.headers:
            del self.headers[name]
        self.headers[name] = value

    def __delitem__(self, name: str) -> None:
        del self.headers[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.headers)

    def __len__(self) -> int:
        return len(self.headers)


def _parts(protocol: ClientProtocol) -> UrlParts:
    # ``uri`` in current releases, ``wsuri`` in older ones.
    uri: Any = getattr(protocol, "uri", None) or getattr(protocol, "wsuri", None)
    scheme = "wss" if uri.secure else "ws"
    return METHOD, scheme, uri.host, uri.port, uri.path or "/", uri.query or ""


def _begin(
    tracer: ClientTracer, protocol: ClientProtocol, additional: HeadersLike | None
) -> tuple[RunTree | None, HeadersLike | None]:
    """The connection's run and the handshake headers to send (a copy with ours, when we
    have any to add or strip; the caller's own object is never changed)."""
    if not tracer.may_trace():
        return None, additional  # outside any run: one context-variable read
    try:
        headers = Headers(additional) if additional is not None else Headers()
    except Exception:  # headers websockets would refuse: let it say so, untraced
        return None, additional
    run = tracer.begin(protocol, _parts, _HeaderView(headers))
    return run, headers


def _closed(protocol: ClientProtocol, lost: BaseException | None) -> tuple[dict[str, Any], str]:
    """Who closed, the code and reason (the closing side's frame) and the error, if any."""
    rcvd, sent = protocol.close_rcvd, protocol.close_sent
    closed_by: str | None = None
    frame = None
    if rcvd is not None and (protocol.close_rcvd_then_sent or sent is None):
        closed_by, frame = "server", rcvd
    elif sent is not None:
        closed_by, frame = "client", sent
    code = int(frame.code) if frame is not None else 1006
    outputs: dict[str, Any] = {"closed_by": closed_by, "close_code": code}
    if frame is not None and frame.reason:
        outputs["close_reason"] = frame.reason[:MAX_REASON_CHARS]
    error = ""
    if code in FAILED:
        error = "WebSocket closed without a close frame" if frame is None else ""
        error = error or f"WebSocket closed with {code}"
    if lost is not None and not error:
        error = f"WebSocket connection lost: {type(lost).__name__}: {lost}"
    return outputs, error


class _Tracing:
    """What the asyncio and the threading connection classes share: the run of one connection,
    taken once by whichever ends it (the handshake failing, or the connection closing: in the
    threading client that is another thread; taking is one atomic ``list.pop``)."""

    _tracer: ClassVar[ClientTracer]
    protocol: Any  # ClientProtocol: the connection classes' own declarations stand
    response: Any
    _tracestitch: list[RunTree]

    def _take(self) -> RunTree | None:
        try:
            return self._tracestitch.pop()
        except IndexError:
            return None

    def _handshake_failed(self, error: BaseException) -> None:
        run = self._take()
        if run is None:
            return
        try:
            outputs = None
            if isinstance(error, InvalidStatus):
                outputs = {"status_code": error.response.status_code}
            finish_run(run, outputs, error)
        except Exception as exc:
            report("clients.websockets.finish", exc)

    def _connection_ended(self, lost: BaseException | None) -> None:
        """End the run once the connection is closed, if the handshake succeeded (else the
        handshake's failure ends it)."""
        if not self._tracestitch:
            return
        protocol = self.protocol
        if self.response is None or protocol.handshake_exc is not None:
            return
        run = self._take()
        if run is None:
            return
        outputs: dict[str, Any] | None = None
        error = ""
        try:
            if protocol.state is State.CLOSED:
                outputs, error = _closed(protocol, lost)
            else:  # websockets closed the socket before reading from it
                outputs, error = {"closed_by": None, "close_code": None}, "WebSocket closed"
            outputs = {"status_code": self.response.status_code, **outputs}
        except Exception as exc:
            report("clients.websockets.finish", exc)
        finish_run(run, outputs, error or None)  # never raises: the run is kept either way


class TracingClientConnection(_Tracing, _AsyncConnection):
    """``websockets.asyncio.client.ClientConnection`` with a client run per connection:
    ``connect(uri, create_connection=TracingClientConnection)``."""

    _tracer = ClientTracer()
    _tracestitch: list[RunTree] = []  # per connection: set, never appended to

    async def handshake(
        self,
        additional_headers: HeadersLike | None = None,
        user_agent_header: str | None = USER_AGENT,
    ) -> None:
        run, headers = _begin(self._tracer, self.protocol, additional_headers)
        if run is None:
            await super().handshake(headers, user_agent_header)
            return
        self._tracestitch = [run]
        try:
            await super().handshake(headers, user_agent_header)
        except BaseException as exc:
            self._handshake_failed(exc)
            raise

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._connection_ended(exc)


class SyncTracingClientConnection(_Tracing, _SyncConnection):
    """``websockets.sync.client.ClientConnection`` with a client run per connection:
    ``connect(uri, create_connection=SyncTracingClientConnection)``."""

    _tracer = ClientTracer()
    _tracestitch: list[RunTree] = []  # per connection: set, never appended to

    def handshake(
        self,
        additional_headers: HeadersLike | None = None,
        user_agent_header: str | None = USER_AGENT,
        timeout: float | None = None,
    ) -> None:
        run, headers = _begin(self._tracer, self.protocol, additional_headers)
        if run is None:
            super().handshake(headers, user_agent_header, timeout)
            return
        self._tracestitch = [run]
        try:
            super().handshake(headers, user_agent_header, timeout)
        except BaseException as exc:
            self._handshake_failed(exc)
            raise

    def recv_events(self) -> None:
        # The connection's reading thread: it returns once the connection is closed.
        try:
            super().recv_events()
        finally:
            self._connection_ended(self.connection_exc)


def connection_class(*, sync: bool = False, **options: Any) -> type[Any]:
    """A connection class with its own options (those of
    :class:`tracestitch.clients.ClientOptions`), for ``connect(..., create_connection=...)``::

        Traced = connection_class(propagate_to=["internal", "*.partner.example"])
        SyncTraced = connection_class(sync=True, start_root=True)
    """
    base: type[Any] = SyncTracingClientConnection if sync else TracingClientConnection
    return type(base.__name__, (base,), {"_tracer": ClientTracer(**options)})

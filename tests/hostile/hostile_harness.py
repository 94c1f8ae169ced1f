"""The three server middlewares driven with hostile header sets, each next to the same app
untraced, with everything that could go wrong counted.

Each app's handler does what a real service does: calls a ``@traceable`` helper, then makes two
outgoing calls through the tracestitch client hooks, ``requests`` (``TracingAdapter``) and
``httpx`` (``TracingTransport`` / ``AsyncTracingTransport``), to a real echo server on
127.0.0.1, and answers with what they returned. ASGI (Starlette) and WSGI apps are called in
process (so any bytes at all reach the middleware); the aiohttp app runs under its real server
on loopback and is sent the raw bytes with ``http.client``.

Runs go through tracestitch's real background exporter to :class:`CheckingSink`, which runs the
real serializer and then the collector's own ingest validation on every batch: a batch the
collector would refuse (422) loses all its runs, as it would in production.

Per set, :meth:`Harness.run_set` reports:

- the answer changed (status or body differs from the untraced app's);
- an exception escaped the traced app that the untraced one did not raise;
- outgoing trace headers that ``http.client`` refuses, or that are not printable ASCII and
  well formed (:func:`hostile_headers.format_problem`), as written by the client hooks;

and :meth:`Harness.settle` (after a flush) the runs made but not accepted by the checking
sink (lost) and the ops that were not JSON objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import orjson
import requests
from aiohttp import web
from hostile_headers import TRACE_HEADERS, format_problem, http_client_refuses
from requests.adapters import HTTPAdapter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from tracestitch import _guard
from tracestitch.clients.httpx import AsyncTracingTransport, TracingTransport
from tracestitch.clients.requests import TracingAdapter
from tracestitch.collector.ingest import IngestError
from tracestitch.collector.ingest_api import batch_ops
from tracestitch.export.sink import DeliveryError
from tracestitch.export.wire import WireOp, batch_body
from tracestitch.export.worker import BatchExporter
from tracestitch.exporter import add_listener, remove_listener, set_exporter
from tracestitch.middleware.aiohttp import tracing_middleware
from tracestitch.middleware.asgi import TracingMiddleware as AsgiTracing
from tracestitch.middleware.wsgi import TracingMiddleware as WsgiTracing
from tracestitch.run_tree import RunTree
from tracestitch.tracing import traceable

__all__ = ["MIDDLEWARES", "CheckingSink", "Harness", "SetResult"]

MIDDLEWARES = ("asgi", "wsgi", "aiohttp")
#: Runs one traced request makes: the server run, the helper, two client runs.
RUNS_PER_REQUEST = 4
_TIMEOUT = 30.0
_RUN_WAIT = 2.0  # how long a run may take to be handed over after the answer


@traceable
def helper(x: int) -> int:
    return x


# ------------------------------------------------------------------------------ echo server


class _Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    problems: list[str]

    def setup(self) -> None:
        super().setup()
        # Headers and body are two writes: without this each answer waits ~40 ms for the
        # client's delayed ACK.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        # What actually arrived on the wire, checked once more (defence in depth).
        for name in TRACE_HEADERS:
            for value in self.headers.get_all(name) or ():
                problem = format_problem(name, value)
                if problem is not None:
                    self.problems.append(f"received {problem}")
        body = b"echo"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class EchoServer:
    """A real HTTP/1.1 server on 127.0.0.1 answering ``200 echo`` to every GET."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        handler = type("Echo", (_Echo,), {"problems": self.problems})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(_TIMEOUT)


# --------------------------------------------------------------------------- checking sink


class CheckingSink:
    """The export end: every batch is checked the way ``tracestitch serve`` checks it (JSON
    body, then the collector's ``batch_ops`` validation of every op). A batch it refuses is
    refused whole, as the collector answers 422, and its runs are lost."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.accepted: set[str] = set()
        self.non_objects = 0
        self.rejected_batches = 0
        self.problems: list[str] = []

    def send(self, ops: list[WireOp]) -> None:
        with self.lock:
            for op in ops:
                try:
                    doc = orjson.loads(op.body)
                except orjson.JSONDecodeError:
                    doc = None
                if not isinstance(doc, dict):
                    self.non_objects += 1
                    self.problems.append(f"op {op.run_id} is not a JSON object: {op.body[:80]!r}")
            try:
                accepted = batch_ops(orjson.loads(batch_body(ops)))
            except (IngestError, orjson.JSONDecodeError) as exc:
                self.rejected_batches += 1
                self.problems.append(f"batch of {len(ops)} refused: {str(exc)[:200]}")
                raise DeliveryError(f"HTTP 422: {exc}", status=422, retryable=False) from None
            self.accepted.update(op.run_id for op in accepted)

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------------------- results


_W3C_PARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")


def _unsampled_caller(pairs: list[tuple[bytes, bytes]]) -> bool:
    """Whether ``pairs`` hold a valid W3C parent with the sampled flag clear and no
    ``langsmith-trace`` (which would win over it)."""
    if any(name.lower() == b"langsmith-trace" for name, _ in pairs):
        return False
    for name, value in pairs:
        if name.lower() != b"traceparent":
            continue
        m = _W3C_PARENT.fullmatch(value.decode("latin-1").strip())
        if m is None:
            continue
        version, trace, span, flags, rest = m.groups()
        valid = version != "ff" and not (version == "00" and rest)
        if valid and int(trace, 16) and int(span, 16) and not int(flags, 16) & 1:
            return True
    return False


@dataclass
class SetResult:
    """What one hostile set did to one middleware (see the module docstring)."""

    changed: str | None = None
    escaped: str | None = None
    refused: list[str] = field(default_factory=list)
    made: int = 0
    expected: int = 0

    @property
    def ok(self) -> bool:
        return self.changed is None and self.escaped is None and not self.refused


@dataclass
class _Answer:
    status: int | None
    body: bytes
    error: str | None = None

    def key(self) -> tuple[int | None, bytes]:
        return self.status, self.body


# -------------------------------------------------------------------------- outgoing capture


class _Outgoing:
    """The trace headers the client hooks wrote, captured after them and before the wire."""

    def __init__(self) -> None:
        self.headers: list[tuple[str, str | bytes]] = []

    def take(self) -> list[tuple[str, str | bytes]]:
        taken, self.headers = self.headers, []
        return taken

    def record(self, items: Any) -> None:
        for name, value in items:
            key = name.decode("latin-1") if isinstance(name, bytes) else name
            if key.lower() in TRACE_HEADERS:
                self.headers.append((key.lower(), value))


class _ObservedAdapter(HTTPAdapter):
    """requests' real adapter, after the tracing one has written its headers."""

    def __init__(self, outgoing: _Outgoing) -> None:
        super().__init__()
        self._outgoing = outgoing

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        self._outgoing.record(request.headers.items())
        return super().send(request, *args, **kwargs)


class _ObservedTransport(httpx.BaseTransport):
    def __init__(self, outgoing: _Outgoing) -> None:
        self._outgoing = outgoing
        self._real = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self._outgoing.record(request.headers.raw)
        return self._real.handle_request(request)

    def close(self) -> None:
        self._real.close()


class _ObservedAsyncTransport(httpx.AsyncBaseTransport):
    def __init__(self, outgoing: _Outgoing) -> None:
        self._outgoing = outgoing
        self._real = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self._outgoing.record(request.headers.raw)
        return await self._real.handle_async_request(request)

    async def aclose(self) -> None:
        await self._real.aclose()


# ---------------------------------------------------------------------------------- drivers


def _asgi_scope(pairs: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/items/1",
        "raw_path": b"/items/1",
        "query_string": b"q=1",
        "root_path": "",
        "headers": [(b"host", b"testserver"), *pairs],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def _call_asgi(app: Any, pairs: list[tuple[bytes, bytes]]) -> _Answer:
    answer = _Answer(None, b"")
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answer.status = message["status"]
        elif message["type"] == "http.response.body":
            answer.body += message.get("body", b"")

    try:
        await app(_asgi_scope(pairs), receive, send)
    except Exception as exc:
        answer.error = f"{type(exc).__name__}: {exc}"[:300]
    return answer


def _environ(pairs: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    import io
    import sys

    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/items/1",
        "QUERY_STRING": "q=1",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "testserver",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for name, value in pairs:
        text = name.decode("latin-1").upper().replace("-", "_")
        key = text if text in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{text}"
        decoded = value.decode("latin-1")  # what a WSGI server hands over for raw bytes
        environ[key] = f"{environ[key]},{decoded}" if key in environ else decoded
    return environ


def _call_wsgi(app: Any, pairs: list[tuple[bytes, bytes]]) -> _Answer:
    answer = _Answer(None, b"")

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        answer.status = int(status[:3])
        return answer.body.__add__  # the legacy write() callable; unused by these apps

    try:
        result = app(_environ(pairs), start_response)
        try:
            answer.body = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
    except Exception as exc:
        answer.error = f"{type(exc).__name__}: {exc}"[:300]
    return answer


#: Headers the raw client leaves out: it sets ``Host`` itself, and a hostile ``Content-Length``
#: on a GET without a body would make the server read the next request as this one's body.
_FRAMING = frozenset((b"host", b"content-length", b"transfer-encoding"))


class _RawClient:
    """``http.client`` sending header values as raw bytes (any byte but CR and LF, which would
    end the header line), reconnecting when the server closes."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=_TIMEOUT)

    def get(self, pairs: list[tuple[bytes, bytes]]) -> _Answer:
        for attempt in range(2):
            try:
                self.conn.putrequest("GET", "/items/1?q=1", skip_host=True)
                # One Host for both apps: a 400 answer quotes the request, port included.
                self.conn.putheader("Host", "testserver")
                for name, value in pairs:
                    if name.lower() in _FRAMING:
                        continue
                    wire = value.replace(b"\r", b" ").replace(b"\n", b" ")
                    self.conn.putheader(name.decode("latin-1"), wire)
                self.conn.endheaders()
                response = self.conn.getresponse()
                return _Answer(response.status, response.read())
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.conn.close()


# ---------------------------------------------------------------------------------- harness


class Harness:
    """The apps, the echo server and the checking exporter; see the module docstring."""

    def __init__(self, middlewares: tuple[str, ...] = MIDDLEWARES) -> None:
        self.echo = EchoServer()
        self.outgoing = _Outgoing()
        self.sink = CheckingSink()
        self.exporter = BatchExporter(self.sink, spool=None, post_open_after=None)
        self._made: set[str] = set()
        self._made_lock = threading.Condition()
        self._current: list[RunTree] | None = None
        self.session = requests.Session()
        self.session.mount("http://", TracingAdapter(wrapped=_ObservedAdapter(self.outgoing)))
        self.httpx = httpx.Client(transport=TracingTransport(_ObservedTransport(self.outgoing)))
        self._loops: list[tuple[asyncio.AbstractEventLoop, threading.Thread | None]] = []
        self._closers: list[Any] = []
        self.drivers: dict[str, Any] = {}
        for name in middlewares:
            self.drivers[name] = getattr(self, f"_build_{name}")()
        add_listener(self._on_run)

    def install(self) -> None:
        """Make the harness' exporter the process-wide one (the test fixtures reset it)."""
        set_exporter(self.exporter)

    def _on_run(self, run: RunTree) -> None:
        with self._made_lock:
            self._made.add(str(run.id))
            if self._current is not None:
                self._current.append(run)
                self._made_lock.notify_all()

    def _answer_text(self, a: int, b: int) -> str:
        return f"item 1: requests {a}, httpx {b}"

    # -- ASGI: Starlette, called in process on one loop ---------------------------------------

    def _build_asgi(self) -> Any:
        loop = asyncio.new_event_loop()
        self._loops.append((loop, None))
        aclient = httpx.AsyncClient(
            transport=AsyncTracingTransport(_ObservedAsyncTransport(self.outgoing))
        )
        self._closers.append(lambda: loop.run_until_complete(aclient.aclose()))
        echo = self.echo.url

        async def endpoint(request: Request) -> PlainTextResponse:
            helper(1)
            a = self.session.get(f"{echo}/r").status_code
            b = (await aclient.get(f"{echo}/h")).status_code
            return PlainTextResponse(self._answer_text(a, b))

        def app() -> Starlette:
            return Starlette(routes=[Route("/items/{item_id}", endpoint)])

        bare, traced = app(), AsgiTracing(app())

        def call(pairs: list[tuple[bytes, bytes]], traced_app: bool) -> _Answer:
            coro = _call_asgi(traced if traced_app else bare, pairs)
            return loop.run_until_complete(asyncio.wait_for(coro, _TIMEOUT))

        return call

    # -- WSGI: a plain WSGI app, called in process ---------------------------------------------

    def _build_wsgi(self) -> Any:
        echo = self.echo.url

        def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            helper(1)
            a = self.session.get(f"{echo}/r").status_code
            b = self.httpx.get(f"{echo}/h").status_code
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [self._answer_text(a, b).encode()]

        traced = WsgiTracing(app)

        def call(pairs: list[tuple[bytes, bytes]], traced_app: bool) -> _Answer:
            return _call_wsgi(traced if traced_app else app, pairs)

        return call

    # -- aiohttp: the real server on loopback --------------------------------------------------

    def _build_aiohttp(self) -> Any:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        self._loops.append((loop, thread))
        echo = self.echo.url
        escaped: list[str] = []

        def run(coro: Any) -> Any:
            return asyncio.run_coroutine_threadsafe(coro, loop).result(_TIMEOUT)

        aclient = run(self._make_async_client())

        @web.middleware
        async def probe(request: web.Request, handler: Any) -> web.StreamResponse:
            # Outermost: an exception the inner chain (ours included) lets out shows here.
            try:
                return await handler(request)
            except web.HTTPException:
                raise
            except Exception as exc:
                escaped.append(f"{type(exc).__name__}: {exc}"[:300])
                raise

        async def item(request: web.Request) -> web.Response:
            helper(1)
            a = self.session.get(f"{echo}/r").status_code
            b = (await aclient.get(f"{echo}/h")).status_code
            return web.Response(text=self._answer_text(a, b))

        async def start(traced: bool) -> tuple[web.AppRunner, int]:
            middlewares: list[Any] = [probe]
            if traced:
                middlewares.append(tracing_middleware())
            app = web.Application(middlewares=middlewares)
            app.router.add_get("/items/{item_id}", item)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            return runner, int(port)

        bare_runner, bare_port = run(start(False))
        traced_runner, traced_port = run(start(True))
        clients = {False: _RawClient(bare_port), True: _RawClient(traced_port)}

        def close() -> None:
            for client in clients.values():
                client.close()
            run(aclient.aclose())
            run(bare_runner.cleanup())
            run(traced_runner.cleanup())

        self._closers.append(close)

        def call(pairs: list[tuple[bytes, bytes]], traced_app: bool) -> _Answer:
            escaped.clear()
            answer = clients[traced_app].get(pairs)
            if escaped:
                answer.error = escaped[0]
            return answer

        return call

    async def _make_async_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=AsyncTracingTransport(_ObservedAsyncTransport(self.outgoing))
        )

    # -- one set --------------------------------------------------------------------------------

    def run_set(self, middleware: str, pairs: list[tuple[bytes, bytes]]) -> SetResult:
        """``pairs`` through the untraced and the traced app of ``middleware``."""
        call = self.drivers[middleware]
        result = SetResult()
        expected = call(pairs, False)
        self.outgoing.take()  # the untraced app's calls carry no trace headers; not checked
        # The app made its runs only if it ran (a request its server refuses never gets there).
        result.expected = RUNS_PER_REQUEST if expected.status == 200 else 0
        self._current = made = []
        try:
            got = call(pairs, True)
            # aiohttp ends the server run at write_eof, just after the answer left: the client
            # can have it a moment before the run is handed over.
            with self._made_lock:
                self._made_lock.wait_for(lambda: len(made) >= result.expected, _RUN_WAIT)
        finally:
            self._current = None
        result.made = len(made)
        if result.made == 0 and _unsampled_caller(pairs):
            # An OpenTelemetry caller said -00 (and no langsmith-trace overrides it): no runs is
            # the promise. Whether a server hands a repeated header over as one (ASGI, aiohttp)
            # or joins the copies (WSGI) decides whether it is believed, so both counts are right.
            result.expected = 0
        if got.key() != expected.key():
            result.changed = f"{expected.key()!r} -> {got.key()!r}"
        if got.error is not None and got.error != expected.error:
            result.escaped = got.error
        for name, value in self.outgoing.take():
            problem = format_problem(name, value)
            if isinstance(value, str) and http_client_refuses(value):
                problem = f"{name}: http.client refuses {value[:80]!r}"
            if problem is not None:
                result.refused.append(problem)
        return result

    def settle(self) -> tuple[set[str], int, list[str]]:
        """Flush; return (runs made but not accepted, ops that were not JSON objects, what the
        sink and the echo server complained about), and start counting afresh."""
        self.exporter.flush(_TIMEOUT)
        with self._made_lock, self.sink.lock:
            lost = self._made - self.sink.accepted
            non_objects = self.sink.non_objects
            problems = [*self.sink.problems, *self.echo.problems]
            self._made.clear()
            self.sink.accepted.clear()
            self.sink.non_objects = 0
            self.sink.problems.clear()
            self.echo.problems.clear()
        return lost, non_objects, problems

    def close(self) -> None:
        remove_listener(self._on_run)
        for closer in self._closers:
            with contextlib.suppress(Exception):
                closer()
        for loop, thread in self._loops:
            if thread is not None:
                loop.call_soon_threadsafe(loop.stop)
                thread.join(_TIMEOUT)
            loop.close()
        self.session.close()
        self.httpx.close()
        self.exporter.shutdown(5.0)
        self.echo.close()


@contextlib.contextmanager
def harness(middlewares: tuple[str, ...] = MIDDLEWARES) -> Iterator[Harness]:
    h = Harness(middlewares)
    try:
        yield h
    finally:
        h.close()


def internal_errors() -> int:
    return sum(_guard.internal_errors().values())

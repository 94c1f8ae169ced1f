"""aiohttp.web middleware: one run per request.

aiohttp writes a returned response after the middleware chain has finished (``prepare`` then
``write_eof``), and a handler may stream a ``StreamResponse`` itself. Either way the run ends at
``write_eof``: the response object the handler returned gets its ``prepare``/``write_eof``
wrapped (that one instance only; nothing global is patched). ``web.HTTPException`` raised by a
handler is a response (3xx/4xx are not errors), not a failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, cast

from tracestitch._guard import report
from tracestitch.context import _current_run, tracing_context
from tracestitch.exporter import get_exporter
from tracestitch.middleware._common import (
    MiddlewareOptions,
    Outcome,
    ServerTracer,
    missing_extra,
    readable,
    resolve_options,
)
from tracestitch.run_tree import RunTree

try:
    from aiohttp import web
    from aiohttp.typedefs import Handler, Middleware
except ImportError as _exc:  # pragma: no cover - exercised only without the extra
    raise missing_extra("aiohttp", "aiohttp") from _exc

__all__ = ["flush_exporter", "setup_tracing", "tracing_middleware"]


_MAX_CACHED_NAMES = 4096


def tracing_middleware(*, options: MiddlewareOptions | None = None, **kwargs: Any) -> Middleware:
    """An ``@web.middleware`` tracing every request as a run named ``"{METHOD} {route}"``::

        app = web.Application(middlewares=[tracing_middleware(service="checkout")])
        app.on_cleanup.append(flush_exporter)

    Keyword options are those of :class:`tracestitch.middleware.MiddlewareOptions`.
    """
    options = resolve_options(options, kwargs)
    return _Middleware(ServerTracer(options)).as_middleware()


def setup_tracing(app: web.Application, **kwargs: Any) -> None:
    """The one line for an aiohttp app: the middleware, plus the exporter flushed on cleanup,
    plus (with ``trace_id_header``) the header also on responses a handler streams itself::

        setup_tracing(app, service="checkout", trace_id_header="x-trace-id")
    """
    options = MiddlewareOptions(**kwargs)
    app.middlewares.append(tracing_middleware(options=options))
    app.on_cleanup.append(_flusher(options.flush_timeout))
    if options.trace_id_header:
        app.on_response_prepare.append(_trace_header_hook(options.trace_id_header))


async def flush_exporter(app: web.Application) -> None:
    """An ``on_cleanup`` callback: flush the exporter (5 s at most) as the app shuts down."""
    await _flusher(5.0)(app)


def _flusher(timeout: float) -> Callable[[web.Application], Awaitable[None]]:
    async def flush(app: web.Application) -> None:
        try:
            exporter = get_exporter()
            # flush() blocks; other cleanup callbacks on this loop keep running meanwhile.
            await asyncio.get_running_loop().run_in_executor(None, exporter.flush, timeout)
        except Exception as exc:
            report("middleware.aiohttp.flush", exc)

    return flush


def _trace_header_hook(
    name: str,
) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    async def add_trace_header(request: web.Request, response: web.StreamResponse) -> None:
        # Prepared inside the handler (a stream), the current run is the request's or one of
        # its children: the same trace either way.
        try:
            run = _current_run.get()
            if run is not None and name not in response.headers:
                response.headers[name] = str(run.trace_id)
        except Exception as exc:
            report("middleware.aiohttp.header", exc)

    return add_trace_header


class _Middleware:
    __slots__ = ("_names", "_tracer")

    def __init__(self, tracer: ServerTracer) -> None:
        self._tracer = tracer
        # (id(resource), method) -> (resource, run name); resources live as long as the app.
        self._names: dict[tuple[int, str], tuple[Any, str]] = {}

    def as_middleware(self) -> Middleware:
        begin = self._begin

        @web.middleware
        async def tracestitch_middleware(
            request: web.Request, handler: Handler
        ) -> web.StreamResponse:
            exchange: _Exchange | Outcome | None = None
            try:
                exchange = begin(request)
            except Exception as exc:
                report("middleware.aiohttp.start", exc)
            if exchange is None:
                return await handler(request)
            if exchange is Outcome.DISABLED:
                with tracing_context(enabled=False, parent=None):
                    return await handler(request)
            assert isinstance(exchange, _Exchange)
            token = _current_run.set(exchange.run)
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                # aiohttp answers with it: a response (4xx, 3xx) rather than a failure; a 5xx
                # one marks the run by its status.
                exchange.respond_with(exc)
                raise
            except BaseException as exc:
                exchange.end(exc)
                raise
            finally:
                _current_run.reset(token)
            exchange.watch(response)
            return response

        return tracestitch_middleware

    def _begin(self, request: web.Request) -> _Exchange | Outcome | None:
        tracer = self._tracer
        method = request.method
        # aiohttp hands over bytes that are not UTF-8 as lone surrogates: recorded as U+FFFD.
        path = readable(request.path)
        headers = request.headers
        has_trace = "langsmith-trace" in headers or "traceparent" in headers
        parent = tracer.decide(method, path, headers, has_trace)
        if parent is None or parent is Outcome.DISABLED:
            return parent
        inputs = tracer.inputs(
            method,
            path,
            readable(request.query_string),
            request.remote,
            tracer.headers_from_multidict(headers),
        )
        server: tuple[Any, Any] | None = None
        transport = request.transport
        if transport is not None:
            sockname = transport.get_extra_info("sockname")
            if isinstance(sockname, tuple) and len(sockname) >= 2:
                server = (sockname[0], sockname[1])
        # aiohttp has routed the request before the middleware runs: the name is known now.
        routed = self._run_name(request, method)
        run = tracer.start(parent, routed or tracer.name(method, path), inputs, server)
        if routed is not None:
            tracer.routed(run, routed)
        return _Exchange(tracer, run)

    def _run_name(self, request: web.Request, method: str) -> str | None:
        tracer = self._tracer
        resolver = tracer.route_resolver
        if resolver is not None:
            template = resolver(request)
            if template:
                return tracer.name(method, template)
        resource = request.match_info.route.resource
        if resource is None:  # no route matched (404/405 system routes)
            return None
        key = (id(resource), method)
        cached = self._names.get(key)
        if cached is not None and cached[0] is resource:
            return cached[1]
        name = tracer.name(method, resource.canonical)
        if len(self._names) < _MAX_CACHED_NAMES:
            self._names[key] = (resource, name)
        return name


class _Exchange:
    """One traced request, until the response's ``write_eof``."""

    __slots__ = ("_prepare", "_response", "_tracer", "_write_eof", "done", "run")

    def __init__(self, tracer: ServerTracer, run: RunTree) -> None:
        self._tracer = tracer
        self.run = run
        self.done = False
        self._response: web.StreamResponse | None = None
        self._prepare: Callable[[web.BaseRequest], Awaitable[Any]] | None = None
        self._write_eof: Callable[[bytes], Awaitable[None]] | None = None

    def respond_with(self, exc: web.HTTPException) -> None:
        try:
            header = self._tracer.trace_header
            if header is not None:
                exc.headers[header] = str(self.run.trace_id)
            body = exc.body
            size = len(body) if isinstance(body, (bytes, bytearray)) else 0
            self._finish(exc.status, size, None)
        except Exception as error:
            report("middleware.aiohttp.finish", error)

    def watch(self, response: web.StreamResponse) -> None:
        """End the run now if ``response`` is fully written, else at its ``write_eof``."""
        try:
            if not isinstance(cast(object, response), web.StreamResponse):
                # aiohttp will answer 500 for this; the run says what the handler returned.
                self.end(TypeError(f"handler returned {type(response).__name__}"))
                return
            header = self._tracer.trace_header
            if header is not None and not response.prepared:
                response.headers[header] = str(self.run.trace_id)
            if _eof_sent(response):  # streamed and finished inside the handler
                self._finish(response.status, _size(response), None)
                return
            self._response = response
            self._prepare = response.prepare
            self._write_eof = response.write_eof
            # Instance attributes shadow the methods for this response only.
            setattr(response, "prepare", self.prepare)  # noqa: B010
            setattr(response, "write_eof", self.write_eof)  # noqa: B010
        except Exception as exc:
            report("middleware.aiohttp.watch", exc)

    async def prepare(self, request: web.BaseRequest) -> Any:
        assert self._prepare is not None
        try:
            return await self._prepare(request)
        except ConnectionError:
            self._end_response(incomplete=True)
            raise
        except BaseException as exc:
            self.end(exc)
            raise

    async def write_eof(self, data: bytes = b"") -> None:
        assert self._write_eof is not None
        try:
            await self._write_eof(data)
        except ConnectionError:
            self._end_response(incomplete=True)
            raise
        except BaseException as exc:
            self.end(exc)
            raise
        self._end_response(incomplete=False)

    def _end_response(self, *, incomplete: bool) -> None:
        response = self._response
        if response is None or self.done:
            return
        try:
            self._finish(response.status, _size(response), None, incomplete=incomplete)
        except Exception as exc:
            report("middleware.aiohttp.finish", exc)

    def end(self, error: BaseException | None) -> None:
        response = self._response
        status = response.status if response is not None else None
        try:
            self._finish(status, 0, error)
        except Exception as exc:
            report("middleware.aiohttp.finish", exc)

    def _finish(
        self,
        status: int | None,
        size: int,
        error: BaseException | None,
        *,
        incomplete: bool = False,
    ) -> None:
        if self.done:
            return
        self.done = True
        self._tracer.finish(self.run, status, size, error, incomplete=incomplete)


def _eof_sent(response: web.StreamResponse) -> bool:
    # No public flag for it. Should the private one go away, the response is wrapped instead
    # and aiohttp's own (then no-op) write_eof call ends the run a moment later: still right.
    return getattr(response, "_eof_sent", False) is True


def _size(response: web.StreamResponse) -> int:
    # The body's length when the response declared one; a chunked stream has none, and then
    # aiohttp's count of bytes written (framing and headers included) is the best there is.
    length = response.content_length
    return length if length is not None else response.body_length

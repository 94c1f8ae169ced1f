"""aiohttp.web middleware: one run per request.

aiohttp writes a returned response after the middleware chain has finished (``prepare`` then
``write_eof``), and a handler may stream a ``StreamResponse`` itself. Either way the run ends at
``write_eof``: the response object the handler returned gets its ``prepare``/``write_eof``
wrapped (that one instance only; nothing global is patched). ``web.HTTPException`` raised by a
handler is a response (3xx/4xx are not errors), not a failure.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

from tracestitch.carriers import MULTIDICT
from tracestitch.instrument import attach, current_run, detach, report
from tracestitch.middleware._common import (
    MiddlewareOptions,
    ServerTracer,
    Untraced,
    missing_extra,
    readable,
    resolve_options,
)
from tracestitch.middleware._exchange import Exchange, flush_at_shutdown, untraced

try:
    from aiohttp import web
    from aiohttp.typedefs import Handler, Middleware
except ImportError as _exc:  # pragma: no cover - exercised only without the extra
    raise missing_extra("aiohttp", "aiohttp") from _exc

__all__ = ["flush_exporter", "setup_tracing", "tracing_middleware"]


def tracing_middleware(*, options: MiddlewareOptions | None = None, **kwargs: Any) -> Middleware:
    """An ``@web.middleware`` tracing every request as a run named ``"{METHOD} {route}"``::

        app = web.Application(middlewares=[tracing_middleware(service="checkout")])
        app.on_cleanup.append(flush_exporter)

    Keyword options are those of :class:`tracestitch.middleware.MiddlewareOptions`.
    """
    tracer = ServerTracer(resolve_options(options, kwargs))

    @web.middleware
    async def tracestitch_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        exchange: Any = None
        try:
            exchange = _begin(tracer, request)
        except Exception as exc:
            report("middleware.aiohttp.start", exc)
        if exchange is None:
            return await handler(request)
        if not isinstance(exchange, _Exchange):
            with untraced(exchange):
                return await handler(request)
        token = attach(exchange.run)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            # aiohttp answers with it: a response (4xx, 3xx) rather than a failure; a 5xx one
            # marks the run by its status.
            exchange.respond_with(exc)
            raise
        except BaseException as exc:
            exchange.end(exc)
            raise
        finally:
            detach(token)
        exchange.watch(response)
        return response

    return tracestitch_middleware


def setup_tracing(app: web.Application, **kwargs: Any) -> None:
    """The one line for an aiohttp app: the middleware, plus the exporter flushed on cleanup,
    plus (with ``trace_id_header``) the header also on responses a handler streams itself::

        setup_tracing(app, service="checkout", trace_id_header="x-trace-id")
    """
    options = MiddlewareOptions(**kwargs)
    app.middlewares.append(tracing_middleware(options=options))
    timeout = options.flush_timeout
    app.on_cleanup.append(lambda app: flush_at_shutdown(timeout, "middleware.aiohttp"))
    if options.trace_id_header:
        app.on_response_prepare.append(_trace_header_hook(options.trace_id_header))


async def flush_exporter(app: web.Application) -> None:
    """An ``on_cleanup`` callback: flush the exporter (5 s at most) as the app shuts down."""
    await flush_at_shutdown(5.0, "middleware.aiohttp")


def _trace_header_hook(name: str) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    async def add_trace_header(request: web.Request, response: web.StreamResponse) -> None:
        # Prepared inside the handler (a stream), the current run is the request's or one of
        # its children: the same trace either way.
        try:
            run = current_run()
            if run is not None and name not in response.headers:
                response.headers[name] = str(run.trace_id)
        except Exception as exc:
            report("middleware.aiohttp.header", exc)

    return add_trace_header


def _begin(tracer: ServerTracer, request: web.Request) -> Any:
    method = request.method
    # aiohttp hands over bytes that are not UTF-8 as lone surrogates: recorded as U+FFFD.
    path = readable(request.path)
    headers = request.headers
    has_trace = "langsmith-trace" in headers or "traceparent" in headers
    parent = tracer.decide(method, path, headers, has_trace)
    if parent is None or isinstance(parent, Untraced):
        return parent
    query = readable(request.query_string)
    recorded = tracer.recorder.record(headers, MULTIDICT)
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    server = tuple(sockname[:2]) if isinstance(sockname, tuple) and len(sockname) >= 2 else None
    run = tracer.start(parent, method, path, query, request.remote, recorded, server)
    exchange = _Exchange(tracer, run, request, method)
    exchange.routed(exchange.run_name())  # aiohttp routed the request before the middleware ran
    return exchange


class _Exchange(Exchange):
    """One traced request, until the response's ``write_eof``."""

    __slots__ = ("_prepare", "_response", "_write_eof")
    site = "middleware.aiohttp"

    def route_template(self) -> str | None:
        resource = self.request.match_info.route.resource
        return None if resource is None else resource.canonical  # None: 404/405 system routes

    def respond_with(self, exc: web.HTTPException) -> None:
        try:
            header = self.trace_id_header()
            if header is not None:
                exc.headers[header[0]] = header[1]
            body = exc.body
            self.status, self.size = exc.status, len(body) if isinstance(body, bytes) else 0
            self.end()
        except Exception as error:
            report("middleware.aiohttp.finish", error)

    def watch(self, response: web.StreamResponse) -> None:
        """End the run now if ``response`` is fully written, else at its ``write_eof``."""
        try:
            if not isinstance(cast(object, response), web.StreamResponse):
                # aiohttp will answer 500 for this; the run says what the handler returned.
                self.end(TypeError(f"handler returned {type(response).__name__}"))
                return
            header = self.trace_id_header()
            if header is not None and not response.prepared:
                response.headers[header[0]] = header[1]
            self._response = response
            if getattr(response, "_eof_sent", False) is True:  # streamed, done in the handler
                # No public flag for it. Should the private one go away, the response is
                # wrapped instead and aiohttp's own (then no-op) write_eof ends the run.
                self._ended(incomplete=False)
                return
            self._prepare = response.prepare
            self._write_eof = response.write_eof
            # Instance attributes shadow the methods for this response only.
            setattr(response, "prepare", self.prepare)  # noqa: B010
            setattr(response, "write_eof", self.write_eof)  # noqa: B010
        except Exception as exc:
            report("middleware.aiohttp.watch", exc)

    async def prepare(self, request: web.BaseRequest) -> Any:
        return await self._step(self._prepare(request))

    async def write_eof(self, data: bytes = b"") -> None:
        await self._step(self._write_eof(data))
        self._ended()

    async def _step(self, step: Awaitable[Any]) -> Any:
        try:
            return await step
        except ConnectionError:  # the client went away
            self._ended(incomplete=True)
            raise
        except BaseException as exc:
            self._ended(exc)
            raise

    def _ended(self, error: BaseException | None = None, *, incomplete: bool = False) -> None:
        response: web.StreamResponse = self._response
        if not self.done:
            self.status = response.status
            if error is None:
                # The declared length; a chunked stream has none, and then aiohttp's count of
                # bytes written (framing and headers included) is the best there is.
                length = response.content_length
                self.size = length if length is not None else response.body_length
            self.end(error, incomplete=incomplete)

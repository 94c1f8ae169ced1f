"""WSGI middleware: one run per request (Flask, Django, any WSGI app).

A WSGI response is produced lazily: the app returns an iterable that the server drains after
the call returned. So the run ends when that iterable is exhausted or closed, and the run is the
current one only while app code runs (the call, each ``next``, ``close``), never in between:
the context is reset on every path, including errors and clients that go away.

No framework is imported. Flask's route template is read from the request object werkzeug
leaves in ``environ["werkzeug.request"]`` (``url_rule``); other frameworks can pass
``route_resolver=lambda environ: ...``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Any

from tracestitch.carriers import ENVIRON
from tracestitch.instrument import activate, report
from tracestitch.middleware._common import (
    MiddlewareOptions,
    ServerTracer,
    Untraced,
    resolve_options,
)
from tracestitch.middleware._exchange import Exchange, untraced
from tracestitch.run_tree import RunTree

__all__ = ["TracingMiddleware"]

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]


class TracingMiddleware:
    """Wraps a WSGI app so every request is a run named ``"{METHOD} {route}"``::

        app.wsgi_app = TracingMiddleware(app.wsgi_app, service="checkout")  # Flask

    Keyword options are those of :class:`tracestitch.middleware.MiddlewareOptions` (or pass
    ``options=MiddlewareOptions(...)``).
    """

    def __init__(
        self, app: WSGIApp, *, options: MiddlewareOptions | None = None, **kwargs: Any
    ) -> None:
        self.app = app
        options = resolve_options(options, kwargs)
        self.options = options
        # Flask's wsgi_app is a bound method: its __self__ is the Flask app, which has the name.
        self._tracer = ServerTracer(options, getattr(app, "__self__", app))
        header = self._tracer.trace_header
        self._trace_header = header.title() if header else None

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        exchange: Any = None
        try:
            exchange = self._begin(environ, start_response)
        except Exception as exc:
            report("middleware.wsgi.start", exc)
        if exchange is None:
            return self.app(environ, start_response)
        if not isinstance(exchange, _Exchange):
            context = functools.partial(untraced, exchange)
            with context():
                return _Response(self.app(environ, start_response), None, context)
        with activate(exchange.run):
            try:
                result = self.app(environ, exchange.start_response)
            except BaseException as exc:
                exchange.end(exc)
                raise
        return _Response(result, exchange, functools.partial(activate, exchange.run))

    def _begin(self, environ: Environ, start_response: StartResponse) -> Any:
        tracer = self._tracer
        method: str = environ.get("REQUEST_METHOD") or "GET"
        script_name: str = environ.get("SCRIPT_NAME") or ""
        path: str = script_name + (environ.get("PATH_INFO") or "")
        if not path.isascii():
            # WSGI hands the raw path bytes over as latin-1 text; show what the client sent.
            path = path.encode("latin-1", "replace").decode("utf-8", "replace")
        has_trace = "HTTP_LANGSMITH_TRACE" in environ or "HTTP_TRACEPARENT" in environ
        parent = tracer.decide(method, path, environ, has_trace)
        if parent is None or isinstance(parent, Untraced):
            return parent
        query = environ.get("QUERY_STRING") or ""
        headers = tracer.recorder.record(environ, ENVIRON)
        host = environ.get("SERVER_NAME")
        server = (host, environ.get("SERVER_PORT")) if host else None
        client = environ.get("REMOTE_ADDR")
        run = tracer.start(parent, method, path, query, client, headers, server)
        return _Exchange(self, run, environ, start_response, method, script_name)


class _Exchange(Exchange):
    """What ``start_response`` and the body tell about the request."""

    __slots__ = ("_header", "_start_response", "script_name")
    site = "middleware.wsgi"

    def __init__(
        self,
        mw: TracingMiddleware,
        run: RunTree,
        environ: Environ,
        start_response: StartResponse,
        method: str,
        script_name: str,
    ) -> None:
        super().__init__(mw._tracer, run, environ, method)
        self._start_response = start_response
        self._header = mw._trace_header
        self.script_name = script_name

    def route_template(self) -> str | None:
        # Flask sets request.url_rule when it matched a route; werkzeug's Request registers
        # itself in the environ, so this needs no Flask import.
        request = self.request.get("werkzeug.request")
        rule = getattr(getattr(request, "url_rule", None), "rule", None)
        return self.script_name + rule if isinstance(rule, str) else None

    def start_response(self, status: str, headers: list[tuple[str, str]], *exc_info: Any) -> Any:
        try:
            # Flask drops environ["werkzeug.request"] before its wsgi_app returns, but calls
            # start_response while the request (and its url_rule) is still there.
            if self.name is None:
                self.routed(self.run_name())
            self.status = int(status[:3])
            name = self._header
            if name is not None:
                # A new list: the app may keep and reuse its own.
                headers = [*headers, (name, str(self.run.trace_id))]
        except Exception as exc:
            report("middleware.wsgi.start_response", exc)
        return self._start_response(status, headers, *exc_info)


class _Response:
    """The app's response iterable, run in the request's context (its run current, or tracing
    off for an untraced request) while app code produces each chunk or closes; the run ends
    when the server has taken the last chunk, or closes the response early."""

    __slots__ = ("_context", "_exchange", "_iterator", "_result")

    def __init__(
        self,
        result: Iterable[bytes],
        exchange: _Exchange | None,
        context: Callable[[], AbstractContextManager[Any]],
    ) -> None:
        self._result = result
        self._exchange = exchange
        self._context = context
        self._iterator: Iterator[bytes] | None = None

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        exchange = self._exchange
        with self._context():
            try:
                iterator = self._iterator
                if iterator is None:
                    iterator = self._iterator = iter(self._result)
                chunk = next(iterator)
            except StopIteration:
                if exchange is not None:
                    exchange.end()
                raise
            except BaseException as exc:
                if exchange is not None:
                    exchange.end(exc)
                raise
        if exchange is not None:
            try:
                exchange.size += len(chunk)
            except Exception as exc:  # not bytes: the server will say so, not us
                report("middleware.wsgi.body", exc)
        return chunk

    def close(self) -> None:
        close = getattr(self._result, "close", None)
        if close is not None:
            # Teardown code (Flask's teardown handlers) still belongs to the request's run.
            with self._context():
                try:
                    close()
                except BaseException as exc:
                    if self._exchange is not None:
                        self._exchange.end(exc)
                    raise
        if self._exchange is not None:
            # Closed before the last chunk: the client went away, or the server gave up.
            self._exchange.end(incomplete=True)

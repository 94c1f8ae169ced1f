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
from collections.abc import Callable, Iterable
from typing import Any

from tracestitch.carriers import ENVIRON
from tracestitch.instrument import activate, report
from tracestitch.middleware._bodies import Body
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
                return Body(self.app(environ, start_response), None, context)
        with activate(exchange.run):
            try:
                result = self.app(environ, exchange.start_response)
            except BaseException as exc:
                exchange.end(exc)
                raise
        return Body(result, exchange, functools.partial(activate, exchange.run))

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

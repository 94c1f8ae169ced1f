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

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from tracestitch._guard import report
from tracestitch.context import _current_run, tracing_context
from tracestitch.middleware._common import (
    MiddlewareOptions,
    Outcome,
    ServerTracer,
    resolve_options,
)
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
        exchange: _Exchange | Outcome | None = None
        try:
            exchange = self._begin(environ, start_response)
        except Exception as exc:
            report("middleware.wsgi.start", exc)
        if exchange is None:
            return self.app(environ, start_response)
        if exchange is Outcome.DISABLED:
            return _UntracedResponse.call(self.app, environ, start_response)
        assert isinstance(exchange, _Exchange)
        token = _current_run.set(exchange.run)
        try:
            result = self.app(environ, exchange.start_response)
        except BaseException as exc:
            exchange.end(exc)
            raise
        finally:
            _current_run.reset(token)
        return _TracedResponse(result, exchange)

    def _begin(self, environ: Environ, start_response: StartResponse) -> _Exchange | Outcome | None:
        tracer = self._tracer
        method: str = environ.get("REQUEST_METHOD") or "GET"
        script_name: str = environ.get("SCRIPT_NAME") or ""
        path: str = script_name + (environ.get("PATH_INFO") or "")
        if not path.isascii():
            # WSGI hands the raw path bytes over as latin-1 text; show what the client sent.
            path = path.encode("latin-1", "replace").decode("utf-8", "replace")
        has_trace = "HTTP_LANGSMITH_TRACE" in environ or "HTTP_TRACEPARENT" in environ
        parent = tracer.decide(method, path, environ, has_trace)
        if parent is None or parent is Outcome.DISABLED:
            return parent
        inputs = tracer.inputs(
            method,
            path,
            environ.get("QUERY_STRING") or "",
            environ.get("REMOTE_ADDR"),
            tracer.headers_from_environ(environ),
        )
        host = environ.get("SERVER_NAME")
        server = (host, environ.get("SERVER_PORT")) if host else None
        run = tracer.start(parent, tracer.name(method, path), inputs, server)
        return _Exchange(self, environ, run, start_response, method, script_name)

    def _run_name(self, environ: Environ, method: str, script_name: str) -> str | None:
        tracer = self._tracer
        resolver = tracer.route_resolver
        if resolver is not None:
            template = resolver(environ)
            if template:
                return tracer.name(method, template)
        # Flask sets request.url_rule when it matched a route; werkzeug's Request registers
        # itself in the environ, so this needs no Flask import.
        request = environ.get("werkzeug.request")
        rule = getattr(getattr(request, "url_rule", None), "rule", None)
        if isinstance(rule, str):
            return tracer.name(method, script_name + rule)
        return None


class _Exchange:
    """One traced request: the run, and what ``start_response`` and the body told about it."""

    __slots__ = (
        "_mw",
        "_start_response",
        "done",
        "environ",
        "method",
        "name",
        "run",
        "script_name",
        "size",
        "status",
    )

    def __init__(
        self,
        mw: TracingMiddleware,
        environ: Environ,
        run: RunTree,
        start_response: StartResponse,
        method: str,
        script_name: str,
    ) -> None:
        self._mw = mw
        self._start_response = start_response
        self.environ = environ
        self.run = run
        self.method = method
        self.script_name = script_name
        self.status: int | None = None
        self.size = 0
        self.done = False
        self.name: str | None = None

    def start_response(self, status: str, headers: list[tuple[str, str]], *exc_info: Any) -> Any:
        try:
            # Flask drops environ["werkzeug.request"] before its wsgi_app returns, but calls
            # start_response while the request (and its url_rule) is still there.
            if self.name is None:
                self.name = self._mw._run_name(self.environ, self.method, self.script_name)
            self.status = int(status[:3])
            name = self._mw._trace_header
            if name is not None:
                # A new list: the app may keep and reuse its own.
                headers = [*headers, (name, str(self.run.trace_id))]
        except Exception as exc:
            report("middleware.wsgi.start_response", exc)
        return self._start_response(status, headers, *exc_info)

    def end(self, error: BaseException | None, *, incomplete: bool = False) -> None:
        if self.done:
            return
        self.done = True
        try:
            name = self.name or self._mw._run_name(self.environ, self.method, self.script_name)
            if name is not None:
                self._mw._tracer.routed(self.run, name)
            self._mw._tracer.finish(self.run, self.status, self.size, error, incomplete=incomplete)
        except Exception as exc:
            report("middleware.wsgi.finish", exc)


class _TracedResponse:
    """The app's response iterable, with the run current while app code produces each chunk;
    the run ends when the server has taken the last chunk, or closes the response early."""

    __slots__ = ("_exchange", "_iterator", "_result")

    def __init__(self, result: Iterable[bytes], exchange: _Exchange) -> None:
        self._result = result
        self._exchange = exchange
        self._iterator: Iterator[bytes] | None = None

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        exchange = self._exchange
        token = _current_run.set(exchange.run)
        try:
            iterator = self._iterator
            if iterator is None:
                iterator = self._iterator = iter(self._result)
            chunk = next(iterator)
        except StopIteration:
            exchange.end(None)
            raise
        except BaseException as exc:
            exchange.end(exc)
            raise
        finally:
            _current_run.reset(token)
        try:
            exchange.size += len(chunk)
        except Exception as exc:  # not bytes: the server will say so, not us
            report("middleware.wsgi.body", exc)
        return chunk

    def close(self) -> None:
        exchange = self._exchange
        close = getattr(self._result, "close", None)
        if close is not None:
            # Teardown code (Flask's teardown handlers) still belongs to the request's run.
            token = _current_run.set(exchange.run)
            try:
                close()
            except BaseException as exc:
                exchange.end(exc)
                raise
            finally:
                _current_run.reset(token)
        # Closed before the last chunk: the client went away, or the server gave up.
        exchange.end(None, incomplete=True)


class _UntracedResponse:
    """An untraced request (excluded or sampled out): the app and its response iterable run
    with tracing disabled and no parent, so it makes no runs and propagates nothing."""

    __slots__ = ("_iterator", "_result")

    def __init__(self, result: Iterable[bytes]) -> None:
        self._result = result
        self._iterator: Iterator[bytes] | None = None

    @classmethod
    def call(cls, app: WSGIApp, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        with tracing_context(enabled=False, parent=None):
            return cls(app(environ, start_response))

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        with tracing_context(enabled=False, parent=None):
            iterator = self._iterator
            if iterator is None:
                iterator = self._iterator = iter(self._result)
            return next(iterator)

    def close(self) -> None:
        close = getattr(self._result, "close", None)
        if close is not None:
            with tracing_context(enabled=False, parent=None):
                close()

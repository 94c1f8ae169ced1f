"""Django middleware: one run per request, named after the resolver's route (``include()``
prefixes joined: ``GET /orders/<int:order_id>``); sync- and async-capable as Django's own, so no
thread hop is added under WSGI or ASGI. A streamed response's run ends after its last chunk::

    MIDDLEWARE = ["tracestitch.middleware.django.TracingMiddleware", ...]  # first in the list
    TRACESTITCH_MIDDLEWARE = {"service": "orders", "exclude": ["/health"]}  # optional
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable, Mapping
from typing import Any

from tracestitch.carriers import ENVIRON
from tracestitch.instrument import activate, report
from tracestitch.middleware import MiddlewareOptions
from tracestitch.middleware._bodies import AsyncBody, Body, Context
from tracestitch.middleware._common import ServerTracer, Untraced, missing_extra, resolve_options
from tracestitch.middleware._exchange import Exchange, flush_if_stopping_hook, untraced

try:
    from asgiref.sync import iscoroutinefunction, markcoroutinefunction
    from django.conf import settings
    from django.core.signals import request_finished
except ImportError as exc:  # pragma: no cover - exercised in a subprocess
    raise missing_extra("Django", "django") from exc

__all__ = ["SETTING", "TracingMiddleware"]

#: The settings name holding the options: a dict of :class:`MiddlewareOptions` keywords, or one.
SETTING = "TRACESTITCH_MIDDLEWARE"
_ATTR = "_tracestitch_exchange"  # on the request, for process_exception


class TracingMiddleware:
    """Traces every request as a run named ``"{METHOD} {route}"``. Django builds it with
    ``get_response`` only: options come from ``settings.TRACESTITCH_MIDDLEWARE`` (keywords of
    :class:`tracestitch.middleware.MiddlewareOptions`, or one), which a subclass's keywords
    override. The service is named after the project (``ROOT_URLCONF``'s package) by default."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any], **kwargs: Any) -> None:
        self.get_response = get_response
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)  # Django then awaits __call__
        configured = getattr(settings, SETTING, None) or {}
        if isinstance(configured, MiddlewareOptions):
            kwargs.setdefault("options", configured)
        elif isinstance(configured, Mapping):
            kwargs = {**configured, **kwargs}
        else:
            raise TypeError(f"settings.{SETTING} must be a dict or MiddlewareOptions")
        self.options = resolve_options(kwargs.pop("options", None), kwargs)
        project = str(getattr(settings, "ROOT_URLCONF", "") or "").partition(".")[0]
        # default_service_name reads the app's "name": the project's package, not the server's.
        self._tracer = ServerTracer(self.options, types.SimpleNamespace(name=project))
        # Django has no shutdown hook (no ASGI lifespan): once SIGTERM came, the runs of the
        # requests a server answers while it drains go out as each response closes (on a
        # thread, after the body was sent), before the server re-raises the signal.
        request_finished.connect(flush_if_stopping_hook, weak=False, dispatch_uid=__name__)

    def __call__(self, request: Any) -> Any:
        if self._async:
            return self._acall(request)
        exchange = self._begin(request)
        if exchange is None:
            return self.get_response(request)
        with exchange.context():
            try:
                response = self.get_response(request)
            except BaseException as exc:
                exchange.end(exc)
                raise
        return exchange.respond(response)

    async def _acall(self, request: Any) -> Any:
        exchange = self._begin(request)
        if exchange is None:
            return await self.get_response(request)
        with exchange.context():
            try:
                response = await self.get_response(request)
            except BaseException as exc:
                exchange.end(exc)
                raise
        return exchange.respond(response)

    def process_exception(self, request: Any, exception: Exception) -> None:
        """Keep the view's exception for the run (Django turns it into the response)."""
        exchange = getattr(request, _ATTR, None)
        if exchange is not None:
            exchange.raised = exception

    def _begin(self, request: Any) -> _Exchange | _Untraced | None:  # never raises
        try:
            tracer, meta, path = self._tracer, request.META, request.path
            method: str = request.method or "GET"
            has_trace = "HTTP_LANGSMITH_TRACE" in meta or "HTTP_TRACEPARENT" in meta
            parent = tracer.decide(method, path, meta, has_trace)
            if parent is None or isinstance(parent, Untraced):
                return None if parent is None else _Untraced(parent)
            headers = tracer.recorder.record(meta, ENVIRON)
            host, query = meta.get("SERVER_NAME"), meta.get("QUERY_STRING") or ""
            server = (host, meta.get("SERVER_PORT")) if host else None
            client = meta.get("REMOTE_ADDR")
            run = tracer.start(parent, method, path, query, client, headers, server)
            exchange = _Exchange(tracer, run, request, method)
            setattr(request, _ATTR, exchange)
            return exchange
        except Exception as exc:
            report("middleware.django.start", exc)
            return None


class _Untraced:
    """A request not traced here: its code, streamed body included, runs with tracing off."""

    def __init__(self, request: Untraced) -> None:
        self.context = functools.partial(untraced, request)

    def end(self, *args: Any, **kwargs: Any) -> None:
        pass  # no run to end

    def respond(self, response: Any) -> Any:
        if getattr(response, "file_to_stream", None) is not None:
            return response  # a file the server sends itself: no app code runs
        return _streamed(response, None, self.context)


class _Exchange(Exchange):
    """The request's run, named from ``request.resolver_match``, ended with the response."""

    site = "middleware.django"
    raised: BaseException | None = None  # by the view (process_exception); no __slots__ here

    def route_template(self) -> str | None:
        match = self.request.resolver_match
        if match is None:  # not routed (the resolver's 404): the path stays the name
            return None
        route = (match.route or "").removeprefix("^").removesuffix("$")  # re_path's anchors
        path, path_info = self.request.path, self.request.path_info
        prefix = path[: len(path) - len(path_info)] if path.endswith(path_info) else ""
        return f"{prefix}/{route}"  # under the script prefix, as the client sees the path

    def context(self) -> activate:
        return activate(self.run)

    def end(self, error: BaseException | None = None, *, incomplete: bool = False) -> None:
        """End the run: a server error's error is the view's exception, if it raised one."""
        if error is None and self.raised is not None and (self.status or 0) >= 500:
            error = self.raised
        super().end(error, incomplete=incomplete)

    def respond(self, response: Any) -> Any:
        """Record ``response`` and end the run, or leave its end to the streamed body."""
        try:
            self.status = response.status_code
            if self.tracer.trace_header is not None:
                response[self.tracer.trace_header] = str(self.run.trace_id)
            self.routed(self.run_name())
            if not response.streaming:
                self.size = len(response.content)
            else:
                size = _file_size(response)
                if size is None:
                    return _streamed(response, self, self.context)  # counted as it streams
                self.size = size  # a file the server may send itself: no app code runs
            self.end()
        except Exception as exc:
            report("middleware.django.respond", exc)
            self.end()
        return response


def _file_size(response: Any) -> int | None:
    """A ``FileResponse``'s ``Content-Length`` (Django sets it from the file when it can tell
    the size); ``None``: count the body as it streams. A file of known size is left unwrapped:
    wrapping its chunks would stop a WSGI server sending it itself (``wsgi.file_wrapper``)."""
    if getattr(response, "file_to_stream", None) is None:
        return None
    length = str(response.get("Content-Length", ""))
    return int(length) if length.isdigit() else None


def _streamed(response: Any, exchange: _Exchange | None, context: Context) -> Any:
    """``response``, its streamed chunks made in ``context`` (and counted, the run ended after
    the last, when ``exchange``); Django calls the body's ``close`` as the response closes."""
    try:
        if response.streaming:
            body = AsyncBody if response.is_async else Body
            response.streaming_content = body(response.streaming_content, exchange, context)
    except Exception as exc:
        report("middleware.django.body", exc)
    return response

"""httpx: a transport wrapper that records a client run per request and injects its headers.

Wrap the transport once and every call made inside a traced request carries the trace::

    import httpx
    from tracestitch.clients.httpx import AsyncTracingTransport, TracingTransport

    client = httpx.Client(transport=TracingTransport())
    async_client = httpx.AsyncClient(
        transport=AsyncTracingTransport(httpx.AsyncHTTPTransport(retries=2))
    )

A transport sees each hop of a redirect separately (httpx follows redirects above the
transport), so every hop gets its own client run and its own policy check. To inject headers
without recording client runs, use :func:`event_hooks`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

try:
    import httpx
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    from tracestitch.clients._common import missing_framework

    raise missing_framework("httpx", "httpx", exc) from exc

from tracestitch.clients._common import ClientTracer, UrlParts, content_length
from tracestitch.run_tree import RunTree

__all__ = ["AsyncTracingTransport", "TracingTransport", "event_hooks"]


def _parts(request: httpx.Request) -> UrlParts:
    url = request.url
    path, _, query = url.raw_path.decode("ascii").partition("?")
    return request.method, url.scheme, url.host, url.port, path, query


def _begin(tracer: ClientTracer, request: httpx.Request) -> RunTree | None:
    return tracer.begin(request, _parts, request.headers)


def _finish(tracer: ClientTracer, run: RunTree, response: httpx.Response) -> None:
    # The run ends when the response headers arrive (the body is the caller's to read), so
    # the size is the declared one.
    tracer.finish(run, response.status_code, content_length(response.headers.get("content-length")))


class TracingTransport(httpx.BaseTransport):
    """Wraps a sync httpx transport (default ``httpx.HTTPTransport()``).

    Keyword options are those of :class:`tracestitch.clients.ClientOptions`
    (``propagate_to``, ``create_runs``, ``start_root``, ``run_type``, ...)::

        client = httpx.Client(transport=TracingTransport(propagate_to=["internal", "*.corp"]))

    Note that ``httpx.Client(verify=..., http2=...)`` configures only the transport httpx
    creates itself; pass such settings to the wrapped transport instead.
    """

    def __init__(self, wrapped: httpx.BaseTransport | None = None, **options: Any) -> None:
        self._wrapped = wrapped if wrapped is not None else httpx.HTTPTransport()
        self._tracer = ClientTracer(**options)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        tracer = self._tracer
        run = _begin(tracer, request)
        if run is None:
            return self._wrapped.handle_request(request)
        try:
            response = self._wrapped.handle_request(request)
        except BaseException as exc:
            tracer.fail(run, exc)
            raise
        _finish(tracer, run, response)
        return response

    def close(self) -> None:
        self._wrapped.close()


class AsyncTracingTransport(httpx.AsyncBaseTransport):
    """Wraps an async httpx transport (default ``httpx.AsyncHTTPTransport()``); otherwise
    the same as :class:`TracingTransport`::

        client = httpx.AsyncClient(transport=AsyncTracingTransport())
    """

    def __init__(self, wrapped: httpx.AsyncBaseTransport | None = None, **options: Any) -> None:
        self._wrapped = wrapped if wrapped is not None else httpx.AsyncHTTPTransport()
        self._tracer = ClientTracer(**options)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        tracer = self._tracer
        run = _begin(tracer, request)
        if run is None:
            return await self._wrapped.handle_async_request(request)
        try:
            response = await self._wrapped.handle_async_request(request)
        except BaseException as exc:
            tracer.fail(run, exc)
            raise
        _finish(tracer, run, response)
        return response

    async def aclose(self) -> None:
        await self._wrapped.aclose()


def event_hooks(
    *, asynchronous: bool = False, **options: Any
) -> dict[str, list[Callable[[httpx.Request], Any]]]:
    """Request hooks that only inject the current run's headers (no client runs), for
    clients whose transport you do not control. httpx runs request hooks on every redirect
    hop, so each hop is checked against the policy::

        client = httpx.Client(event_hooks=event_hooks())
        async_client = httpx.AsyncClient(event_hooks=event_hooks(asynchronous=True))
    """
    if "create_runs" in options or "start_root" in options:
        raise TypeError("event_hooks() only injects headers; use TracingTransport for runs")
    tracer = ClientTracer(create_runs=False, **options)

    def inject_headers(request: httpx.Request) -> None:
        _begin(tracer, request)

    if not asynchronous:
        return {"request": [inject_headers]}

    async def inject_headers_async(request: httpx.Request) -> None:
        _begin(tracer, request)

    hook: Callable[[httpx.Request], Awaitable[None]] = inject_headers_async
    return {"request": [hook]}

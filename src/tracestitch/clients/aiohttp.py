"""aiohttp: a ``TraceConfig`` that records a client run per request and injects its headers.

::

    import aiohttp
    from tracestitch.clients.aiohttp import trace_config

    async with aiohttp.ClientSession(trace_configs=[trace_config()]) as session:
        async with session.get("http://service-b/items/1") as response:
            ...

aiohttp sends ``on_request_start`` once per call, before its redirect loop, and reuses the same
header object for every hop; ``on_request_redirect`` fires before the next hop is built. So the
redirect handler ends the hop's run, works out where the next hop goes (as aiohttp itself does
from ``Location``) and sets or strips the headers for it, starting that hop's run. The current
hop's run lives in the per-request ``trace_config_ctx``.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

try:
    import aiohttp
    from yarl import URL
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    from tracestitch.clients._common import missing_framework

    raise missing_framework("aiohttp", "aiohttp", exc) from exc

from tracestitch.clients._common import ClientTracer, UrlParts, strip_trace_headers
from tracestitch.instrument import report

__all__ = ["trace_config"]

_REDIRECTS = frozenset((301, 302, 303, 307, 308))


def _parts(request: tuple[str, URL]) -> UrlParts:
    method, url = request
    return method, url.scheme, url.host, url.explicit_port, url.raw_path, url.raw_query_string


def _next_hop(params: aiohttp.TraceRequestRedirectParams) -> tuple[str, URL] | None:
    """The method and URL aiohttp will request next (its own rules), ``None`` if it won't."""
    response = params.response
    location = response.headers.get("Location") or response.headers.get("URI")
    if location is None:
        return None
    method = params.method
    status = response.status
    if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
        method = "GET"
    return method, params.url.join(URL(location))


def trace_config(**options: Any) -> aiohttp.TraceConfig:
    """A ``TraceConfig`` for ``aiohttp.ClientSession(trace_configs=[...])``.

    Keyword options are those of :class:`tracestitch.clients.ClientOptions`
    (``propagate_to``, ``create_runs``, ``start_root``, ``run_type``, ...)::

        session = aiohttp.ClientSession(trace_configs=[trace_config(propagate_to="all")])
    """
    tracer = ClientTracer(**options)

    async def on_request_start(
        session: aiohttp.ClientSession,
        ctx: SimpleNamespace,
        params: aiohttp.TraceRequestStartParams,
    ) -> None:
        ctx.tracestitch_run = tracer.begin((params.method, params.url), _parts, params.headers)

    async def on_request_redirect(
        session: aiohttp.ClientSession,
        ctx: SimpleNamespace,
        params: aiohttp.TraceRequestRedirectParams,
    ) -> None:
        try:
            hop = _next_hop(params)
        except Exception as exc:  # an unparsable Location: aiohttp raises for it next
            report("clients.aiohttp.redirect", exc)
            strip_trace_headers(params.headers)
            return
        if hop is None:
            return  # aiohttp stops here and ends the call with this response
        run = getattr(ctx, "tracestitch_run", None)
        response = params.response
        tracer.finish(run, response.status, response.content_length)
        ctx.tracestitch_run = tracer.begin(hop, _parts, params.headers)

    async def on_request_end(
        session: aiohttp.ClientSession,
        ctx: SimpleNamespace,
        params: aiohttp.TraceRequestEndParams,
    ) -> None:
        run = getattr(ctx, "tracestitch_run", None)
        if run is not None:
            ctx.tracestitch_run = None
            tracer.finish(run, params.response.status, params.response.content_length)

    async def on_request_exception(
        session: aiohttp.ClientSession,
        ctx: SimpleNamespace,
        params: aiohttp.TraceRequestExceptionParams,
    ) -> None:
        run = getattr(ctx, "tracestitch_run", None)
        if run is not None:
            ctx.tracestitch_run = None
            tracer.fail(run, params.exception)

    config = aiohttp.TraceConfig()
    config.on_request_start.append(on_request_start)
    config.on_request_redirect.append(on_request_redirect)
    config.on_request_end.append(on_request_end)
    config.on_request_exception.append(on_request_exception)
    return config

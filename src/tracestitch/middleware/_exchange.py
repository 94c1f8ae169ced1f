"""One traced request, whatever the framework: from the decision to trace it to its run's end.

:class:`ServerTracer <tracestitch.middleware._common.ServerTracer>` decides and starts; an
:class:`Exchange` then holds the run while the app answers, records the status and the body's
size, gives the trace-id response header, and ends the run exactly once: at the response's last
byte, when the client goes away, or with the error the app raised. An adapter subclasses it only
to say where its framework keeps the matched route (:meth:`Exchange.route_template`) and to wrap
its own response objects; :func:`untraced` is how every adapter runs a request it does not trace,
and :func:`flush_at_shutdown` how it empties the exporter when the app stops
(:func:`flush_if_stopping_async` after each request once SIGTERM came).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from tracestitch.context import tracing_context
from tracestitch.instrument import finish_run, flush, flush_if_stopping, report, stopping
from tracestitch.middleware._recording import MAX_PATH_CHARS

if TYPE_CHECKING:
    from tracestitch.middleware._common import ServerTracer, Untraced
    from tracestitch.run_tree import RunTree

__all__ = [
    "Exchange",
    "flush_at_shutdown",
    "flush_if_stopping_async",
    "flush_if_stopping_hook",
    "untraced",
]


def untraced(request: Untraced) -> AbstractContextManager[None]:
    """The context an untraced request runs in (an excluded path, a new trace sampled out):
    tracing disabled, so its code makes no runs."""
    return tracing_context(enabled=False, parent=request.parent)


async def flush_at_shutdown(timeout: float, site: str) -> None:
    """Flush the exporter as the app stops, without blocking the event loop meanwhile (other
    apps on it keep shutting down); off asyncio (trio), a bounded blocking flush."""
    await _off_loop(functools.partial(flush, timeout), site)


async def flush_if_stopping_async(site: str) -> None:
    """Once SIGTERM came (:func:`tracestitch.instrument.stopping`), flush the runs of the
    request that just finished before the server may re-raise it, off the event loop: an app
    served without a shutdown hook (no ASGI lifespan) has no other moment. One check per
    request otherwise (callers that run on every request check :func:`stopping` first)."""
    if stopping():
        await _off_loop(flush_if_stopping, site)


def flush_if_stopping_hook(*args: object, **kwargs: object) -> None:
    """The same for a framework's hook that runs on a thread once a response was sent
    (Django's ``request_finished``); any arguments, never raises."""
    if stopping():
        try:
            flush_if_stopping()
        except Exception as exc:
            report("middleware.flush", exc)


async def _off_loop(work: Callable[[], object], site: str) -> None:
    try:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            work()
            return
        await loop.run_in_executor(None, work)
    except Exception as exc:
        report(f"{site}.flush", exc)


class Exchange:
    """One traced request, until its run has ended (:meth:`end`, which runs once).

    ``request`` is the framework's own request object (ASGI scope, WSGI environ, aiohttp
    request): what ``route_resolver`` is given. ``name``, when an adapter knows the route
    before the end, is the run's final name; else :meth:`run_name` finds it at the end.
    """

    __slots__ = ("done", "method", "name", "request", "run", "size", "status", "tracer")

    #: Where internal errors are counted (:func:`tracestitch.instrument.report`).
    site = "middleware"

    def __init__(self, tracer: ServerTracer, run: RunTree, request: Any, method: str) -> None:
        self.tracer = tracer
        self.run = run
        self.request = request
        self.method = method
        self.status: int | None = None
        self.size = 0
        self.done = False
        self.name: str | None = None

    def route_template(self) -> str | None:
        """The template of the route the request matched (``"/items/{id}"``), once routing
        has happened; ``None`` keeps the path as the name. Adapters override it."""
        return None

    def run_name(self) -> str | None:
        """``"{METHOD} {template}"`` from ``route_resolver`` or :meth:`route_template`."""
        resolver = self.tracer.route_resolver
        template = resolver(self.request) if resolver is not None else None
        if not template:
            template = self.route_template()
        return None if template is None else f"{self.method} {template[:MAX_PATH_CHARS]}"

    def routed(self, name: str | None) -> None:
        """Name the run after the route the request matched (``None``: keep the path), and
        keep the route template (OTLP's ``http.route``; a raw path never is one)."""
        if name is not None:
            self.name = self.run.name = name
            self.run.extra["route"] = name.partition(" ")[2]

    def trace_id_header(self) -> tuple[str, str] | None:
        """``(name, trace id)`` for the response, when the app asked for that header."""
        name = self.tracer.trace_header
        return None if name is None else (name, str(self.run.trace_id))

    def end(self, error: BaseException | None = None, *, incomplete: bool = False) -> None:
        """End the run with what is known of the response (5xx or ``error``: errored) and
        hand it to export; later calls do nothing. ``incomplete``: the response was cut
        short (the app returned, or the client left, before the last body chunk)."""
        if self.done:
            return
        self.done = True
        try:
            run = self.run
            if self.name is None:
                name = self.run_name()
                if name is not None:  # as routed() does, without the call: this is every request
                    self.name = run.name = name
                    run.extra["route"] = name.partition(" ")[2]
            status = self.status
            outputs: dict[str, Any] = {"status_code": status, "response_size": self.size}
            if incomplete:
                outputs["incomplete"] = True
            if error is None and status is not None and status >= 500:
                finish_run(run, outputs, self.tracer.status_error(status))
            else:
                finish_run(run, outputs, error)
        except Exception as exc:
            report(f"{self.site}.finish", exc)

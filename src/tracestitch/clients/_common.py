"""What the three client adapters share: options and the start/finish of a client run with
header injection (the ``propagate_to`` policy is in :mod:`._policy`, URL redaction and run
naming in :mod:`._urls`; both re-exported here).

The adapters only translate their framework's request/response objects into plain values
(method, scheme, host, port, path, query, a mutable header object) and call
:meth:`ClientTracer.begin` / :meth:`ClientTracer.finish` / :meth:`ClientTracer.fail`. Those
three never raise in production: an internal error is reported through ``_guard`` (counted and
swallowed; re-raised under tests) and the request goes out as if untraced.

Cost matters here, since this runs on every outgoing call: the per-host policy decision is
cached (bounded), no regular expression runs unless the user supplied one, the run is exported
once (at the end) rather than posted and patched, and a call made outside any run returns after
one context-variable read.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, MutableMapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from tracestitch.clients._policy import PropagateTo, PropagationPolicy
from tracestitch.clients._policy import is_internal_host as is_internal_host  # re-export
from tracestitch.clients._urls import (
    DEFAULT_SENSITIVE_QUERY_KEYS,
    _join_url,
    default_run_name,
    redact_query,
    template_path,
)
from tracestitch.clients._urls import REDACTED as REDACTED  # re-export
from tracestitch.instrument import (
    current_run,
    finish_run,
    inject,
    report,
    start_run,
    tracing_on,
)
from tracestitch.propagation import BAGGAGE, LANGSMITH_TRACE, TRACEPARENT, TRACESTATE
from tracestitch.propagation.baggage import SERVER_ADDRESS_KEY
from tracestitch.redact import QueryRedactor
from tracestitch.run_tree import RunTree

__all__ = [
    "DEFAULT_SENSITIVE_QUERY_KEYS",
    "ClientOptions",
    "ClientTracer",
    "PropagateTo",
    "PropagationPolicy",
    "UrlParts",
    "default_run_name",
    "missing_framework",
    "redact_query",
    "template_path",
]

_OUR_BAGGAGE_PREFIX = "langsmith-"


def missing_framework(module: str, extra: str, exc: ImportError) -> ImportError:
    """The ImportError an adapter raises when its framework is not installed."""
    error = ImportError(
        f"tracestitch.clients.{extra} needs {module}: pip install 'tracestitch[{extra}]'"
    )
    error.__cause__ = exc
    return error


RunNamer = Callable[[str, str, str, int | None, str], str]
#: ``(method, scheme, host, port, path, query)`` of one request, as an adapter reads them.
UrlParts = tuple[str, str, str | None, int | None, str, str]
T = TypeVar("T")


# ---------------------------------------------------------------------------------------------
# Options and the tracer
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientOptions:
    """What every client adapter accepts as keyword options.

    - ``propagate_to``: where trace headers go (:data:`PropagateTo`; default ``"internal"``).
    - ``create_runs``: record a client run per call (default) or only inject headers.
    - ``start_root``: outside any run, start a new trace at the call (default: leave the call
      untraced, with no headers).
    - ``run_type``: the client runs' type (default ``"tool"``).
    - ``run_name``: ``(method, scheme, host, port, path) -> name``; default
      :func:`default_run_name`.
    - ``sensitive_query_keys``: query parameters whose values are redacted in recorded URLs.
    - ``record_query``: keep the (redacted) query string in recorded URLs.
    """

    propagate_to: PropagateTo = "internal"
    create_runs: bool = True
    start_root: bool = False
    run_type: str = "tool"
    run_name: RunNamer | None = None
    sensitive_query_keys: Collection[str] = field(default=DEFAULT_SENSITIVE_QUERY_KEYS)
    record_query: bool = True

    @classmethod
    def names(cls) -> frozenset[str]:
        return frozenset(f.name for f in fields(cls))


_TRACE_HEADERS = (LANGSMITH_TRACE, TRACEPARENT, TRACESTATE)


def strip_trace_headers(headers: MutableMapping[str, Any]) -> None:
    """Remove trace headers we may have injected on an earlier hop (and our baggage members;
    foreign ones stay), for a destination the policy does not allow."""
    if headers.get(LANGSMITH_TRACE) is None:
        # Our marker is absent: whatever traceparent is there belongs to someone else (an
        # OpenTelemetry hook, say), and is theirs to manage.
        return
    for name in _TRACE_HEADERS:
        if headers.get(name) is not None:
            del headers[name]
    baggage = headers.get(BAGGAGE)
    if baggage is not None:
        text = baggage.decode("latin-1") if isinstance(baggage, bytes) else str(baggage)
        kept = [
            m.strip()
            for m in text.split(",")
            if m.strip() and not m.strip().startswith(_OUR_BAGGAGE_PREFIX)
        ]
        del headers[BAGGAGE]
        if kept:
            headers[BAGGAGE] = ",".join(kept)


class ClientTracer:
    """The client-side tracing of one adapter instance.

    Adapters call it like this (all three methods never raise in production)::

        tracer = ClientTracer(propagate_to="internal")
        run = tracer.begin(request, url_parts, request.headers)
        try:
            response = send(request)
        except BaseException as exc:
            tracer.fail(run, exc)
            raise
        tracer.finish(run, response.status, content_length)
    """

    __slots__ = ("_create", "_name", "_query", "_redact", "_root", "_run_type", "policy")

    def __init__(self, options: ClientOptions | None = None, **kwargs: Any) -> None:
        if options is None:
            options = ClientOptions(**kwargs)
        elif kwargs:
            raise TypeError("pass either options or keyword options, not both")
        self.policy = PropagationPolicy(options.propagate_to)
        self._create = options.create_runs
        self._root = options.start_root and options.create_runs
        self._run_type = options.run_type
        self._name: RunNamer = options.run_name or default_run_name
        self._redact = QueryRedactor(options.sensitive_query_keys)
        self._query = options.record_query

    def may_trace(self) -> bool:
        """Whether :meth:`begin` could do anything now: there is a current run, or this
        tracer starts roots. One context-variable read; lets an adapter skip work otherwise."""
        return self._root or current_run() is not None

    def begin(
        self,
        request: T,
        parts: Callable[[T], UrlParts],
        headers: MutableMapping[str, Any],
    ) -> RunTree | None:
        """Start the client run for one request (one hop of a redirect chain) and set or strip
        its trace headers. ``parts(request)`` gives ``(method, scheme, host, port, path,
        query)``; it is called only when there is something to trace. Returns the run to
        finish, or ``None`` when there is none."""
        parent = current_run()
        if parent is None and not self._root:
            return None
        try:
            method, scheme, host, port, path, query = parts(request)
            return self._begin(parent, method, scheme, host or "", port, path, query, headers)
        except Exception as exc:
            report("clients.begin", exc)
            return None

    def _begin(
        self,
        parent: RunTree | None,
        method: str,
        scheme: str,
        host: str,
        port: int | None,
        path: str,
        query: str,
        headers: MutableMapping[str, Any],
    ) -> RunTree | None:
        if parent is not None and not parent.tracing_enabled:
            # A sampled-out trace: no run, but the next service must hear that it is one
            # (traceparent -00), or it would start a trace of its own.
            if self.policy.allows(scheme, host, port, path, query):
                inject(parent, headers)
            return None
        if not tracing_on():
            return None
        run: RunTree | None = None
        if self._create:
            recorded = query if self._query else ""
            if recorded:
                recorded = self._redact(recorded)
            # The callee's address: without it the run would carry the caller's own
            # server.address, inherited from the request run it was made in.
            address = host if port is None else f"{host}:{port}"
            run = start_run(
                self._name(method, scheme, host, port, path),
                self._run_type,
                parent=parent,
                inputs={"method": method, "url": _join_url(scheme, host, port, path, recorded)},
                metadata={SERVER_ADDRESS_KEY: address},
                kind="client",  # its role, for OTLP (CLIENT)
            )
        if self.policy.allows(scheme, host, port, path, query):
            source = run if run is not None else parent
            if source is not None:
                inject(source, headers)
        else:
            strip_trace_headers(headers)
        return run

    def finish(self, run: RunTree | None, status: int | None, size: int | None = None) -> None:
        """End the run with the response status (5xx marks it errored) and size."""
        if run is None:
            return
        try:
            outputs: dict[str, Any] = {"status_code": status}
            if size is not None:
                outputs["response_size"] = size
            # One post of the finished run instead of post-at-start plus patch: half the
            # exporter work; a call open for long was posted by the worker's sweep meanwhile,
            # and then this is a patch (open_runs).
            finish_run(run, outputs, f"HTTP {status}" if status and status >= 500 else None)
        except Exception as exc:
            report("clients.finish", exc)

    def fail(self, run: RunTree | None, error: BaseException) -> None:
        """End the run with the exception the call raised (the caller re-raises it)."""
        if run is None:
            return
        try:
            finish_run(run, error=error)
        except Exception as exc:
            report("clients.finish", exc)


def content_length(value: str | None) -> int | None:
    """A ``Content-Length`` header as an int, ``None`` when absent or malformed."""
    if value is None:
        return None
    try:
        size = int(value)
    except ValueError:
        return None
    return size if size >= 0 else None


def split_options(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(tracing options, everything else)`` from one set of keyword arguments."""
    names = ClientOptions.names()
    ours = {k: v for k, v in kwargs.items() if k in names}
    rest = {k: v for k, v in kwargs.items() if k not in names}
    return ours, rest

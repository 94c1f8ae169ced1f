"""What every server middleware does, whatever the framework: decide whether to trace a request,
start its run under the caller's (or a new root), and end it with the status or the error.

The adapters (``asgi``, ``wsgi``, ``aiohttp``) only translate their framework's request and
response into the calls here, so behaviour is identical across frameworks. Everything a request
pays for is precomputed once per app in :class:`ServerTracer`: the per-request path is a few
dict lookups, one ``RunTree`` and one ``post`` to the exporter.

The options live in :mod:`._options`, what of a request is recorded (and redacted) in
:mod:`._recording`; both are re-exported here.
"""

from __future__ import annotations

import enum
import random
from http import HTTPStatus
from typing import Any

from tracestitch.baggage import SERVER_ADDRESS_KEY, SERVICE_KEY
from tracestitch.context import LOCAL, tracing_enabled, tracing_mode
from tracestitch.exporter import LOCAL_ONLY
from tracestitch.middleware._options import (
    MiddlewareOptions,
    PathMatcher,
    default_service_name,
)
from tracestitch.middleware._options import resolve_options as resolve_options  # re-export
from tracestitch.middleware._recording import (
    ALWAYS_REDACTED_HEADERS,
    DEFAULT_RECORDED_HEADERS,
    MAX_PATH_CHARS,
    REDACTED,
    SENSITIVE_QUERY_KEYS,
    RequestRecorder,
)
from tracestitch.middleware._recording import MAX_HEADER_CHARS as MAX_HEADER_CHARS  # re-export
from tracestitch.middleware._recording import MAX_QUERY_CHARS as MAX_QUERY_CHARS  # re-export
from tracestitch.middleware._recording import readable as readable  # re-export
from tracestitch.open_runs import ship, watch
from tracestitch.propagation import extract_parent
from tracestitch.run_tree import RunTree

__all__ = [
    "ALWAYS_REDACTED_HEADERS",
    "DEFAULT_RECORDED_HEADERS",
    "REDACTED",
    "SENSITIVE_QUERY_KEYS",
    "MiddlewareOptions",
    "Outcome",
    "PathMatcher",
    "ServerTracer",
    "default_service_name",
    "missing_extra",
]


def missing_extra(framework: str, extra: str) -> ImportError:
    """The ImportError an adapter raises when its optional framework is not installed."""
    return ImportError(
        f"tracestitch's {framework} middleware needs {framework}: "
        f"pip install 'tracestitch[{extra}]'"
    )


# ---------------------------------------------------------------------------------------------
# The shared request path
# ---------------------------------------------------------------------------------------------


class Outcome(enum.Enum):
    """What to do with a request that gets no run of its own."""

    PASS = "pass"  # not traced here: the app runs as if the middleware were absent
    # Excluded, or a new root not sampled: the app runs with tracing disabled and no parent,
    # so it makes no runs and propagates nothing.
    DISABLED = "disabled"
    NEW_ROOT = "new_root"  # traced, as the root of a new trace


_random = random.random


class ServerTracer(RequestRecorder):
    """The framework-independent half of a middleware, built once per app (what it records of
    a request comes from :class:`RequestRecorder`)."""

    __slots__ = (
        "_exclude",
        "_limits",
        "_meta",
        "_meta_by_server",
        "_new_roots",
        "_project",
        "_sample_rate",
        "_skip_methods",
        "_status_errors",
        "_tags",
        "_trust",
        "options",
        "route_resolver",
        "run_type",
        "service",
        "trace_header",
    )

    def __init__(self, options: MiddlewareOptions, app: Any = None) -> None:
        self.options = options
        self.service = options.service or default_service_name(app)
        self.run_type = options.run_type
        self.route_resolver = options.route_resolver
        self.trace_header = options.trace_id_header.lower() if options.trace_id_header else None
        self._project = options.project_name
        self._tags = list(options.tags) if options.tags else None
        # The service's own facts (never sent downstream: see baggage.LOCAL_METADATA_KEYS).
        self._meta: dict[str, Any] = {**(options.metadata or {}), SERVICE_KEY: self.service}
        self._meta_by_server: dict[tuple[Any, Any], dict[str, Any]] = {}
        matcher = PathMatcher(options.exclude)
        self._exclude = matcher if matcher else None
        self._skip_methods = frozenset(m.upper() for m in options.exclude_methods)
        self._new_roots = options.start_new_trace
        self._sample_rate = options.sample_rate
        self._trust = options.trust_incoming
        self._limits = options.limits
        super().__init__(options.record_headers, options.redact_query_params)
        self._status_errors: dict[int, str] = {}

    def learn_app(self, app: Any) -> None:
        """Name the service after ``app`` unless named explicitly: a middleware added with
        ``app.add_middleware(...)`` wraps an inner stack and first sees the app itself in a
        request (ASGI ``scope["app"]``)."""
        if self.options.service is not None:
            return
        service = default_service_name(app)
        if service != self.service:
            self.service = service
            self._meta = {**self._meta, SERVICE_KEY: service}
            self._meta_by_server = {}

    # -- deciding ------------------------------------------------------------------------------

    def admit(self, method: str, path: str) -> Outcome | None:
        """``None`` when the request is to be traced, else what to do instead: an excluded
        request runs with tracing disabled (a health check's traced helpers must not turn
        into a stream of root runs); with tracing switched off, nothing changes."""
        if method in self._skip_methods:
            return Outcome.DISABLED
        exclude = self._exclude
        if exclude is not None and exclude(path):
            return Outcome.DISABLED
        # A header links runs; it cannot switch tracing on where the host switched it off.
        return None if tracing_enabled() else Outcome.PASS

    def parent(self, carrier: Any, has_trace: bool = True) -> RunTree | Outcome:
        """The caller's run (a never-exported stand-in) to start under, or an :class:`Outcome`.

        ``has_trace=False`` tells that the adapter's own header scan found neither
        ``langsmith-trace`` nor ``traceparent``, so there is nothing to parse.
        """
        if has_trace:
            parent = extract_parent(carrier, trust=self._trust, limits=self._limits)
            if parent is not None:
                return parent
        if not self._new_roots:
            return Outcome.PASS
        rate = self._sample_rate
        if rate < 1.0 and _random() >= rate:
            return Outcome.DISABLED
        return Outcome.NEW_ROOT

    def decide(
        self, method: str, path: str, carrier: Any, has_trace: bool
    ) -> RunTree | Outcome | None:
        """:meth:`admit` then :meth:`parent`, as every adapter needs them: ``None`` (pass the
        request through untouched), ``Outcome.DISABLED`` (run it with tracing off), or the
        parent to start the request's run under (the caller's run or ``Outcome.NEW_ROOT``)."""
        skip = self.admit(method, path)
        if skip is not None:
            return None if skip is Outcome.PASS else skip
        parent = self.parent(carrier, has_trace)
        return None if parent is Outcome.PASS else parent

    # -- the run -------------------------------------------------------------------------------

    def start(
        self,
        parent: RunTree | Outcome,
        name: str,
        inputs: dict[str, Any],
        server: tuple[Any, Any] | None,
    ) -> RunTree:
        """The request's run, not yet posted: it is posted once, complete, by :meth:`finish`
        (one hand-over to the exporter instead of two, with the final route name)."""
        meta = self._meta
        if server is not None:
            if type(server) is not tuple:  # the ASGI spec allows a list (TestClient sends one)
                server = tuple(server)
            found = self._meta_by_server.get(server)
            if found is None:
                host, port = server
                address = str(host) if port is None else f"{host}:{port}"
                found = {**meta, SERVER_ADDRESS_KEY: address}
                if len(self._meta_by_server) < 64:  # bounded: servers are few
                    self._meta_by_server[server] = found
            meta = found
        if isinstance(parent, RunTree):
            run = parent.create_child(
                name,
                self.run_type,
                inputs=inputs,
                metadata=meta,
                tags=self._tags,
                project_name=self._project,
            )
        else:
            run = RunTree._new_root(name, self.run_type, inputs, meta, self._tags, self._project)
        if run.exporter is None and tracing_mode() is LOCAL:
            run.exporter = LOCAL_ONLY  # a capture while tracing is off: seen, not exported
        # Its role, for exporters that have span kinds (OTLP: SERVER). In extra, not metadata:
        # metadata is inherited by child runs and carried downstream, a role is not.
        run.extra = {"span_kind": "server"}
        watch(run)  # a request open for long is posted meanwhile by the export worker
        return run

    def finish(
        self,
        run: RunTree,
        status: int | None,
        size: int,
        error: BaseException | None = None,
        *,
        incomplete: bool = False,
    ) -> None:
        """End ``run`` with the response's status and size (5xx marks it errored) and post it."""
        outputs: dict[str, Any] = {"status_code": status, "response_size": size}
        if incomplete:
            # The app returned or the client left before the last body chunk was sent.
            outputs["incomplete"] = True
        if error is not None:
            run.end(outputs=outputs, error=error)
        elif status is not None and status >= 500:
            run.end(outputs=outputs, error=self._status_error(status))
        else:
            run.end(outputs=outputs)
        ship(run)

    def routed(self, run: RunTree, name: str) -> None:
        """Name ``run`` after the route the request matched (``name`` from :meth:`name`, as
        ``"GET /items/{id}"``) and keep the route template (OTLP's ``http.route``; a raw path
        is never recorded as a route)."""
        run.name = name
        run.extra["route"] = name.partition(" ")[2]

    def _status_error(self, status: int) -> str:
        text = self._status_errors.get(status)
        if text is None:
            try:
                text = f"HTTP {status} {HTTPStatus(status).phrase}"
            except ValueError:
                text = f"HTTP {status}"
            if len(self._status_errors) < 100:
                self._status_errors[status] = text
        return text

    def name(self, method: str, template: str) -> str:
        return f"{method} {template[:MAX_PATH_CHARS]}"

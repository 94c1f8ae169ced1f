"""What every server middleware does, whatever the framework: decide whether to trace a request,
start its run under the caller's (or a new root), and end it with the status or the error.

The adapters (``asgi``, ``wsgi``, ``aiohttp``) only translate their framework's request and
response into the calls here and into an :class:`Exchange <._exchange.Exchange>` (which holds
the run until it ends, once), so behaviour is identical across frameworks. Everything a request
pays for is precomputed once per app in :class:`ServerTracer`: the per-request path is a few
dict lookups, one ``RunTree`` and one ``post`` to the exporter.

The options live in :mod:`._options`, what of a request is recorded (and redacted) in
:mod:`._recording`; both are re-exported here. Runs are made through the public
:mod:`tracestitch.instrument`, as any integration's.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, MutableMapping
from http import HTTPStatus
from typing import Any

from tracestitch import ids
from tracestitch.instrument import start_run, tracing_on
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
from tracestitch.propagation import RemoteParent, extract
from tracestitch.propagation.baggage import SERVER_ADDRESS_KEY, SERVICE_KEY
from tracestitch.run_tree import RunTree
from tracestitch.sampling import continues, default_rate, is_sampled

__all__ = [
    "ALWAYS_REDACTED_HEADERS",
    "DEFAULT_RECORDED_HEADERS",
    "REDACTED",
    "SENSITIVE_QUERY_KEYS",
    "UNTRACED",
    "MiddlewareOptions",
    "NewRoot",
    "Outcome",
    "PathMatcher",
    "ServerTracer",
    "Untraced",
    "default_service_name",
    "missing_extra",
    "start_asgi_run",
]


# ASGI's shapes, as the ASGI adapters (HTTP and WebSocket) type them.
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


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


class Untraced:
    """A request to run with tracing disabled, under ``parent`` (``None``: no parent at all),
    so that its code makes no runs (and, without a parent, propagates nothing)."""

    __slots__ = ("parent",)

    def __init__(self, parent: RunTree | None) -> None:
        self.parent = parent


#: Excluded paths and methods.
UNTRACED = Untraced(None)


class NewRoot:
    """A new root whose id was drawn first, to decide its sampling by it (the trace id is
    what every service of the trace hashes)."""

    __slots__ = ("made",)

    def __init__(self, made: tuple[ids.RunId, str, int]) -> None:
        self.made = made


def unsampled(parent: RunTree) -> Untraced:
    """A request sampled out under ``parent`` (a stand-in whose ``tracing_enabled`` is false):
    it records nothing, and its outgoing calls pass ``traceparent`` ``-00`` on, so the next
    services record nothing of the trace either."""
    return Untraced(parent)


def unsampled_root(made: tuple[ids.RunId, str, int]) -> Untraced:
    """A new trace sampled out here, under a stand-in with the id it would have had."""
    return unsampled(RunTree("unsampled", id=made[0], tracing_enabled=False))


class ServerTracer:
    """The framework-independent half of a middleware, built once per app: decides whether to
    trace a request, starts its run and finishes it. What it records of a request is its
    :attr:`recorder`'s (a part, not a base class: the recorder knows nothing of runs)."""

    __slots__ = (
        "_app_seen",
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
        "inputs",
        "options",
        "recorder",
        "route_resolver",
        "run_type",
        "service",
        "trace_header",
    )

    def __init__(self, options: MiddlewareOptions, app: Any = None) -> None:
        self.options = options
        self.service = options.service or default_service_name(app)
        # Whether the app the requests name (ASGI scope["app"]) was looked at: see learn_app.
        self._app_seen = options.service is not None
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
        rate = default_rate() if options.sample_rate is None else options.sample_rate
        self._sample_rate: float | None = None if rate is None or rate >= 1.0 else rate
        self._trust = options.trust_incoming
        self._limits = options.limits
        self.recorder = RequestRecorder(options.record_headers, options.redact_query_params)
        #: ``inputs(method, path, query, client, headers)``: the run's inputs (the recorder's).
        self.inputs = self.recorder.inputs
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
        return None if tracing_on() else Outcome.PASS

    def parent(
        self, carrier: Any, has_trace: bool = True
    ) -> RemoteParent | Outcome | Untraced | NewRoot:
        """The caller's run (as read from its headers) to start under, a new root
        (``Outcome.NEW_ROOT``, or a :class:`NewRoot` when its id decided its sampling), an
        :class:`Untraced` (sampled out, by the caller's W3C flag or by the trace id's hash as
        the LangSmith SDKs decide it), or ``Outcome.PASS``.

        ``has_trace=False`` tells that the adapter's own header scan found neither
        ``langsmith-trace`` nor ``traceparent``, so there is nothing to parse.
        """
        rate = self._sample_rate
        if has_trace:
            remote = extract(carrier, trust=self._trust, limits=self._limits)
            if remote is not None:
                if continues(remote, rate):
                    return remote
                # Sampled out: a stand-in, not recording, is the current run, so outgoing
                # calls pass traceparent -00 on and the next services record nothing either.
                stand_in = RunTree.from_remote(remote)
                stand_in.tracing_enabled = False
                return unsampled(stand_in)
        if not self._new_roots:
            return Outcome.PASS
        if rate is None:
            return Outcome.NEW_ROOT
        made = ids.new_run_id()
        return NewRoot(made) if is_sampled(made[1], rate) else unsampled_root(made)

    def decide(
        self, method: str, path: str, carrier: Any, has_trace: bool
    ) -> RemoteParent | Outcome | Untraced | NewRoot | None:
        """:meth:`admit` then :meth:`parent`, as every adapter needs them: ``None`` (pass the
        request through untouched), an :class:`Untraced` (run it with tracing disabled), or
        the parent to :meth:`start` the request's run under (the caller's run or
        ``Outcome.NEW_ROOT``)."""
        skip = self.admit(method, path)
        if skip is not None:
            return None if skip is Outcome.PASS else UNTRACED
        parent = self.parent(carrier, has_trace)
        if parent is Outcome.PASS:
            return None
        return UNTRACED if parent is Outcome.DISABLED else parent

    # -- the run -------------------------------------------------------------------------------

    def start(
        self,
        parent: RemoteParent | Outcome | NewRoot,
        method: str,
        path: str,
        query: str,
        client: str | None,
        headers: dict[str, str] | None,
        server: tuple[Any, Any] | None,
    ) -> RunTree:
        """The request's run under ``parent`` (from :meth:`decide`), named after its path until
        routed; not yet posted: its :class:`Exchange <._exchange.Exchange>` hands it on once,
        complete, at its end (one hand-over to the exporter instead of two, with the final
        route name). ``headers`` are those the recorder kept."""
        inputs = self.inputs(method, path, query, client, headers)
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
        remote = parent if type(parent) is RemoteParent else None
        run = start_run(
            f"{method} {path[:MAX_PATH_CHARS]}",  # until routed
            self.run_type,
            remote,
            inputs,
            meta,
            self._tags,
            self._project,
            "server",  # its role, for exporters that have span kinds (OTLP: SERVER)
            parent.made if type(parent) is NewRoot else None,
        )
        if run is None:  # decide() saw tracing on in this very context: cannot happen
            raise RuntimeError("tracing switched off between decide() and start()")
        if remote is not None and remote.ancestor_span is not None:
            # An OpenTelemetry hop between the caller's tracestitch run and this one: which
            # run it was (the collector places this run under it).
            run.extra["w3c_ancestor"] = remote.ancestor_span
        return run

    def status_error(self, status: int) -> str:
        """The error a 5xx response marks its run with: ``"HTTP 503 Service Unavailable"``."""
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
        """A server run's name: ``"GET /items/{item_id}"``."""
        return f"{method} {template[:MAX_PATH_CHARS]}"


def start_asgi_run(tracer: ServerTracer, scope: Any, method: str) -> RunTree | Untraced | None:
    """The run of an ASGI connection (an HTTP request, a WebSocket), from its scope: the
    headers read once (recorded, and the trace headers for :meth:`ServerTracer.decide`), then
    decided and started. ``None``: pass it through untouched; an :class:`Untraced`: run it
    with tracing disabled."""
    if not tracer._app_seen:  # the first connection: the app it names, once
        tracer._app_seen = True
        app = scope.get("app")
        if app is not None:
            tracer.learn_app(app)
    path: str = scope["path"]
    headers, trace = tracer.recorder.scan_pairs(scope.get("headers") or ())
    parent = tracer.decide(method, path, trace, trace is not None)
    if parent is None or isinstance(parent, Untraced):
        return parent
    raw_query = scope.get("query_string")
    query = raw_query.decode("latin-1") if raw_query else ""
    client = scope.get("client")
    host = client[0] if client else None
    return tracer.start(parent, method, path, query, host, headers, scope.get("server"))

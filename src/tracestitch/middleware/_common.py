"""What every server middleware does, whatever the framework: decide whether to trace a request,
start its run under the caller's (or a new root), and end it with the status or the error.

The adapters (``asgi``, ``wsgi``, ``aiohttp``) only translate their framework's request and
response into the calls here, so behaviour is identical across frameworks. Everything a request
pays for is precomputed once per app in :class:`ServerTracer`: the per-request path is a few
dict lookups, one ``RunTree`` and one ``post`` to the exporter.
"""

from __future__ import annotations

import enum
import os
import random
import re
import sys
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from http import HTTPStatus
from typing import Any

from tracestitch.context import tracing_enabled
from tracestitch.propagation import DEFAULT_LIMITS, Limits, extract_parent
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

REDACTED = "[REDACTED]"
#: Recorded as ``[REDACTED]`` even when listed in ``record_headers``: credentials never leave.
ALWAYS_REDACTED_HEADERS = frozenset(
    ("authorization", "cookie", "set-cookie", "x-api-key", "proxy-authorization")
)
#: Request headers recorded by default: useful for support, never secrets.
DEFAULT_RECORDED_HEADERS = (
    "accept",
    "content-length",
    "content-type",
    "user-agent",
    "x-request-id",
)
#: Query parameters whose values are redacted (compared case-insensitively, after decoding).
SENSITIVE_QUERY_KEYS = frozenset(
    (
        "access_token",
        "api-key",
        "api_key",
        "apikey",
        "auth",
        "authorization",
        "client_secret",
        "code",
        "id_token",
        "jwt",
        "key",
        "passwd",
        "password",
        "pwd",
        "refresh_token",
        "secret",
        "session",
        "sessionid",
        "sig",
        "signature",
        "token",
        "x-amz-credential",
        "x-amz-security-token",
        "x-amz-signature",
        "x-goog-signature",
    )
)

# Caps on what one request can make us record: a hostile URL or header must not bloat runs.
MAX_PATH_CHARS = 2048
MAX_QUERY_CHARS = 2048
MAX_HEADER_CHARS = 1024


def missing_extra(framework: str, extra: str) -> ImportError:
    """The ImportError an adapter raises when its optional framework is not installed."""
    return ImportError(
        f"tracestitch's {framework} middleware needs {framework}: "
        f"pip install 'tracestitch[{extra}]'"
    )


# ---------------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MiddlewareOptions:
    """Keyword options shared by the ASGI, WSGI and aiohttp middleware.

    ``exclude`` entries: a plain path matches exactly (``"/health"`` does not exclude
    ``"/healthcheck"``); a trailing ``*`` makes a prefix (``"/static/*"``); a string starting
    with ``^`` or a compiled pattern is a regex that must match the whole path. Excluded
    requests, and ``exclude_methods``, run with tracing disabled: no runs at all.

    ``start_new_trace``: trace requests that arrive without a parent header as new roots
    (off: such requests pass through untouched, and the app's own runs become roots).
    ``sample_rate``: the share of those new roots that are traced; a sampled-out request makes
    no runs and propagates nothing (the app runs with tracing disabled). Requests with a parent
    always follow the caller's decision.

    ``trust_incoming`` is passed to :func:`tracestitch.propagation.extract` as ``trust``: what
    the caller's ``baggage`` may set here (``True``, ``False``, or a subset of
    ``{"metadata", "tags", "project", "replicas"}``; default: all but ``replicas``).

    ``trace_id_header``: a response header (e.g. ``"x-trace-id"``) carrying the trace id, so a
    caller or support engineer can find the trace. ``route_resolver``: a callable given the
    framework's request (ASGI scope, WSGI environ, aiohttp request) returning the route
    template, or ``None`` to fall back to the built-in lookup.

        MiddlewareOptions(service="checkout", exclude=["/health", "/static/*"], sample_rate=0.1)
    """

    service: str | None = None
    run_type: str = "chain"
    project_name: str | None = None
    metadata: Mapping[str, Any] | None = None
    tags: Sequence[str] | None = None
    exclude: Sequence[str | re.Pattern[str]] = ()
    exclude_methods: Collection[str] = ("OPTIONS", "HEAD")
    start_new_trace: bool = True
    sample_rate: float = 1.0
    # Replicas are left out by default: they would let any caller make this service write a
    # copy of every run, with its own credentials, into projects the caller names.
    trust_incoming: bool | Collection[str] = frozenset(("metadata", "tags", "project"))
    trace_id_header: str | None = None
    record_headers: Collection[str] = DEFAULT_RECORDED_HEADERS
    redact_query_params: Collection[str] = SENSITIVE_QUERY_KEYS
    route_resolver: Callable[[Any], str | None] | None = None
    limits: Limits = DEFAULT_LIMITS
    flush_timeout: float = 5.0

    def __post_init__(self) -> None:
        # Configuration errors surface when the app is built, not on its first request.
        if not 0.0 <= self.sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be within [0, 1], got {self.sample_rate!r}")
        if isinstance(self.exclude, str) or isinstance(self.record_headers, str):
            raise TypeError("exclude and record_headers take a list of strings, not a string")
        if self.trace_id_header is not None and not _is_token(self.trace_id_header):
            raise ValueError(
                f"trace_id_header is not a valid header name: {self.trace_id_header!r}"
            )
        PathMatcher(self.exclude)  # validates the patterns


_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _is_token(name: str) -> bool:
    return _TOKEN_RE.fullmatch(name) is not None


class PathMatcher:
    """Exact paths, ``*``-suffixed prefixes and anchored regexes, checked cheapest first::

    PathMatcher(["/health", "/static/*", r"^/v\\d+/internal/.*"])("/static/app.js")  # True
    """

    __slots__ = ("_exact", "_prefixes", "_regexes")

    def __init__(self, patterns: Iterable[str | re.Pattern[str]]) -> None:
        exact: set[str] = set()
        prefixes: list[str] = []
        regexes: list[re.Pattern[str]] = []
        for pattern in patterns:
            if isinstance(pattern, re.Pattern):
                regexes.append(pattern)
            elif not isinstance(pattern, str) or not pattern:
                raise TypeError(
                    f"an exclude pattern must be a non-empty str or re.Pattern: {pattern!r}"
                )
            elif pattern.startswith("^"):
                regexes.append(re.compile(pattern))
            elif pattern.endswith("*"):
                prefixes.append(pattern[:-1])
            else:
                exact.add(pattern)
        self._exact = frozenset(exact)
        self._prefixes = tuple(prefixes)
        self._regexes = tuple(regexes)

    def __bool__(self) -> bool:
        return bool(self._exact or self._prefixes or self._regexes)

    def __call__(self, path: str) -> bool:
        if path in self._exact:
            return True
        if self._prefixes and path.startswith(self._prefixes):
            return True
        # fullmatch: a regex excludes only what it spells out, like the exact paths.
        return any(regex.fullmatch(path) is not None for regex in self._regexes)


def default_service_name(app: Any = None) -> str:
    """``TRACESTITCH_SERVICE_NAME`` / ``OTEL_SERVICE_NAME``, else the app's own name (FastAPI
    ``title``, Flask ``name``), else the process's script name."""
    for var in ("TRACESTITCH_SERVICE_NAME", "OTEL_SERVICE_NAME"):
        value = os.environ.get(var)
        if value:
            return value
    for attr in ("title", "name"):
        value = getattr(app, attr, None)
        # FastAPI's default title and a module run as a script say nothing about the service.
        if isinstance(value, str) and value and value not in ("FastAPI", "__main__"):
            return value
    script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    script = os.path.splitext(script)[0]
    if script in ("", "-c", "__main__"):
        return "python"
    return script


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
_TRACE_KEYS = frozenset((b"langsmith-trace", b"traceparent"))
_QUERY_SPLIT = re.compile("([&;])")


def resolve_options(options: MiddlewareOptions | None, kwargs: dict[str, Any]) -> MiddlewareOptions:
    """The adapters' ``options=`` plus keyword overrides, as one ``MiddlewareOptions``."""
    if options is None:
        return MiddlewareOptions(**kwargs)
    return replace(options, **kwargs) if kwargs else options


class ServerTracer:
    """The framework-independent half of a middleware, built once per app."""

    __slots__ = (
        "_exclude",
        "_header_bytes",
        "_header_names",
        "_limits",
        "_meta",
        "_meta_by_server",
        "_new_roots",
        "_project",
        "_query_probe",
        "_redacted",
        "_sample_rate",
        "_sensitive_query",
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
        self._meta: dict[str, Any] = {**(options.metadata or {}), "service": self.service}
        self._meta_by_server: dict[tuple[Any, Any], dict[str, Any]] = {}
        matcher = PathMatcher(options.exclude)
        self._exclude = matcher if matcher else None
        self._skip_methods = frozenset(m.upper() for m in options.exclude_methods)
        self._new_roots = options.start_new_trace
        self._sample_rate = options.sample_rate
        self._trust = options.trust_incoming
        self._limits = options.limits
        recorded = {h.lower() for h in options.record_headers}
        self._header_names = {h: h for h in recorded}
        self._header_bytes = {h.encode("latin-1"): h for h in recorded}
        self._redacted = ALWAYS_REDACTED_HEADERS
        self._sensitive_query = frozenset(k.lower() for k in options.redact_query_params)
        self._query_probe = (
            re.compile(
                "(?:^|[&;])\\s*(?:"
                + "|".join(re.escape(k) for k in sorted(self._sensitive_query))
                + ")\\s*=",
                re.IGNORECASE,
            )
            if self._sensitive_query
            else None
        )
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
            self._meta = {**self._meta, "service": service}
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
                found = {**meta, "server.address": address}
                if len(self._meta_by_server) < 64:  # bounded: servers are few
                    self._meta_by_server[server] = found
            meta = found
        if isinstance(parent, RunTree):
            return parent.create_child(
                name,
                self.run_type,
                inputs=inputs,
                metadata=meta,
                tags=self._tags,
                project_name=self._project,
            )
        return RunTree._new_root(name, self.run_type, inputs, meta, self._tags, self._project)

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
        run.post()

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

    # -- recording the request -----------------------------------------------------------------

    def inputs(
        self,
        method: str,
        path: str,
        query: str,
        client: str | None,
        headers: dict[str, str] | None,
    ) -> dict[str, Any]:
        inputs: dict[str, Any] = {"method": method, "path": path[:MAX_PATH_CHARS]}
        if query:
            inputs["query"] = self.redact_query(query)
        if client:
            inputs["client"] = client
        if headers:
            inputs["headers"] = headers
        return inputs

    def redact_query(self, query: str) -> str:
        """``query`` with the values of sensitive keys replaced by ``[REDACTED]`` (capped)."""
        query = query[:MAX_QUERY_CHARS]
        # Most queries name no sensitive key: one regex scan says so, without splitting. An
        # encoded key ("%74oken", "a+b") could hide from it, so those take the full path.
        probe = self._query_probe
        if probe is None or (probe.search(query) is None and "%" not in query and "+" not in query):
            return query
        sensitive = self._sensitive_query
        # Split keeping the separators (some servers still treat ";" as one), so an unchanged
        # query is rebuilt exactly.
        parts = _QUERY_SPLIT.split(query)
        changed = False
        for i, part in enumerate(parts):
            if i % 2:
                continue
            raw_key, sep, _value = part.partition("=")
            if not sep:
                continue
            key = raw_key.lower()
            if "%" in key or "+" in key:
                key = _unquote_plus(key)
            if key.strip() in sensitive:
                parts[i] = f"{raw_key}={REDACTED}"
                changed = True
        return "".join(parts) if changed else query

    def name(self, method: str, template: str) -> str:
        return f"{method} {template[:MAX_PATH_CHARS]}"

    def _add_header(self, found: dict[str, str], name: str, value: str) -> None:
        if name in self._redacted:
            value = REDACTED
        elif len(value) > MAX_HEADER_CHARS:
            value = value[:MAX_HEADER_CHARS]
        previous = found.get(name)
        found[name] = value if previous is None else f"{previous}, {value}"[:MAX_HEADER_CHARS]

    def scan_pairs(
        self, pairs: Iterable[tuple[bytes, bytes]]
    ) -> tuple[dict[str, str] | None, bool]:
        """One pass over an ASGI ``headers`` list: the allow-listed headers, and whether a
        parent header (``langsmith-trace`` / ``traceparent``) is present at all."""
        wanted = self._header_bytes
        found: dict[str, str] | None = None
        has_trace = False
        for key, value in pairs:
            # ASGI servers lower-case header names, so no per-header .lower() here.
            name = wanted.get(key)
            if name is None:
                if key in _TRACE_KEYS:
                    has_trace = True
                continue
            if found is None:
                found = {}
            self._add_header(found, name, value.decode("latin-1"))
        return found, has_trace

    def headers_from_environ(self, environ: Mapping[str, Any]) -> dict[str, str] | None:
        """Allow-listed headers from a WSGI environ (``HTTP_*``, and the two CGI exceptions)."""
        found: dict[str, str] | None = None
        for name in self._header_names:
            if name == "content-type":
                key = "CONTENT_TYPE"
            elif name == "content-length":
                key = "CONTENT_LENGTH"
            else:
                key = "HTTP_" + name.upper().replace("-", "_")
            value = environ.get(key)
            if value is None or value == "":
                continue
            if found is None:
                found = {}
            self._add_header(found, name, str(value))
        return found

    def headers_from_multidict(self, headers: Any) -> dict[str, str] | None:
        """Allow-listed headers from a case-insensitive multi-dict (aiohttp's ``CIMultiDict``)."""
        found: dict[str, str] | None = None
        for name in self._header_names:
            for value in headers.getall(name, ()):
                if found is None:
                    found = {}
                self._add_header(found, name, str(value))
        return found


def _unquote_plus(text: str) -> str:
    from urllib.parse import unquote_plus

    return unquote_plus(text)

"""The middleware's options: :class:`MiddlewareOptions` (validated when the app is built) and
the ``exclude`` path matcher; the default service name is
:func:`tracestitch.instrument.service_name`'s (re-exported as ``default_service_name``)."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from tracestitch.instrument import service_name as default_service_name  # re-export
from tracestitch.middleware._recording import DEFAULT_RECORDED_HEADERS, SENSITIVE_QUERY_KEYS
from tracestitch.propagation import DEFAULT_LIMITS, Limits

__all__ = [
    "MiddlewareOptions",
    "PathMatcher",
    "WebSocketOptions",
    "default_service_name",
    "resolve_options",
]

_WEBSOCKET_MESSAGES = ("events", "runs", "off")


@dataclass(frozen=True, slots=True)
class WebSocketOptions:
    """How the ASGI middleware records a WebSocket connection's messages (its run itself, one
    per connection named ``"WS {route}"``, is always made when the connection is traced).

    ``messages``: ``"events"`` (the default) records each message received or sent as an
    event on the connection's run (``websocket.receive`` / ``websocket.send``: its type,
    ``text`` or ``bytes``, and size: characters of a text message, bytes of a binary one);
    ``"runs"`` makes each received message a child run (``websocket.receive``), current
    while the app handles it (until it asks for the next message), so the traced calls it
    makes nest under it, and messages sent meanwhile are its events; ``"off"`` records only
    the counts. ``max_events``: events kept per run; those past it are counted in the run's
    ``events_dropped`` output. ``record_content``: also record each message's content (at
    most 1,024 characters; bytes decoded as UTF-8), off by default: messages carry user data.

        TracingMiddleware(app, websocket=WebSocketOptions(messages="runs"))
    """

    messages: str = "events"
    max_events: int = 100
    record_content: bool = False

    def __post_init__(self) -> None:
        if self.messages not in _WEBSOCKET_MESSAGES:
            raise ValueError(f"messages must be one of {_WEBSOCKET_MESSAGES}: {self.messages!r}")
        if self.max_events < 0:
            raise ValueError(f"max_events must be 0 or more, got {self.max_events!r}")


@dataclass(frozen=True, slots=True)
class MiddlewareOptions:
    """Keyword options shared by the ASGI, WSGI and aiohttp middleware.

    ``exclude`` entries: a plain path matches exactly (``"/health"`` does not exclude
    ``"/healthcheck"``); a trailing ``*`` makes a prefix (``"/static/*"``); a string starting
    with ``^`` or a compiled pattern is a regex that must match the whole path. Excluded
    requests, and ``exclude_methods``, run with tracing disabled: no runs at all.

    ``start_new_trace``: trace requests that arrive without a parent header as new roots
    (off: such requests pass through untouched, and the app's own runs become roots).
    ``sample_rate``: the share of traces recorded, decided from the trace id as the LangSmith
    SDKs decide it (:mod:`tracestitch.sampling`), so services with the same rate keep or drop
    a trace together; default: the environment's ``TRACESTITCH_TRACING_SAMPLING_RATE`` /
    ``LANGSMITH_TRACING_SAMPLING_RATE``, else all. It applies to new roots and to callers that
    send ``langsmith-trace``; an OpenTelemetry caller's W3C sampled flag is followed as it is.
    A sampled-out request makes no runs, and its outgoing calls carry only a ``traceparent``
    with the sampled flag ``00``, so the services after it record nothing of it either.

    ``trust_incoming`` is passed to :func:`tracestitch.propagation.extract` as ``trust``: what
    the caller's ``baggage`` may set here (``True``, ``False``, or a subset of
    ``{"metadata", "tags", "project", "replicas"}``; default: all but ``replicas``).

    ``trace_id_header``: a response header (e.g. ``"x-trace-id"``) carrying the trace id, so a
    caller or support engineer can find the trace. ``route_resolver``: a callable given the
    framework's request (ASGI scope, WSGI environ, aiohttp or Django request) returning the
    route template, or ``None`` to fall back to the built-in lookup. ``websocket``: how the ASGI
    middleware records WebSocket messages (:class:`WebSocketOptions`); the others ignore it.

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
    sample_rate: float | None = None
    # Replicas are left out by default: they would let any caller make this service write a
    # copy of every run, with its own credentials, into projects the caller names.
    trust_incoming: bool | Collection[str] = frozenset(("metadata", "tags", "project"))
    trace_id_header: str | None = None
    record_headers: Collection[str] = DEFAULT_RECORDED_HEADERS
    redact_query_params: Collection[str] = SENSITIVE_QUERY_KEYS
    route_resolver: Callable[[Any], str | None] | None = None
    limits: Limits = DEFAULT_LIMITS
    flush_timeout: float = 5.0
    websocket: WebSocketOptions = WebSocketOptions()

    def __post_init__(self) -> None:
        # Configuration errors surface when the app is built, not on its first request.
        if self.sample_rate is not None and not 0.0 <= self.sample_rate <= 1.0:
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


def resolve_options(options: MiddlewareOptions | None, kwargs: dict[str, Any]) -> MiddlewareOptions:
    """The adapters' ``options=`` plus keyword overrides, as one ``MiddlewareOptions``."""
    if options is None:
        return MiddlewareOptions(**kwargs)
    return replace(options, **kwargs) if kwargs else options

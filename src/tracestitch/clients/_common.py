"""What the three client adapters share: options, the ``propagate_to`` policy, URL redaction,
run naming, and the start/finish of a client run with header injection.

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

import ipaddress
import re
import socket
from collections.abc import Callable, Collection, Iterable, MutableMapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypeVar
from urllib.parse import unquote_plus, urlsplit

from tracestitch._guard import report
from tracestitch.context import _config, _current_run, tracing_enabled
from tracestitch.propagation import BAGGAGE, LANGSMITH_TRACE, TRACEPARENT, TRACESTATE, inject
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

#: What ``propagate_to`` accepts: a preset name, or a list whose entries are host names
#: (``"api.example.com"``), wildcards (``"*.example.com"``), IP networks (``"10.0.0.0/8"``),
#: URL prefixes (``"https://partner.example/v1/"``), compiled regexes (matched with ``re.match``
#: against the URL without userinfo) and the presets ``"internal"`` / ``"all"``.
PropagateTo = Literal["internal", "all", "none"] | Iterable[str | re.Pattern[str]]

#: Query parameters whose values are replaced by ``REDACTED`` in recorded URLs (compared
#: lowercased; any key containing one of :data:`_SENSITIVE_FRAGMENTS` is redacted too).
DEFAULT_SENSITIVE_QUERY_KEYS = frozenset(
    (
        "code",
        "jwt",
        "key",
        "otp",
        "pass",
        "pwd",
        "sig",
        "x-amz-credential",
        "x-amz-security-token",
        "x-goog-credential",
    )
)
_SENSITIVE_FRAGMENTS = (
    "token",
    "secret",
    "passw",
    "signature",
    "apikey",
    "api_key",
    "api-key",
    "auth",
    "credential",
    "session",
)
REDACTED = "REDACTED"

_INTERNAL_SUFFIXES = (".svc.cluster.local", ".local", ".internal", ".localhost")
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_HEX = frozenset("0123456789abcdefABCDEF")
_DIGITS = frozenset("0123456789")
_OUR_BAGGAGE_PREFIX = "langsmith-"


def missing_framework(module: str, extra: str, exc: ImportError) -> ImportError:
    """The ImportError an adapter raises when its framework is not installed."""
    error = ImportError(
        f"tracestitch.clients.{extra} needs {module}: pip install 'tracestitch[{extra}]'"
    )
    error.__cause__ = exc
    return error


# ---------------------------------------------------------------------------------------------
# The propagate_to policy
# ---------------------------------------------------------------------------------------------


def _parse_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        # "2130706433", "127.1" and "0x7f.1" are 127.0.0.1 to the resolver; judge them as the
        # address they connect to, not as a single-label name.
        if host[:1].isdigit():
            try:
                return ipaddress.IPv4Address(socket.inet_aton(host))
            except OSError:
                return None
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def is_internal_host(host: str) -> bool:
    """The ``"internal"`` preset: loopback, private and link-local addresses; single-label
    names (``service-b``, ``localhost``); ``*.svc.cluster.local``, ``*.local``, ``*.internal``,
    ``*.localhost``."""
    host = host.rstrip(".").lower()
    if not host:
        return False
    ip = _parse_ip(host)
    if ip is not None:
        return ip.is_loopback or ip.is_private or ip.is_link_local
    if "." not in host:
        return True
    return host.endswith(_INTERNAL_SUFFIXES)


@dataclass(frozen=True, slots=True)
class _Prefix:
    scheme: str
    host: str
    port: int | None
    path: str


def _effective_port(scheme: str, port: int | None) -> int | None:
    return port if port is not None else _DEFAULT_PORTS.get(scheme)


class PropagationPolicy:
    """Which destinations receive trace headers (see :data:`PropagateTo`).

    Host rules are decided once per host and cached (bounded: the cache is cleared when it
    fills, so a stream of distinct hosts costs recomputation, never memory). URL prefixes and
    regexes depend on the path, so they are checked per call, and only when configured::

        policy = PropagationPolicy(["internal", "*.partner.example", "https://api.example/v2/"])
        policy.allows("https", "api.example", None, "/v2/items", "")  # True
    """

    __slots__ = (
        "_all",
        "_cache",
        "_cache_size",
        "_exact",
        "_internal",
        "_networks",
        "_patterns",
        "_prefixes",
        "_suffixes",
    )

    def __init__(self, propagate_to: PropagateTo = "internal", cache_size: int = 1024) -> None:
        self._all = False
        self._internal = False
        self._exact: set[str] = set()
        self._suffixes: list[str] = []
        self._networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self._prefixes: list[_Prefix] = []
        self._patterns: list[re.Pattern[str]] = []
        self._cache: dict[str, bool] = {}
        self._cache_size = max(1, cache_size)
        entries: Iterable[Any] = (
            [propagate_to] if isinstance(propagate_to, (str, re.Pattern)) else propagate_to
        )
        for entry in entries:
            self._add(entry)

    def _add(self, entry: Any) -> None:
        if isinstance(entry, re.Pattern):
            self._patterns.append(entry)
            return
        if not isinstance(entry, str) or not entry.strip():
            raise TypeError(f"propagate_to: unsupported entry {entry!r}")
        text = entry.strip()
        if text == "all":
            self._all = True
        elif text == "internal":
            self._internal = True
        elif text == "none":
            pass
        elif "://" in text:
            parts = urlsplit(text)
            if not parts.hostname:
                raise ValueError(f"propagate_to: URL prefix without a host: {entry!r}")
            scheme = parts.scheme.lower()
            self._prefixes.append(
                _Prefix(scheme, parts.hostname, _effective_port(scheme, parts.port), parts.path)
            )
        elif text.startswith("*."):
            self._suffixes.append(text[1:].lower().rstrip("."))
        elif "/" in text:
            self._networks.append(ipaddress.ip_network(text, strict=False))
        else:
            self._exact.add(text.lower().rstrip("."))

    def allows(self, scheme: str, host: str, port: int | None, path: str, query: str) -> bool:
        """Whether a request to this URL may carry trace headers."""
        if self._all:
            return True
        cached = self._cache.get(host)
        if cached is None:
            cached = self._host_allowed(host)
            cache = self._cache
            if len(cache) >= self._cache_size:
                cache.clear()
            cache[host] = cached
        if cached:
            return True
        if self._prefixes and self._prefix_allows(scheme, host, port, path):
            return True
        if self._patterns:
            url = _join_url(scheme, host, port, path, query)
            return any(p.match(url) for p in self._patterns)
        return False

    def _host_allowed(self, host: str) -> bool:
        name = host.rstrip(".").lower()
        if not name:
            return False
        if self._internal and is_internal_host(name):
            return True
        if name in self._exact:
            return True
        if self._suffixes and name.endswith(tuple(self._suffixes)):
            return True
        if self._networks:
            ip = _parse_ip(name)
            if ip is not None:
                return any(ip in net for net in self._networks if net.version == ip.version)
        return False

    def _prefix_allows(self, scheme: str, host: str, port: int | None, path: str) -> bool:
        scheme = scheme.lower()
        effective = _effective_port(scheme, port)
        name = host.rstrip(".").lower()
        for prefix in self._prefixes:
            if (
                prefix.host == name
                and prefix.scheme == scheme
                and prefix.port == effective
                and (path or "/").startswith(prefix.path)
            ):
                return True
        return False


# ---------------------------------------------------------------------------------------------
# URLs and names
# ---------------------------------------------------------------------------------------------


def _netloc(scheme: str, host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    if port is None or port == _DEFAULT_PORTS.get(scheme):
        return shown
    return f"{shown}:{port}"


def _join_url(scheme: str, host: str, port: int | None, path: str, query: str) -> str:
    url = f"{scheme}://{_netloc(scheme, host, port)}{path or '/'}"
    return f"{url}?{query}" if query else url


def _is_sensitive(key: str, sensitive: Collection[str]) -> bool:
    key = unquote_plus(key).strip().lower()
    if key in sensitive:
        return True
    return any(fragment in key for fragment in _SENSITIVE_FRAGMENTS)


def redact_query(query: str, sensitive: Collection[str] = DEFAULT_SENSITIVE_QUERY_KEYS) -> str:
    """``query`` with the values of sensitive parameters replaced::

    redact_query("q=cats&api_key=sk-123")  # "q=cats&api_key=REDACTED"
    """
    if not query:
        return query
    parts = query.split("&")
    changed = False
    for i, part in enumerate(parts):
        key, sep, value = part.partition("=")
        if sep and value and _is_sensitive(key, sensitive):
            parts[i] = f"{key}={REDACTED}"
            changed = True
    return "&".join(parts) if changed else query


def _is_id_segment(segment: str) -> bool:
    if segment.isdigit():
        return True
    n = len(segment)
    if n == 36 and segment[8] == segment[13] == segment[18] == segment[23] == "-":
        return _HEX.issuperset(segment.replace("-", ""))
    # Hex ids (ObjectIds, hashes, compact UUIDs); a digit is required so that words made only
    # of the letters a-f ("facade") stay as they are.
    return n >= 16 and _HEX.issuperset(segment) and not segment.isalpha()


def template_path(path: str) -> str:
    """``path`` with id-looking segments (numbers, UUIDs, long hex) replaced by ``{id}``, so
    calls to the same endpoint share a run name::

    template_path("/items/42/parts/3f2c9a1e-8d4b-4c1a-9e7f-0a1b2c3d4e5f")
    # "/items/{id}/parts/{id}"
    """
    # Every id shape needs a digit, so the common digit-free path returns after one C-level scan.
    if _DIGITS.isdisjoint(path):
        return path
    segments = path.split("/")
    changed = False
    for i, segment in enumerate(segments):
        if segment and _is_id_segment(segment):
            segments[i] = "{id}"
            changed = True
    return "/".join(segments) if changed else path


def default_run_name(method: str, scheme: str, host: str, port: int | None, path: str) -> str:
    """``"GET service-b/items/{id}"``: method, host (with a non-default port) and the
    templated path."""
    return f"{method} {_netloc(scheme, host, port)}{template_path(path or '/')}"


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
    - ``policy_cache_size``: per-host decisions kept.
    """

    propagate_to: PropagateTo = "internal"
    create_runs: bool = True
    start_root: bool = False
    run_type: str = "tool"
    run_name: RunNamer | None = None
    sensitive_query_keys: Collection[str] = field(default=DEFAULT_SENSITIVE_QUERY_KEYS)
    record_query: bool = True
    policy_cache_size: int = 1024

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

    __slots__ = ("_create", "_name", "_query", "_root", "_run_type", "_sensitive", "policy")

    def __init__(self, options: ClientOptions | None = None, **kwargs: Any) -> None:
        if options is None:
            options = ClientOptions(**kwargs)
        elif kwargs:
            raise TypeError("pass either options or keyword options, not both")
        self.policy = PropagationPolicy(options.propagate_to, options.policy_cache_size)
        self._create = options.create_runs
        self._root = options.start_root and options.create_runs
        self._run_type = options.run_type
        self._name: RunNamer = options.run_name or default_run_name
        self._sensitive = frozenset(k.lower() for k in options.sensitive_query_keys)
        self._query = options.record_query

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
        parent = _current_run.get()
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
        config = _config.get()
        if config.enabled is False or (config.enabled is None and not tracing_enabled()):
            return None
        if parent is not None and not parent.tracing_enabled:
            return None
        run: RunTree | None = None
        if self._create:
            recorded = query if self._query else ""
            if recorded:
                recorded = redact_query(recorded, self._sensitive)
            name = self._name(method, scheme, host, port, path)
            inputs = {"method": method, "url": _join_url(scheme, host, port, path, recorded)}
            metadata = config.metadata
            tags = config.tags
            if parent is not None:
                run = parent.create_child(
                    name, self._run_type, inputs=inputs, metadata=metadata, tags=tags
                )
            else:
                run = RunTree(name, self._run_type, inputs=inputs, metadata=metadata, tags=tags)
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
            run.end(outputs=outputs, error=f"HTTP {status}" if status and status >= 500 else None)
            # One post of the finished run instead of post-at-start plus patch: half the
            # exporter work, and a client call is short enough that nothing is lost by it.
            run.post()
        except Exception as exc:
            report("clients.finish", exc)

    def fail(self, run: RunTree | None, error: BaseException) -> None:
        """End the run with the exception the call raised (the caller re-raises it)."""
        if run is None:
            return
        try:
            run.end(error=error)
            run.post()
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

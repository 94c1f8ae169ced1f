"""The OpenTelemetry side of a run: its span kind, and the HTTP semantic conventions (stable
``http.*``, ``url.*``, ``server.*``) of the runs the middleware and the client hooks make.

A run says its role in ``extra["span_kind"]``: ``"server"`` (set by the server middleware on
the request's run), ``"client"`` (set by the client hooks on an outgoing call's run),
``"consumer"``/``"producer"`` (a task or message handled or sent: the Celery hook's task runs).
Every other run is ``INTERNAL``. ``extra["route"]`` is the matched route template, present only when
the framework resolved one (``http.route`` must be low-cardinality, so a raw path never
stands in for it).

Everything here reads the LangSmith wire dict (``RunTree.to_wire``) on the export worker,
never a live run, and never raises on odd values (a run from a user's hand may hold anything).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tracestitch.redact import redact_query

__all__ = [
    "CLIENT",
    "CONSUMER",
    "INTERNAL",
    "PRODUCER",
    "SERVER",
    "http_attributes",
    "http_error_type",
    "span_role",
]

SERVER = "server"
CLIENT = "client"
INTERNAL = "internal"
CONSUMER = "consumer"
PRODUCER = "producer"
_ROLES = frozenset((SERVER, CLIENT, CONSUMER, PRODUCER))

# The methods http.request.method may carry as they are; others become "_OTHER" (semconv).
_KNOWN_METHODS = frozenset(
    ("CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY", "TRACE")
)
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def span_role(run: Mapping[str, Any]) -> str:
    """``"server"``, ``"client"``, ``"consumer"``, ``"producer"`` or ``"internal"`` for a
    wire run."""
    kind = _mapping(run.get("extra")).get("span_kind")
    return kind if kind in _ROLES else INTERNAL


def _status(run: Mapping[str, Any]) -> int | None:
    status = _mapping(run.get("outputs")).get("status_code")
    if isinstance(status, int) and not isinstance(status, bool) and 100 <= status <= 999:
        return status
    return None


def http_error_type(run: Mapping[str, Any], role: str) -> str | None:
    """``error.type`` for an HTTP status that is an error on this side: 5xx for a server,
    4xx and 5xx for a client (the semconv rule; a server's 4xx is the caller's fault)."""
    status = _status(run)
    if status is None:
        return None
    if status >= 500 or (role == CLIENT and status >= 400):
        return str(status)
    return None


def _method(method: Any, attrs: list[tuple[str, Any]]) -> None:
    if not isinstance(method, str) or not method:
        return
    if method in _KNOWN_METHODS:
        attrs.append(("http.request.method", method))
    else:
        attrs.append(("http.request.method", "_OTHER"))
        attrs.append(("http.request.method_original", method))


def _host_port(address: str) -> tuple[str, int | None]:
    """``host:port`` as the middleware records ``server.address`` (an IPv6 host unbracketed)."""
    host, sep, port = address.rpartition(":")
    if sep and port.isdigit() and host:
        return host.strip("[]"), int(port)
    return address, None


def _redacted_url(url: str) -> tuple[str, str | None, int | None]:
    """``url`` without userinfo and with sensitive query values redacted; its host and port."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return url, None, None
    host = parts.hostname
    netloc = parts.netloc.rpartition("@")[2]
    if parts.username is not None or parts.password is not None:
        # semconv: credentials in the URL are replaced, not dropped, so the shape stays.
        netloc = f"REDACTED:REDACTED@{netloc}"
    query = redact_query(parts.query) if parts.query else ""
    full = urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    if port is None and parts.scheme in _DEFAULT_PORTS:
        port = _DEFAULT_PORTS[parts.scheme]
    return full, host, port


def http_attributes(run: Mapping[str, Any], role: str) -> list[tuple[str, Any]]:
    """The HTTP semantic-convention attributes of a server or client run (none otherwise)."""
    if role not in (SERVER, CLIENT):
        return []
    inputs = _mapping(run.get("inputs"))
    outputs = _mapping(run.get("outputs"))
    attrs: list[tuple[str, Any]] = []
    _method(inputs.get("method"), attrs)
    if role == SERVER:
        path = inputs.get("path")
        if isinstance(path, str):
            attrs.append(("url.path", path))
        query = inputs.get("query")
        if isinstance(query, str) and query:
            attrs.append(("url.query", redact_query(query)))
        route = _mapping(run.get("extra")).get("route")
        if isinstance(route, str) and route:
            attrs.append(("http.route", route))
        meta = _mapping(_mapping(run.get("extra")).get("metadata"))
        address = meta.get("server.address")
        if isinstance(address, str) and address:
            host, port = _host_port(address)
            attrs.append(("server.address", host))
            if port is not None:
                attrs.append(("server.port", port))
        client = inputs.get("client")
        if isinstance(client, str) and client:
            attrs.append(("client.address", client))
        agent = _mapping(inputs.get("headers")).get("user-agent")
        if isinstance(agent, str) and agent:
            attrs.append(("user_agent.original", agent))
    else:
        url = inputs.get("url")
        if isinstance(url, str) and url:
            full, peer, port = _redacted_url(url)
            attrs.append(("url.full", full))
            if peer:
                attrs.append(("server.address", peer))
                if port is not None:
                    attrs.append(("server.port", port))
    status = _status(run)
    if status is not None:
        attrs.append(("http.response.status_code", status))
    size = outputs.get("response_size")
    if isinstance(size, int) and not isinstance(size, bool) and size >= 0:
        attrs.append(("http.response.body.size", size))
    return attrs

"""What of a request is recorded on its run, and what is redacted: allow-listed headers (with
credentials always ``[REDACTED]``), the query (values of sensitive keys ``[REDACTED]``), all
capped so a hostile URL or header cannot bloat runs.

:class:`RequestRecorder` holds the per-app precomputed state; :class:`ServerTracer
<tracestitch.middleware._common.ServerTracer>` is one, so the adapters call these methods on
their tracer.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any

__all__ = [
    "ALWAYS_REDACTED_HEADERS",
    "DEFAULT_RECORDED_HEADERS",
    "MAX_HEADER_CHARS",
    "MAX_PATH_CHARS",
    "MAX_QUERY_CHARS",
    "REDACTED",
    "SENSITIVE_QUERY_KEYS",
    "RequestRecorder",
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

_TRACE_KEYS = frozenset((b"langsmith-trace", b"traceparent"))
_QUERY_SPLIT = re.compile("([&;])")


class RequestRecorder:
    """Records a request's inputs: the allow-listed headers, the redacted query."""

    __slots__ = ("_header_bytes", "_header_names", "_query_probe", "_redacted", "_sensitive_query")

    def __init__(
        self, record_headers: Collection[str], redact_query_params: Collection[str]
    ) -> None:
        recorded = {h.lower() for h in record_headers}
        self._header_names = {h: h for h in recorded}
        self._header_bytes = {h.encode("latin-1"): h for h in recorded}
        self._redacted = ALWAYS_REDACTED_HEADERS
        self._sensitive_query = frozenset(k.lower() for k in redact_query_params)
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

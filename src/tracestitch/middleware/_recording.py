"""What of a request is recorded on its run, and what is redacted: allow-listed headers (with
credentials always ``[REDACTED]``), the query (values of sensitive keys ``[REDACTED]``), all
capped so a hostile URL or header cannot bloat runs.

:class:`RequestRecorder` holds the per-app precomputed state; each :class:`ServerTracer
<tracestitch.middleware._common.ServerTracer>` has one (``tracer.recorder``), which the adapters
ask for the headers of their framework's shape.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

from tracestitch.carriers import ENVIRON, Collected, Names, Shape
from tracestitch.propagation import BAGGAGE, LANGSMITH_TRACE, TRACEPARENT, TRACESTATE
from tracestitch.redact import REDACTED, SENSITIVE_QUERY_KEYS, QueryRedactor

__all__ = [
    "ALWAYS_REDACTED_HEADERS",
    "DEFAULT_RECORDED_HEADERS",
    "MAX_HEADER_CHARS",
    "MAX_PATH_CHARS",
    "MAX_QUERY_CHARS",
    "REDACTED",
    "SENSITIVE_QUERY_KEYS",
    "RequestRecorder",
    "readable",
]

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

# Caps on what one request can make us record: a hostile URL or header must not bloat runs.
MAX_PATH_CHARS = 2048
MAX_QUERY_CHARS = 2048
MAX_HEADER_CHARS = 1024

#: The trace headers by their ASGI name.
_TRACE_NAMES = {
    name.encode("latin-1"): name for name in (LANGSMITH_TRACE, BAGGAGE, TRACEPARENT, TRACESTATE)
}


def readable(text: str) -> str:
    """``text`` as valid Unicode: aiohttp decodes request bytes that are not UTF-8 with
    ``surrogateescape``, and a lone surrogate can be neither exported (JSON is UTF-8) nor shown.
    The bytes are decoded again with U+FFFD in place of what is not UTF-8."""
    if text.isascii():
        return text
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a surrogate that stands for no byte
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


class RequestRecorder:
    """Records a request's inputs: the allow-listed headers, the redacted query."""

    __slots__ = ("_header_bytes", "_names", "_redact_query", "_redacted")

    def __init__(
        self, record_headers: Collection[str], redact_query_params: Collection[str]
    ) -> None:
        recorded = {h.lower() for h in record_headers}
        self._names = Names(sorted(recorded))
        self._header_bytes = {h.encode("latin-1"): h for h in recorded}
        self._redacted = ALWAYS_REDACTED_HEADERS
        self._redact_query = QueryRedactor(redact_query_params)

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
        """``query`` (capped) with sensitive values replaced (see :mod:`tracestitch.redact`)."""
        return self._redact_query(query[:MAX_QUERY_CHARS])

    def _add_header(self, found: dict[str, str], name: str, value: str) -> None:
        if name in self._redacted:
            value = REDACTED
        elif len(value) > MAX_HEADER_CHARS:
            value = value[:MAX_HEADER_CHARS]
        previous = found.get(name)
        found[name] = value if previous is None else f"{previous}, {value}"[:MAX_HEADER_CHARS]

    def scan_pairs(
        self, pairs: Iterable[tuple[bytes, bytes]]
    ) -> tuple[dict[str, str] | None, Collected | None]:
        """One pass over an ASGI ``headers`` list: the allow-listed headers, and the trace
        headers when a parent header (``langsmith-trace`` / ``traceparent``) is among them
        (for :func:`tracestitch.propagation.extract`, which then reads nothing again)."""
        wanted = self._header_bytes
        found: dict[str, str] | None = None
        trace: Collected | None = None
        for key, value in pairs:
            # ASGI servers lower-case header names, so no per-header .lower() here.
            name = _TRACE_NAMES.get(key)
            if name is not None:
                if trace is None:
                    trace = Collected()
                values = trace.get(name)
                if values is None:
                    trace[name] = [value]
                else:
                    values.append(value)
            name = wanted.get(key)
            if name is None:
                continue
            if found is None:
                found = {}
            self._add_header(found, name, value.decode("latin-1"))
        if trace is not None and not (LANGSMITH_TRACE in trace or TRACEPARENT in trace):
            trace = None
        return found, trace

    def record(self, headers: Any, shape: Shape) -> dict[str, str] | None:
        """Allow-listed headers from ``headers`` of ``shape`` (:mod:`tracestitch.carriers`: a
        WSGI environ, aiohttp's ``CIMultiDict``, ...), text that is not UTF-8 shown as U+FFFD
        (see :func:`readable`). ASGI's pairs go through :meth:`scan_pairs` instead."""
        found: dict[str, str] | None = None
        for name, values in shape.collect(headers, self._names).items():
            for value in values:
                text = value.decode("latin-1") if isinstance(value, bytes) else readable(str(value))
                if text == "" and shape is ENVIRON:
                    continue  # CGI sets CONTENT_TYPE and CONTENT_LENGTH empty when absent
                if found is None:
                    found = {}
                self._add_header(found, name, text)
        return found

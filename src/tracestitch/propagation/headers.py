"""The trace headers we read and write, collected from whatever shape of headers a Python web
stack hands around (each shape read through :mod:`tracestitch.carriers`).

Values are untrusted: one that is not UTF-8, too large, or ambiguous (two different copies) is
counted in :mod:`.stats` and treated as absent.
"""

from __future__ import annotations

from typing import Any

from tracestitch.carriers import Collected, Names, shape_of
from tracestitch.propagation.stats import reject

__all__ = [
    "BAGGAGE",
    "LANGSMITH_TRACE",
    "TRACEPARENT",
    "TRACESTATE",
    "TRACE_HEADERS",
    "collect",
    "header_text",
    "single",
]

LANGSMITH_TRACE = "langsmith-trace"
BAGGAGE = "baggage"
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
#: The trace headers, prepared to be read together (:mod:`tracestitch.carriers`).
TRACE_HEADERS = Names((LANGSMITH_TRACE, BAGGAGE, TRACEPARENT, TRACESTATE))


def header_text(value: Any) -> str | None:
    """A header value as text (bytes decoded as UTF-8), or ``None`` when it is not text;
    undecodable bytes are counted as ignored."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            return (value if type(value) is bytes else bytes(value)).decode("utf-8")
        except UnicodeDecodeError:
            reject("non_utf8")
            return None
    return None


def collect(headers: Any) -> dict[str, list[Any]]:
    """The trace headers present in ``headers`` (any shape: :mod:`tracestitch.carriers`)."""
    if headers is None:
        return {}
    if type(headers) is Collected:  # read already (a middleware's pass over the request)
        return headers
    return shape_of(headers).collect(headers, TRACE_HEADERS)


def single(found: dict[str, list[Any]], name: str, max_len: int) -> str | None:
    """The one value of header ``name`` among ``found`` as text, or ``None`` when it is
    missing, longer than ``max_len`` or repeated with different values (counted)."""
    values = found.get(name)
    if not values:
        return None
    if len(values) > 1 and len({header_text(v) for v in values}) > 1:
        reject(f"{name}_duplicate")  # two different parents: ambiguous, so neither
        return None
    value = values[0]
    if len(value) > max_len:  # checked before decoding: a 100 KB value costs nothing
        reject(f"{name}_too_large")
        return None
    decoded = value if type(value) is str else header_text(value)
    return decoded.strip() if decoded is not None else None

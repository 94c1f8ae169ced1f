"""W3C ``traceparent``: ``00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>``.

Lowercase hex only; all-zero ids and version ``ff`` are invalid, and version ``00`` allows no
trailing fields. A header that fails is counted (:mod:`tracestitch.header_stats`).
"""

from __future__ import annotations

import re

from tracestitch.header_stats import _reject

_TRACEPARENT_RE = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


def _parse_traceparent(text: str) -> tuple[str, str] | None:
    m = _TRACEPARENT_RE.fullmatch(text)
    if m is None:
        _reject("traceparent_malformed")
        return None
    version, trace_hex, span_hex, _flags, rest = m.groups()
    if version == "ff" or (version == "00" and rest) or trace_hex == _ZERO_TRACE:
        _reject("traceparent_invalid")
        return None
    if span_hex == _ZERO_SPAN:
        _reject("traceparent_invalid")
        return None
    return trace_hex, span_hex

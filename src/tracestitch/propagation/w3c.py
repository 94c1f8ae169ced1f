"""W3C trace context: ``traceparent`` (``00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>``)
and ``tracestate``.

Lowercase hex only; all-zero ids and version ``ff`` are invalid, and version ``00`` allows no
trailing fields. ``tracestate`` is passed on to the next hop as it came, so it must match the
spec's grammar exactly (printable ASCII, at most 32 ``key=value`` members, no duplicate keys)
before it is believed. A header that fails is counted (:mod:`.stats`).
"""

from __future__ import annotations

import functools
import re

from tracestitch.propagation.stats import reject

__all__ = ["parse_traceparent", "parse_tracestate"]

_TRACEPARENT_RE = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
# tracestate list members (W3C Trace Context, section 3.3.1): a simple or multi-tenant key, and a
# value of up to 256 printable ASCII characters other than ',' and '=' that does not end in a
# space. Explicit ASCII classes: nothing here may match outside ASCII.
_TRACESTATE_MEMBER = (
    r"(?:[a-z][a-z0-9_\-*/]{0,255}|[a-z0-9][a-z0-9_\-*/]{0,240}@[a-z][a-z0-9_\-*/]{0,13})"
    r"=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
)
_MAX_TRACESTATE_MEMBERS = 32
_TRACESTATE_MEMBER_RE = re.compile(_TRACESTATE_MEMBER)
# The form every tracer writes (no spaces around commas, no empty members), checked in one
# match: a request with a W3C parent pays two regex calls, not a Python loop over members.
_TRACESTATE_PLAIN_RE = re.compile(
    f"{_TRACESTATE_MEMBER}(?:,{_TRACESTATE_MEMBER}){{0,{_MAX_TRACESTATE_MEMBERS - 1}}}"
)
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


def parse_traceparent(text: str) -> tuple[str, str, bool] | None:
    """``(trace id hex, parent span id hex, sampled)``, or ``None`` (counted)."""
    m = _TRACEPARENT_RE.fullmatch(text)
    if m is None:
        reject("traceparent_malformed")
        return None
    version, trace_hex, span_hex, flags, rest = m.groups()
    if version == "ff" or (version == "00" and rest) or trace_hex == _ZERO_TRACE:
        reject("traceparent_invalid")
        return None
    if span_hex == _ZERO_SPAN:
        reject("traceparent_invalid")
        return None
    # Bit 0 of the flags is "sampled"; the other bits are not ours to interpret.
    return trace_hex, span_hex, bool(int(flags, 16) & 1)


#: Our ``tracestate`` member: the span id of the last tracestitch run a request passed through.
#: OpenTelemetry services pass ``tracestate`` on unchanged, so a tracestitch service below an
#: OTel hop learns which of the trace's runs the hop was called from (the collector attaches
#: its runs there instead of leaving them orphans).
TRACESTATE_KEY = "tracestitch"
_OUR_MEMBER_RE = re.compile(r"(?:^|,)tracestitch=([0-9a-f]{16})(?=,|$)")


def split_tracestate(state: str) -> tuple[str | None, str | None]:
    """``(our member's span id, the other members)`` of a valid tracestate holding ours."""
    m = _OUR_MEMBER_RE.search(state)
    span = m.group(1) if m else None
    rest = ",".join(p for p in state.split(",") if not p.startswith("tracestitch="))
    return span, rest or None


def with_our_member(span_hex: str, foreign: str | None) -> str:
    """A tracestate with our member first (the W3C rule for an updated member) and at most
    32 members, the rightmost foreign one dropped to make room."""
    ours = f"{TRACESTATE_KEY}={span_hex}"
    if not foreign:
        return ours
    if foreign.count(",") >= _MAX_TRACESTATE_MEMBERS - 1:
        foreign = foreign.rsplit(",", 1)[0]
    return f"{ours},{foreign}"


def parse_tracestate(text: str) -> str | None:
    """``text`` as a valid tracestate (empty members and the optional spaces around commas
    dropped), or ``None`` (counted) when any part of it is outside the grammar."""
    valid = _check_tracestate(text)
    if valid is None:
        reject("tracestate_invalid")
    return valid


# By raw value: an upstream sends the same tracestate on request after request, and checking
# it costs far more than the lookup (see docs/architecture.md, "Caches"). Pure, so a bad value
# cached is still counted at every use (by the caller).
@functools.lru_cache(maxsize=256)
def _check_tracestate(text: str) -> str | None:
    if _TRACESTATE_PLAIN_RE.fullmatch(text) is not None:
        members = text.split(",")
    else:
        members = [m.strip(" \t") for m in text.split(",")]
        members = [m for m in members if m]
        if not members or len(members) > _MAX_TRACESTATE_MEMBERS:
            return None
        match = _TRACESTATE_MEMBER_RE.fullmatch
        if any(match(m) is None for m in members):
            return None
        text = ",".join(members)
    if len(members) > 1 and len({m[: m.index("=")] for m in members}) != len(members):
        return None  # a key twice
    return text

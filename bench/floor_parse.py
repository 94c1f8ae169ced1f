"""The floor's text formats and its reading of incoming context, all run on the worker (see
:mod:`floor`): UUIDv7 values from a record, their text, dotted-order segments and ISO times
(the date part cached per second), and the caller's run from ``langsmith-trace`` + ``baggage``
or ``traceparent`` + ``tracestate``, with tracestitch's caps and validation (a header that fails
is counted in :data:`rejected` and treated as absent).
"""

from __future__ import annotations

import os
import re
from datetime import date, datetime, timezone
from typing import Any
from urllib.parse import unquote_plus

import orjson

__all__ = [
    "MAX_ERROR",
    "MAX_HEADER",
    "MAX_PATH",
    "MAX_QUERY",
    "RECORDED",
    "env_project",
    "hyphenated",
    "iso",
    "rejected",
    "remote_parent",
    "run_id",
    "segment",
]

# The caps tracestitch applies to what a caller may make it do (propagation.Limits).
MAX_DEPTH = 64
SEGMENT = 58  # 22-char timestamp + 36-char UUID
MAX_ORDER = MAX_DEPTH * (SEGMENT + 1) - 1
MAX_TRACEPARENT = 512
MAX_TRACESTATE = 512
MAX_BAGGAGE = 8192
MAX_MEMBERS = 64
MAX_METADATA_BYTES = 4096
MAX_METADATA_KEYS = 64
MAX_METADATA_DEPTH = 20
MAX_TAGS = 32
MAX_TAG_LEN = 256
MAX_PROJECT_LEN = 256
MAX_SKEW_US = 300_000_000
MAX_PATH = 2048
MAX_QUERY = 2048
MAX_HEADER = 1024
MAX_ERROR = 16_384
RECORDED = {
    n.encode(): n
    for n in ("accept", "content-length", "content-type", "user-agent", "x-request-id")
}

# ---------------------------------------------------------------------------------------------
# Resolution: ids, orders and inherited fields, computed from the records (worker, or on demand)
# ---------------------------------------------------------------------------------------------

_SALT = int.from_bytes(os.urandom(8), "big")
_M64 = (1 << 64) - 1


def run_id(start_ns: int, seq: int) -> int:
    """A UUIDv7 value: the start millisecond, the sequence number as the 12-bit counter
    (ids of one millisecond sort by creation), 62 bits of a keyed splitmix64 of it."""
    z = (_SALT + seq * 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    z ^= z >> 31
    ms = start_ns // 1_000_000
    return (ms << 80) | (0x7 << 76) | ((seq & 0xFFF) << 64) | (0b10 << 62) | (z >> 2)


def hyphenated(value: int) -> str:
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_UTC = timezone.utc
_stamp_cache: tuple[int, str, str] = (-1, "", "")


def _prefixes(seconds: int) -> tuple[int, str, str]:
    """(second, dotted-order date prefix, ISO prefix), cached: it changes once a second."""
    global _stamp_cache
    cached = _stamp_cache
    if cached[0] != seconds:
        d = datetime.fromtimestamp(seconds, _UTC)
        cached = _stamp_cache = (
            seconds,
            f"{d.year:04d}{d.month:02d}{d.day:02d}T{d.hour:02d}{d.minute:02d}{d.second:02d}",
            f"{d.year:04d}-{d.month:02d}-{d.day:02d}T{d.hour:02d}:{d.minute:02d}:{d.second:02d}",
        )
    return cached


def segment(us: int, id_text: str) -> str:
    seconds, frac = divmod(us, 1_000_000)
    return f"{_prefixes(seconds)[1]}{frac:06d}Z{id_text}"


def iso(us: int) -> str:
    seconds, frac = divmod(us, 1_000_000)
    return f"{_prefixes(seconds)[2]}.{frac:06d}+00:00"


# ---------------------------------------------------------------------------------------------
# Parsing incoming context (worker): tracestitch's rules, a bad header is treated as absent
# ---------------------------------------------------------------------------------------------

_TS = (
    r"[0-9]{4}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])T(?:[01][0-9]|2[0-3])[0-5][0-9]"
    r"[0-5][0-9][0-9]{6}Z"
)
_HEX_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_SEGMENT_RE = re.compile(_TS + _HEX_UUID)
_TRACEPARENT_RE = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_TS_MEMBER_RE = re.compile(
    r"(?:[a-z][a-z0-9_\-*/]{0,255}|[a-z0-9][a-z0-9_\-*/]{0,240}@[a-z][a-z0-9_\-*/]{0,13})"
    r"=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
)
_VALUE_RE = re.compile(r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*")
_ADDRESS_RE = re.compile(
    r"lrn:agents/([a-z](?:[a-z0-9-]{0,61}[a-z0-9])?)/environments/"
    r"((?i:local|development|staging|production))"
)
_EPOCH_DAY = date(1970, 1, 1).toordinal()
_TRACE_NAMES = (b"langsmith-trace", b"baggage", b"traceparent", b"tracestate")

#: Counts of ignored incoming header values, by reason (what tracestitch counts).
rejected: dict[str, int] = {}


def _reject(kind: str) -> None:
    rejected[kind] = rejected.get(kind, 0) + 1


def _single(values: list[bytes] | None, name: str, cap: int) -> str | None:
    """One header's text: missing, too long, not UTF-8 or two different copies: ``None``."""
    if not values:
        return None
    if len(values) > 1 and len(set(values)) > 1:
        _reject(f"{name}_duplicate")
        return None
    raw = values[0]
    if len(raw) > cap:
        _reject(f"{name}_too_large")
        return None
    try:
        return raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        _reject("non_utf8")
        return None


def _parse_order(order: str) -> tuple[str, str, int] | None:
    """(trace id, last run's id, its start µs) of a well-formed dotted order, else ``None``."""
    n = len(order)
    if n < SEGMENT or (n + 1) % (SEGMENT + 1) or (n + 1) // (SEGMENT + 1) > MAX_DEPTH:
        return None
    segments = order.split(".")
    if len(segments) != (n + 1) // (SEGMENT + 1):
        return None
    match = _SEGMENT_RE.fullmatch
    for seg in segments:
        if match(seg) is None:
            return None
    ts = segments[-1]
    try:
        day = date(int(ts[0:4]), int(ts[4:6]), int(ts[6:8])).toordinal() - _EPOCH_DAY
    except ValueError:
        return None
    secs = day * 86_400 + int(ts[9:11]) * 3600 + int(ts[11:13]) * 60 + int(ts[13:15])
    start = secs * 1_000_000 + int(ts[15:21])
    return segments[0][22:].lower(), ts[22:].lower(), start


def remote_parent(
    headers: tuple[tuple[bytes, bytes], ...], now_us: int
) -> tuple[str, str, str, int, tuple[Any, ...]] | None:
    """(parent order, trace id, parent id, parent start µs, baggage fields) or ``None``."""
    found: dict[bytes, list[bytes]] = {}
    for key, value in headers:
        if key in _TRACE_NAMES:
            found.setdefault(key, []).append(value)
    if not found:
        return None
    sampled, ancestor = True, None
    lst = found.get(b"langsmith-trace")
    if lst is not None:
        order = _single(lst, "langsmith-trace", MAX_ORDER + 1)
        if not order:
            return None  # present but unusable: not replaced by traceparent (as tracestitch)
        parsed = _parse_order(order)
        if parsed is None:
            _reject("dotted_order_malformed")
            return None
        trace, parent_text, start = parsed  # the caller's run: our parent
        if start - now_us > MAX_SKEW_US:
            _reject("dotted_order_in_future")
            return None
    else:
        text = _single(found.get(b"traceparent"), "traceparent", MAX_TRACEPARENT)
        if not text:
            return None
        m = _TRACEPARENT_RE.fullmatch(text)
        if m is None:
            _reject("traceparent_malformed")
            return None
        version, trace_hex, span_hex, flags, rest = m.groups()
        if (
            version == "ff"
            or (version == "00" and rest)
            or trace_hex == "0" * 32
            or span_hex == "0" * 16
        ):
            _reject("traceparent_invalid")
            return None
        sampled = bool(int(flags, 16) & 1)
        trace = hyphenated(int(trace_hex, 16))
        parent_text = hyphenated(int(trace_hex[:16] + span_hex, 16))
        start = now_us  # an OTel caller has no order: root and parent segments at "now"
        order = f"{segment(start, trace)}.{segment(start, parent_text)}"
        state = _single(found.get(b"tracestate"), "tracestate", MAX_TRACESTATE)
        if state:
            valid = _tracestate(state)
            if valid is None:
                _reject("tracestate_invalid")
            else:
                mine = next((m[12:] for m in valid if m.startswith("tracestitch=")), None)
                if mine is not None and mine != span_hex and _is_hex16(mine):
                    ancestor = mine
    meta = tags = project = address = None
    bag = found.get(b"baggage")
    if bag is not None:
        fields = _baggage(tuple(bag))
        if fields is None:
            return None  # names both a project and an address: not followed (as the SDKs)
        meta, tags, project, address = fields
    return order, trace, parent_text, start, (meta, tags, project, address, sampled, ancestor)


def _is_hex16(text: str) -> bool:
    return len(text) == 16 and all(c in "0123456789abcdef" for c in text)


_tracestate_cache: dict[str, list[str] | None] = {}


def _tracestate(text: str) -> list[str] | None:
    """The members of a valid tracestate (cached by raw value: an upstream repeats it)."""
    if text in _tracestate_cache:
        return _tracestate_cache[text]
    members = [m.strip(" \t") for m in text.split(",")]
    members = [m for m in members if m]
    valid: list[str] | None = members
    if (
        not members
        or len(members) > 32
        or any(_TS_MEMBER_RE.fullmatch(m) is None for m in members)
        or len({m[: m.index("=")] for m in members}) != len(members)
    ):
        valid = None
    if len(_tracestate_cache) >= 256:
        _tracestate_cache.clear()
    _tracestate_cache[text] = valid
    return valid


_baggage_cache: dict[tuple[bytes, ...], tuple[Any, tuple[str, ...]]] = {}


def _baggage(values: tuple[bytes, ...]) -> tuple[Any, ...] | None:
    """(metadata, tags, project, address) from baggage, cached by raw value (an upstream sends
    the same baggage on every request); a cached bad value is counted at every use."""
    hit = _baggage_cache.get(values)
    if hit is None:
        complaints: list[str] = []
        hit = (_parse_baggage(values, complaints.append), tuple(complaints))
        if len(_baggage_cache) >= 256:
            _baggage_cache.clear()
        _baggage_cache[values] = hit
    for kind in hit[1]:
        _reject(kind)
    fields = hit[0]
    if fields is None:
        return None
    meta, tags, project, address = fields
    return (None if meta is None else dict(meta), tags, project, address)


def _parse_baggage(values: tuple[bytes, ...], reject: Any) -> tuple[Any, ...] | None:
    meta = tags = project = address = None
    if sum(len(v) for v in values) > MAX_BAGGAGE:
        reject("baggage_too_large")
        return meta, tags, project, address
    count = 0
    for raw in values:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            reject("non_utf8")
            continue
        for item in text.split(","):
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or not key:
                continue
            count += 1
            if count > MAX_MEMBERS:
                reject("baggage_too_many_members")
                break
            if key not in (
                "langsmith-metadata",
                "langsmith-tags",
                "langsmith-project",
                "langsmith-address",
            ):
                continue
            value = value.split(";", 1)[0].strip()
            if _VALUE_RE.fullmatch(value) is None:
                reject("baggage_member_invalid")
                continue
            try:
                decoded = unquote_plus(value, errors="strict")
            except UnicodeDecodeError:
                reject("baggage_member_invalid")
                continue
            if key == "langsmith-metadata":
                meta = _metadata(decoded, reject)
            elif key == "langsmith-tags":
                found = [t.strip() for t in decoded.split(",")]
                found = [t for t in found if t and len(t) <= MAX_TAG_LEN and t.isprintable()]
                if len(found) > MAX_TAGS:
                    reject("tags_too_many")
                    found = found[:MAX_TAGS]
                tags = found or None
            elif key == "langsmith-project":
                name = decoded.strip()
                if name and len(name) <= MAX_PROJECT_LEN and name.isprintable():
                    project = name
                else:
                    reject("project_invalid")
            else:
                m = _ADDRESS_RE.fullmatch(decoded.strip())
                if m is None:
                    reject("address_invalid")
                else:
                    address = f"lrn:agents/{m.group(1)}/environments/{m.group(2).lower()}"
    if project is not None and address is not None:
        reject("baggage_project_and_address")
        return None
    return meta, tags, project, address


def _metadata(text: str, reject: Any) -> dict[str, Any] | None:
    if len(text) > MAX_METADATA_BYTES:
        reject("metadata_too_large")
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        reject("metadata_invalid_json")
        return None
    if not isinstance(value, dict):
        reject("metadata_not_object")
        return None
    if len(value) > MAX_METADATA_KEYS:
        reject("metadata_too_many_keys")
        return None
    stack = [(v, 2) for v in value.values()]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > MAX_METADATA_DEPTH:
                reject("metadata_too_deep")
                return None
            children = item.values() if isinstance(item, dict) else item
            stack.extend((c, depth + 1) for c in children)
    return value


def env_project() -> str:
    """The default project, as tracestitch reads it from the environment."""
    for name in ("TRACESTITCH_PROJECT", "LANGSMITH_PROJECT", "LANGCHAIN_PROJECT"):
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return "default"

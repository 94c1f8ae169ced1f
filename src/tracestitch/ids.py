"""Run ids (UUIDv7), the dotted-order format, and the W3C trace-context id mapping.

A dotted order is the LangSmith sort key of a run inside its trace: one segment per ancestor,
root first, each segment ``YYYYmmddTHHMMSSffffffZ`` (22 chars, UTC) followed by the 36-char run
UUID. This module is the only code that knows that format: everything else builds, reads and
measures orders through the functions here (``root_order``, ``child_order``,
``parse_dotted_order``, ``order_ids``, ``split_segment``,
``max_order_length``). Everything here is on the request path, so it avoids
``strftime``/``strptime`` and ``uuid.UUID(...)`` validation where a cheaper exact equivalent
exists.
"""

from __future__ import annotations

import os
import random
import re
import threading
import time
import uuid
from datetime import date, datetime, timezone
from typing import Any

__all__ = [
    "MAX_DOTTED_ORDER_DEPTH",
    "SEGMENT_LENGTH",
    "TIMESTAMP_LENGTH",
    "UUID_LENGTH",
    "DottedOrderError",
    "RunId",
    "child_order",
    "format_iso",
    "format_segment",
    "format_timestamp",
    "max_order_length",
    "micros_to_datetime",
    "new_run_id",
    "now_micros",
    "order_ids",
    "parse_dotted_order",
    "root_order",
    "run_id",
    "span_id_from_run_id",
    "split_segment",
    "to_micros",
    "trace_id_hex",
    "uuid7",
    "uuid_from_w3c",
]

TIMESTAMP_LENGTH = 22  # len("20240101T000000000000Z")
UUID_LENGTH = 36
SEGMENT_LENGTH = TIMESTAMP_LENGTH + UUID_LENGTH
#: Deeper orders than this are treated as hostile: a real call tree this deep is vanishingly rare,
#: and the cap bounds the parse cost of a header to a few microseconds.
MAX_DOTTED_ORDER_DEPTH = 64

_UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=_UTC)

# ---------------------------------------------------------------------------------------------
# UUIDv7 (RFC 9562): 48-bit unix ms | ver 7 | 12-bit rand_a | variant | 62-bit rand_b.
# rand_a is a per-millisecond counter started at a random point, so ids made in one process sort
# in creation order even within one millisecond (siblings with a clamped, equal start time still
# sort causally in a dotted order), and no two of them share their high 64 bits (the collector
# tells a W3C span's stand-in id, the trace id's high half, from a run's by them:
# collector/tree.py). The lock keeps the counter monotonic across threads; it is uncontended in
# practice. rand_b is random: the low 64 bits are the W3C span id.
# ---------------------------------------------------------------------------------------------
_uuid_lock = threading.Lock()
_last_ms = 0
_counter = 0
_rand = random.Random()  # seeded from os.urandom; reseeded in forked children below
_VERSION_AND_VARIANT = (0x7 << 76) | (0b10 << 62)
_new_uuid = uuid.UUID.__new__
_set = object.__setattr__
_SAFE = uuid.SafeUUID.unknown


def _reseed_after_fork() -> None:
    global _rand, _uuid_lock
    _rand = random.Random()
    _uuid_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reseed_after_fork)


class RunId(uuid.UUID):
    """A UUID that keeps its canonical text: the ids of the runs tracestitch makes, and those
    it reads from headers. A run's ids go out as text with every export, and ``str(UUID)``
    formats anew each time; this text is made once, with the id (``str()`` returns it), and
    the integer only when something asks for it (comparison, hashing, ``.int``, ``.hex``). In
    every other respect a ``uuid.UUID`` (equal, same hash, ``repr``; it pickles as one)."""

    __slots__ = ("text",)
    text: str

    def __getattr__(self, name: str) -> Any:
        # Only called for an attribute not set: ``int`` and ``is_safe`` of an id made from text.
        if name == "int":
            value = int(self.text.replace("-", ""), 16)
            _set(self, "int", value)
            return value
        if name == "is_safe":
            return _SAFE
        raise AttributeError(name)

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"UUID({self.text!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (uuid.UUID, (self.text,))


def _id_from_text(text: str) -> RunId:
    # For canonical (lower-case, hyphenated) text already known to be a valid UUID's.
    u = _new_uuid(RunId)
    _set(u, "text", text)
    return u


def run_id(value: uuid.UUID | str) -> RunId:
    """``value`` (a UUID or its text) as a :class:`RunId` (its text made once, here)."""
    if isinstance(value, RunId):
        return value
    if not isinstance(value, uuid.UUID):
        value = uuid.UUID(str(value))
    return _id_from_text(str(value))


def _uuid7_value(ms: int) -> int:
    global _last_ms, _counter
    with _uuid_lock:
        if ms > _last_ms:
            _last_ms = ms
            _counter = _rand.getrandbits(11)  # leaves room for >2000 ids in the same ms
        else:
            ms = _last_ms
            _counter += 1
            if _counter > 0xFFF:  # counter exhausted: borrow the next millisecond
                _last_ms = ms = ms + 1
                _counter = 0
        rand_a = _counter
        rand_b = _rand.getrandbits(62)
    return (ms << 80) | _VERSION_AND_VARIANT | (rand_a << 64) | rand_b


def uuid7(unix_ms: int | None = None) -> uuid.UUID:
    """Return a time-ordered UUIDv7 for ``unix_ms`` (default: now)."""
    value = _uuid7_value(time.time_ns() // 1_000_000 if unix_ms is None else unix_ms)
    # uuid.UUID(int=...) re-validates the range and version; the value is valid by construction.
    u = _new_uuid(uuid.UUID)
    _set(u, "int", value)
    _set(u, "is_safe", _SAFE)
    return u


def new_run_id() -> tuple[RunId, str, int]:
    """A fresh UUIDv7, its canonical text, and now in µs since the epoch, from one clock read:
    what every new run needs (the text goes into its dotted order and, later, on the wire)."""
    ns = time.time_ns()
    h = _uuid7_value(ns // 1_000_000).to_bytes(16, "big").hex()
    text = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
    u = _new_uuid(RunId)
    _set(u, "text", text)
    return u, text, ns // 1000


# ---------------------------------------------------------------------------------------------
# Time: runs keep integer microseconds since the epoch; datetimes are made only when asked for.
# ---------------------------------------------------------------------------------------------


def now_micros() -> int:
    """Now, in microseconds since the epoch."""
    return time.time_ns() // 1000


def to_micros(value: datetime | float | int | str) -> int:
    """Microseconds since the epoch from a datetime, epoch milliseconds, or an ISO-8601 string.

    Naive datetimes are taken as UTC (as the LangSmith SDKs do).
    """
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_UTC)
        delta = value - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    if isinstance(value, bool):
        raise TypeError("a time must be a datetime, epoch milliseconds or an ISO string")
    if isinstance(value, (int, float)):
        return round(value * 1000)
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        return to_micros(datetime.fromisoformat(text))
    raise TypeError("a time must be a datetime, epoch milliseconds or an ISO string")


def micros_to_datetime(micros: int) -> datetime:
    """An aware UTC datetime for microseconds since the epoch."""
    seconds, us = divmod(micros, 1_000_000)
    return datetime.fromtimestamp(seconds, _UTC).replace(microsecond=us)


# Formatting a timestamp is dominated by the date part, which changes once a second: cache it,
# as one (second, prefix) tuple, so a thread reading it while another replaces it sees a
# consistent pair without a lock.
_ts_cache: tuple[int, str] = (-1, "")


def _ts_prefix(seconds: int) -> tuple[int, str]:
    global _ts_cache
    d = datetime.fromtimestamp(seconds, _UTC)
    prefix = f"{d.year:04d}{d.month:02d}{d.day:02d}T{d.hour:02d}{d.minute:02d}{d.second:02d}"
    _ts_cache = cached = (seconds, prefix)
    return cached


def format_timestamp(micros: int) -> str:
    """``YYYYmmddTHHMMSSffffffZ`` for ``micros`` since the epoch (UTC)."""
    seconds, us = divmod(micros, 1_000_000)
    cached = _ts_cache
    if cached[0] != seconds:
        cached = _ts_prefix(seconds)
    return f"{cached[1]}{us:06d}Z"


_iso_cache: tuple[int, str] = (-1, "")


def format_iso(micros: int) -> str:
    """ISO 8601 in UTC with microseconds (``2024-03-15T12:00:00.123456+00:00``), as
    ``datetime.isoformat`` writes it but about 5x cheaper: run times go out by the thousand."""
    global _iso_cache
    seconds, us = divmod(micros, 1_000_000)
    cached = _iso_cache
    if cached[0] != seconds:
        prefix = datetime.fromtimestamp(seconds, _UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _iso_cache = cached = (seconds, prefix)
    return f"{cached[1]}.{us:06d}+00:00"


def format_segment(micros: int, run_id: uuid.UUID | str) -> str:
    """One segment: the run started at ``micros`` (UTC) with id ``run_id``."""
    return f"{format_timestamp(micros)}{run_id}"


def root_order(micros: int, id_text: str) -> str:
    """The order of a trace's root run: its one segment (one call: every new trace's path)."""
    seconds, us = divmod(micros, 1_000_000)
    cached = _ts_cache
    if cached[0] != seconds:
        cached = _ts_prefix(seconds)
    return f"{cached[1]}{us:06d}Z{id_text}"


def child_order(parent_order: str, micros: int, id_text: str) -> str:
    """The order of a run started at ``micros`` under the run whose order is ``parent_order``
    (one call: this is every child run's path)."""
    seconds, us = divmod(micros, 1_000_000)
    cached = _ts_cache
    if cached[0] != seconds:
        cached = _ts_prefix(seconds)
    return f"{parent_order}.{cached[1]}{us:06d}Z{id_text}"


def split_segment(segment: str) -> tuple[str, str]:
    """(timestamp, run id text) of one segment, as written."""
    return segment[:TIMESTAMP_LENGTH], segment[TIMESTAMP_LENGTH:]


def order_ids(order: str) -> list[str]:
    """The id text of every segment of ``order``, root first, as written (unchecked)."""
    return [segment[TIMESTAMP_LENGTH:] for segment in order.split(".")]


def max_order_length(depth: int) -> int:
    """The length of an order ``depth`` segments deep."""
    return depth * (SEGMENT_LENGTH + 1) - 1


# ---------------------------------------------------------------------------------------------
# Parsing. Strict about shape (a header is untrusted input), lenient about what LangSmith SDKs
# emit: the JS SDK writes an execution counter into the last three microsecond digits, which is
# simply part of the timestamp here; upper-case hex is accepted.
# ---------------------------------------------------------------------------------------------
# [0-9], never \d: \d (and int()) also take the digits of other scripts (Arabic-Indic, fullwidth,
# Devanagari ...), and an order holding them would go out in headers no client can send.
_TS = (
    r"[0-9]{4}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])T(?:[01][0-9]|2[0-3])[0-5][0-9]"
    r"[0-5][0-9][0-9]{6}Z"
)
_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_SEGMENT_RE = re.compile(f"{_TS}{_UUID}")


class DottedOrderError(ValueError):
    """A dotted order that is not well formed."""


_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
# Microseconds at the start of the day a timestamp's first 8 characters name: orders read from
# headers are nearly all of today, so one entry spares date() and three int() per header.
_day_cache: tuple[str, int] = ("", 0)


def _parse_timestamp(ts: str) -> int:
    # The regex has checked every digit's range; date() rejects what is left (31 February).
    global _day_cache
    day = ts[:8]
    cached = _day_cache
    if cached[0] != day:
        try:
            days = date(int(day[0:4]), int(day[4:6]), int(day[6:8])).toordinal() - _EPOCH_ORDINAL
        except ValueError as exc:
            raise DottedOrderError(f"impossible date in dotted order: {ts!r}") from exc
        _day_cache = cached = (day, days * 86_400_000_000)
    hms, us = divmod(int(ts[9:21]), 1_000_000)  # HHMMSS, ffffff
    hm, s = divmod(hms, 100)
    h, m = divmod(hm, 100)
    return cached[1] + ((h * 60 + m) * 60 + s) * 1_000_000 + us


def parse_dotted_order(
    order: str, max_depth: int = MAX_DOTTED_ORDER_DEPTH
) -> tuple[list[str], int, RunId, RunId, RunId | None]:
    """Validate ``order``; return (segments, last start µs, trace id, run id, parent id).

    Raises :class:`DottedOrderError` for anything malformed, and never takes more than
    O(max_depth) work: the length is checked before the string is split.
    """
    if not isinstance(order, str):
        raise DottedOrderError("dotted order must be a string")
    n = len(order)
    # Exact length check first: k segments take 58k + (k-1) chars.
    if n < SEGMENT_LENGTH or (n + 1) % (SEGMENT_LENGTH + 1) != 0:
        raise DottedOrderError("dotted order has the wrong length")
    depth = (n + 1) // (SEGMENT_LENGTH + 1)
    if depth > max_depth:
        raise DottedOrderError(f"dotted order deeper than {max_depth}")
    segments = order.split(".")
    if len(segments) != depth:
        raise DottedOrderError("dotted order is not made of 58-char segments")
    match = _SEGMENT_RE.fullmatch
    for seg in segments:
        if match(seg) is None:
            raise DottedOrderError("malformed dotted-order segment")
    last = segments[-1]
    start = _parse_timestamp(last)
    # The regex has validated the ids; an upstream may write upper case, a UUID's text is not.
    run_id = _id_from_text(last[TIMESTAMP_LENGTH:].lower())
    if depth == 1:
        return segments, start, run_id, run_id, None
    trace_id = _id_from_text(segments[0][TIMESTAMP_LENGTH:].lower())
    parent = _id_from_text(segments[-2][TIMESTAMP_LENGTH:].lower())
    return segments, start, trace_id, run_id, parent


# ---------------------------------------------------------------------------------------------
# W3C trace context: trace-id is the trace UUID's 128 bits; a run's span id is its UUID's low 64
# bits (for UUIDv7 that is the variant plus 62 random bits, so spans of one trace do not collide).
# Not the first 8 bytes (the LangSmith Python SDK's get_otel_span_id_from_uuid): those are the
# millisecond plus 12 bits, shared by runs started in the same millisecond in different processes
# with odds ~1/2048, and no span LangSmith exports carries them; LangSmith's OTel ingest maps span
# ids to run ids by the low 64 bits too. The OTLP sink and traceparent both use this mapping; see
# docs/architecture.md ("OTLP span ids") for the measurements.
# ---------------------------------------------------------------------------------------------


def trace_id_hex(trace_id: uuid.UUID) -> str:
    """The W3C/OTLP trace id (32 hex digits) of a trace id."""
    return trace_id.hex


def span_id_from_run_id(run_id: uuid.UUID) -> str:
    """The W3C/OTLP span id (16 hex digits) of a run id: its low 64 bits (the random part
    of a UUIDv7; docs/architecture.md says why not its first 8 bytes)."""
    return f"{run_id.int & 0xFFFFFFFFFFFFFFFF:016x}"


def uuid_from_w3c(trace_hex: str, span_hex: str | None = None) -> RunId:
    """The UUID for a W3C trace id, or for a span of that trace.

    A span's UUID keeps the span id in its low 64 bits, so exporting it to OTLP gives back the
    upstream span id and an OpenTelemetry backend links the two services' spans.
    """
    h = trace_hex.lower() if span_hex is None else f"{trace_hex[:16]}{span_hex}".lower()
    if len(h) != 32 or h.strip("0123456789abcdef"):  # int(h, 16) would take "0x", "_", " "
        raise ValueError("a W3C trace id is 32 hex digits and a span id 16")
    return _id_from_text(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")

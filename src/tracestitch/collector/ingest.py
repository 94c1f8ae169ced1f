"""Validation of incoming run operations (LangSmith wire dicts) before they reach the store.

A whole request is validated before anything is written, so one bad op rejects the request with a
422 naming the op and the field, and the store is left unchanged.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import ROUND_FLOOR, Decimal
from functools import lru_cache
from typing import Any, Literal

import orjson

from tracestitch.ids import SEGMENT_LENGTH, TIMESTAMP_LENGTH

__all__ = [
    "MAX_DOTTED_ORDER_SEGMENTS",
    "MAX_RUN_DEPTH",
    "IngestError",
    "RunOp",
    "check_depth",
    "format_time_us",
    "normal_time",
    "parse_time_us",
    "validate_op",
]

OpKind = Literal["post", "patch"]

# Fields whose wire type we check; anything else is kept as sent so that newer SDK fields survive.
_DICT_FIELDS = ("inputs", "outputs", "extra", "serialized")
_STR_FIELDS = ("name", "run_type", "session_name", "dotted_order", "address")
_UUID_FIELDS = ("trace_id", "parent_run_id", "reference_example_id", "session_id")
_TIME_FIELDS = ("start_time", "end_time")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

#: How deep a run's JSON may nest, the run object itself being level 1. orjson writes at most
#: 254 levels, and the read routes wrap runs in levels of their own (``{"runs": [run]}``,
#: ``{"child_runs": [run]}``); the 54 levels left over mean whatever is accepted can always be
#: written back out.
MAX_RUN_DEPTH = 200
_ORJSON_WRITE_DEPTH = 254
#: A trace nested deeper than this is not a call tree but an attack on the store's sort key.
MAX_DOTTED_ORDER_SEGMENTS = 1000
# What the store keeps as a dotted-order segment, stricter than what ids.py reads off a header:
# ASCII digits only, the canonical hyphenated UUID. The date's validity is checked apart.
_HEX = "[0-9a-fA-F]"
_SEGMENT_RE = re.compile(
    f"[0-9]{{8}}T[0-9]{{12}}Z{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}"
)


class IngestError(ValueError):
    """A request the collector refuses; the message names the problem (sent back with a 422)."""


@dataclass
class RunOp:
    """One validated post or patch of a run, with its id normalised to the canonical UUID text."""

    kind: OpKind
    run_id: str
    data: dict[str, Any]


# The canonical text every SDK sends: taken as it is (parsing it with uuid.UUID and printing it
# back was a sixth of the cost of validating a run).
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _uuid(value: Any, where: str) -> str:
    if type(value) is str and _CANONICAL_UUID.fullmatch(value) is not None:
        return value
    if isinstance(value, uuid.UUID):
        return str(value)
    if not isinstance(value, str):
        raise IngestError(f"{where}: expected a UUID string, got {type(value).__name__}")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise IngestError(f"{where}: {value[:60]!r} is not a UUID") from None


# ISO-8601 as the SDKs write it: a date, "T" or a space, a time with any number of fraction
# digits (kept to the microsecond), and "Z", an offset (+05:30, +0530, +05) or no zone (UTC).
_ISO_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?"
    r"(?:([Zz])|([+-])(\d{2})(?::?(\d{2}))?)?"
)
#: Epoch microseconds of 0001-01-01T00:00:00Z and of 9999-12-31T23:59:59.999999Z.
MIN_TIME_US = -62_135_596_800_000_000
MAX_TIME_US = 253_402_300_799_999_999


_EPOCH_NAIVE = datetime(1970, 1, 1)


def _iso_us(text: str) -> int:
    # The C parser first (Python 3.11's takes Z, offsets and any number of fraction digits),
    # for what has a time part; the regex below decides everything else, on every version.
    if len(text) >= 16 and text[10] in "Tt ":
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            pass
        else:
            delta = dt - (_EPOCH_NAIVE if dt.tzinfo is None else _EPOCH)
            return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return _iso_us_slow(text)


def _iso_us_slow(text: str) -> int:
    match = _ISO_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text[:60]!r} is not an ISO-8601 time")
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    dt = datetime(
        int(year),
        int(month),
        int(day),
        int(hour),
        int(minute),
        int(second or 0),
        int((fraction or "0")[:6].ljust(6, "0")),
        tzinfo=timezone.utc,
    )
    delta = dt - _EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    if sign and not zulu:
        offset_min = int(off_h) * 60 + int(off_m or 0)
        if int(off_h) > 23 or int(off_m or 0) > 59:
            raise ValueError(f"{text[:60]!r} has an impossible UTC offset")
        micros -= (1 if sign == "+" else -1) * offset_min * 60_000_000
    return micros


def _epoch_ms_us(value: int | float) -> int:
    # Decimal of the shortest repr: 1796162014100.123 ms is exactly ...100123 µs, where
    # value * 1000 in binary floating point could land a hair below and floor to ...100122.
    millis = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if not millis.is_finite():
        raise ValueError("epoch milliseconds must be finite")
    return int((millis * 1000).to_integral_value(rounding=ROUND_FLOOR))


def parse_time_us(value: Any) -> int:
    """Microseconds since the epoch of a wire time, exact to the microsecond.

    Takes every shape the LangSmith SDKs send: ISO-8601 with ``Z``, an offset or no zone (taken
    as UTC), and epoch milliseconds as a JSON integer or float (the JS SDK's ``Date.now()``).
    Raises ValueError for anything else, or a time outside years 1 to 9999.
    """
    if isinstance(value, str):
        micros = _iso_us(value)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        micros = _epoch_ms_us(value)
    else:
        raise ValueError(
            "expected an ISO-8601 string or epoch milliseconds, got " + type(value).__name__
        )
    if not MIN_TIME_US <= micros <= MAX_TIME_US:
        raise ValueError(f"{str(value)[:60]!r} is outside the years 1 to 9999")
    return micros


def format_time_us(micros: int) -> str:
    """Epoch microseconds as the ISO-8601 text the collector stores: UTC, 6 fraction digits, Z."""
    dt = _EPOCH + timedelta(microseconds=micros)
    # Not strftime: its %Y drops the leading zeros of years before 1000 on some platforms.
    return (
        f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:"
        f"{dt.second:02d}.{dt.microsecond:06d}Z"
    )


def normal_time(value: Any, where: str, field: str = "") -> Any:
    """``value`` checked; a number (epoch milliseconds) rewritten as ISO-8601, so that every
    stored time reads back in one shape; a string is kept exactly as sent. ``where`` and
    ``field`` name it in the error (joined only then: this runs for every time of every run)."""
    try:
        micros = parse_time_us(value)
    except (ValueError, OverflowError, ArithmeticError) as exc:
        name = f"{where}.{field}" if field else where
        raise IngestError(f"{name}: not a time ({exc})") from None
    return value if isinstance(value, str) else format_time_us(micros)


def _segment_id(segment: str) -> str | None:
    """The run id of a well-formed dotted-order segment (lower case), or None."""
    # Only 58-character strings reach the cache, so it holds at most 4096 short keys.
    return _valid_segment_id(segment) if len(segment) == SEGMENT_LENGTH else None


@lru_cache(maxsize=4096)  # the runs of one trace repeat their ancestors' segments
def _valid_segment_id(segment: str) -> str | None:
    if _SEGMENT_RE.fullmatch(segment) is None:
        return None
    try:
        # The regex fixed every digit's place; datetime() rejects 31 February, hour 24...
        datetime(
            int(segment[0:4]),
            int(segment[4:6]),
            int(segment[6:8]),
            int(segment[9:11]),
            int(segment[11:13]),
            int(segment[13:15]),
        )
    except ValueError:
        return None
    return segment[TIMESTAMP_LENGTH:].lower()


def _dotted_order_ids(order: str, where: str) -> tuple[str, list[str]]:
    """(the order with its ids in lower case, the segment ids root first), or IngestError."""
    if not order:
        raise IngestError(f"{where}: empty")
    # Checked before splitting: a hostile order costs nothing past the limit.
    if len(order) > MAX_DOTTED_ORDER_SEGMENTS * (SEGMENT_LENGTH + 1):
        raise IngestError(f"{where}: more than {MAX_DOTTED_ORDER_SEGMENTS} segments")
    segments = order.split(".")
    ids: list[str] = []
    normal: list[str] = []
    for i, segment in enumerate(segments):
        run_id = _segment_id(segment)
        if run_id is None:
            raise IngestError(
                f"{where}: segment {i} {segment[:70]!r} is not a UTC time written"
                " %Y%m%dT%H%M%S%fZ (22 characters) followed by a hyphenated UUID"
            )
        ids.append(run_id)
        normal.append(segment[:TIMESTAMP_LENGTH] + run_id)
    return ".".join(normal), ids


def _check_dotted_order(kind: OpKind, data: dict[str, Any], where: str) -> None:
    """Validate ``data["dotted_order"]`` against the run's ids; fill a post's missing ids.

    The order's first id is the trace id, its last the run's id, the one before that the
    parent's. A post that omits trace_id or parent_run_id gets them from its order.
    """
    order, ids = _dotted_order_ids(data["dotted_order"], f"{where}.dotted_order")
    data["dotted_order"] = order
    if ids[-1] != data["id"]:
        raise IngestError(f"{where}.dotted_order: ends with {ids[-1]}, not the run id {data['id']}")
    trace_id = data.get("trace_id")
    if trace_id is not None and ids[0] != trace_id:
        raise IngestError(
            f"{where}.dotted_order: starts with {ids[0]}, not the trace_id {trace_id}"
        )
    parent = data.get("parent_run_id")
    expected_parent = ids[-2] if len(ids) > 1 else None
    if parent is not None and parent != expected_parent:
        raise IngestError(
            f"{where}.dotted_order: names parent {expected_parent}, not the parent_run_id {parent}"
        )
    if kind == "post":
        data["trace_id"] = ids[0]
        if expected_parent is not None:
            data["parent_run_id"] = expected_parent


def _normal_events(events: list[Any], where: str) -> list[Any]:
    """The events with their times checked, and rewritten where they were numbers (a new list
    only then: a streamed run may carry thousands of events)."""
    out = events
    for i, event in enumerate(events):
        if isinstance(event, dict) and event.get("time") is not None:
            when = normal_time(event["time"], where, f"events[{i}].time")
            if when is not event["time"]:
                if out is events:
                    out = list(events)
                out[i] = {**event, "time": when}
    return out


def check_depth(data: dict[str, Any], where: str) -> None:
    """Refuse a run (or a feedback document) nested deeper than :data:`MAX_RUN_DEPTH`, naming
    the field."""
    if _writable_under(data, _ORJSON_WRITE_DEPTH - MAX_RUN_DEPTH, where):
        return
    for key, value in data.items():
        if isinstance(value, (dict, list)) and not _writable_under(
            value, _ORJSON_WRITE_DEPTH - MAX_RUN_DEPTH + 1, where
        ):
            raise IngestError(
                f"{where}.{key}: nested too deeply: a run may nest at most {MAX_RUN_DEPTH}"
                " levels of objects and arrays, the run itself counting as one"
            )
    raise IngestError(f"{where}: nested deeper than {MAX_RUN_DEPTH} levels")


def _writable_under(value: Any, levels: int, where: str) -> bool:
    # orjson refuses to write past _ORJSON_WRITE_DEPTH levels, so the value wrapped in `levels`
    # lists is writable exactly when it nests at most _ORJSON_WRITE_DEPTH - levels deep. Asking
    # orjson costs a sixth of a Python walk over a typical batch.
    for _ in range(levels):
        value = [value]
    try:
        orjson.dumps(value)
    except orjson.JSONEncodeError as exc:
        if "recursion" in str(exc).lower():
            return False
        raise IngestError(f"{where}: cannot be stored as JSON: {exc}") from None
    return True


def validate_op(kind: OpKind, raw: Any, where: str, run_id: str | None = None) -> RunOp:
    """Check one op's shape and normalise ids; raise :class:`IngestError` naming the problem.

    ``run_id`` is the id from the URL or multipart part name, when there is one; a body id that
    disagrees with it is an error.
    """
    if not isinstance(raw, dict):
        raise IngestError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    data = dict(raw)
    body_id = data.get("id")
    if body_id is None and run_id is None:
        raise IngestError(f"{where}: missing required field 'id'")
    rid = _uuid(body_id if body_id is not None else run_id, f"{where}.id")
    if run_id is not None and _uuid(run_id, f"{where} id") != rid:
        raise IngestError(f"{where}: body id {rid} does not match {run_id}")
    data["id"] = rid
    for key in _UUID_FIELDS:
        if data.get(key) is not None:
            data[key] = _uuid(data[key], f"{where}.{key}")
    for key in _DICT_FIELDS:
        if data.get(key) is not None and not isinstance(data[key], dict):
            raise IngestError(f"{where}.{key}: expected an object, got {type(data[key]).__name__}")
    for key in _STR_FIELDS:
        if data.get(key) is not None and not isinstance(data[key], str):
            raise IngestError(f"{where}.{key}: expected a string, got {type(data[key]).__name__}")
    for key in _TIME_FIELDS:
        if data.get(key) is not None:
            data[key] = normal_time(data[key], where, key)
    tags = data.get("tags")
    if tags is not None and not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
        raise IngestError(f"{where}.tags: expected a list of strings")
    events = data.get("events")
    if events is not None:
        if not isinstance(events, list):
            raise IngestError(f"{where}.events: expected a list")
        data["events"] = _normal_events(events, where)
    error = data.get("error")
    if error is not None and not isinstance(error, str):
        raise IngestError(f"{where}.error: expected a string")
    if data.get("dotted_order") is not None:
        _check_dotted_order(kind, data, where)
    if kind == "post":
        for key in ("name", "run_type", "start_time"):
            if data.get(key) is None:
                raise IngestError(f"{where}: missing required field {key!r}")
        if data.get("trace_id") is None and data.get("parent_run_id") is None:
            # Old clients omit trace_id (and dotted_order) on roots: a root is its own trace.
            data["trace_id"] = rid
        if data.get("trace_id") is None:
            raise IngestError(f"{where}: missing required field 'trace_id'")
    check_depth(data, where)
    return RunOp(kind, rid, data)

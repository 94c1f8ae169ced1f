"""Validation of incoming run operations (LangSmith wire dicts) before they reach the store.

A whole request is validated before anything is written, so one bad op rejects the request with a
422 naming the op and the field, and the store is left unchanged.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

__all__ = ["IngestError", "RunOp", "parse_time_us", "validate_op"]

OpKind = Literal["post", "patch"]

# Fields whose wire type we check; anything else is kept as sent so that newer SDK fields survive.
_DICT_FIELDS = ("inputs", "outputs", "extra", "serialized")
_STR_FIELDS = ("name", "run_type", "session_name", "dotted_order")
_UUID_FIELDS = ("trace_id", "parent_run_id", "reference_example_id", "session_id")
_TIME_FIELDS = ("start_time", "end_time")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class IngestError(ValueError):
    """A request the collector refuses; the message names the problem (sent back with a 422)."""


@dataclass
class RunOp:
    """One validated post or patch of a run, with its id normalised to the canonical UUID text."""

    kind: OpKind
    run_id: str
    data: dict[str, Any]


def _uuid(value: Any, where: str) -> str:
    if isinstance(value, uuid.UUID):
        return str(value)
    if not isinstance(value, str):
        raise IngestError(f"{where}: expected a UUID string, got {type(value).__name__}")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise IngestError(f"{where}: {value[:60]!r} is not a UUID") from None


def parse_time_us(value: Any) -> int:
    """Microseconds since the epoch of an ISO-8601 time; a naive time is taken as UTC."""
    if not isinstance(value, str):
        raise ValueError(f"expected an ISO-8601 time string, got {type(value).__name__}")
    text = value.strip()
    # Python 3.10's fromisoformat rejects a trailing Z, and the JS SDK sends one.
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _check_dotted_order(order: str, run_id: str, trace_id: str | None, where: str) -> None:
    segments = order.split(".")
    ids = []
    for segment in segments:
        # A segment is a 22-char UTC timestamp followed by the 36-char run UUID.
        if len(segment) != 58 or segment[21] != "Z":
            raise IngestError(f"{where}: malformed dotted_order segment {segment[:70]!r}")
        ids.append(_uuid(segment[22:], where))
    if ids[-1] != run_id:
        raise IngestError(f"{where}: dotted_order ends with {ids[-1]}, not the run id")
    if trace_id is not None and ids[0] != trace_id:
        raise IngestError(f"{where}: dotted_order starts with {ids[0]}, not the trace_id")


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
            try:
                parse_time_us(data[key])
            except (ValueError, OverflowError) as exc:
                raise IngestError(f"{where}.{key}: not an ISO-8601 time ({exc})") from None
    tags = data.get("tags")
    if tags is not None and not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
        raise IngestError(f"{where}.tags: expected a list of strings")
    events = data.get("events")
    if events is not None and not isinstance(events, list):
        raise IngestError(f"{where}.events: expected a list")
    error = data.get("error")
    if error is not None and not isinstance(error, str):
        raise IngestError(f"{where}.error: expected a string")
    if kind == "post":
        for key in ("name", "run_type", "start_time"):
            if data.get(key) is None:
                raise IngestError(f"{where}: missing required field {key!r}")
        if data.get("trace_id") is None and data.get("parent_run_id") is None:
            # Old clients omit trace_id on roots; the root's id is its trace id.
            data["trace_id"] = rid
        if data.get("trace_id") is None:
            raise IngestError(f"{where}: missing required field 'trace_id'")
    if data.get("dotted_order"):
        _check_dotted_order(
            data["dotted_order"], rid, data.get("trace_id"), f"{where}.dotted_order"
        )
    return RunOp(kind, rid, data)

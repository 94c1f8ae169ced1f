"""Feedback on runs (LangSmith's ``POST /feedback``): validation and the SQL that keeps it.

Feedback is stored whether or not its run has arrived yet: the SDKs send runs in the background,
so feedback on a run created a moment ago routinely overtakes the run itself (LangSmith's server
answers 404 then, and the SDK retries for minutes; this collector keeps the feedback instead).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from .ingest import IngestError, check_depth, format_time_us, normal_time, parse_time_us
from .sql import Connection

__all__ = [
    "FeedbackFilter",
    "FeedbackOp",
    "delete_for_trace",
    "find_feedback",
    "get_feedback",
    "validate_feedback",
    "write_feedback",
]

_UUID_FIELDS = (
    "run_id",
    "trace_id",
    "session_id",
    "comparative_experiment_id",
    "feedback_group_id",
)
_MAX_KEY_LENGTH = 1000


@dataclass
class FeedbackOp:
    """One validated feedback document, ids normalised, times in the stored shape."""

    id: str
    run_id: str | None
    trace_id: str | None
    key: str
    score: float | None
    source_type: str | None
    created_us: int
    doc: dict[str, Any]


@dataclass
class FeedbackFilter:
    """The filters of ``GET /feedback`` (``run``, ``key``, ``source``); None means any."""

    run_ids: list[str] | None = None
    keys: list[str] | None = None
    sources: list[str] | None = None
    limit: int = 100
    offset: int = 0


def _uuid(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise IngestError(f"{where}: expected a UUID string, got {type(value).__name__}")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise IngestError(f"{where}: {value[:60]!r} is not a UUID") from None


def validate_feedback(raw: Any, where: str = "feedback") -> FeedbackOp:
    """Check a feedback body's shape; :class:`IngestError` names the field that is wrong."""
    if not isinstance(raw, dict):
        raise IngestError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    doc = dict(raw)
    doc["id"] = _uuid(doc["id"], f"{where}.id") if doc.get("id") is not None else str(uuid.uuid4())
    for field_name in _UUID_FIELDS:
        if doc.get(field_name) is not None:
            doc[field_name] = _uuid(doc[field_name], f"{where}.{field_name}")
    if doc.get("run_id") is None and doc.get("trace_id") is not None:
        doc["run_id"] = doc["trace_id"]  # feedback on a trace is feedback on its root run
    if doc.get("run_id") is None and doc.get("session_id") is None:
        raise IngestError(f"{where}: needs a run_id, trace_id or session_id")
    key = doc.get("key")
    if not isinstance(key, str) or not key or len(key) > _MAX_KEY_LENGTH:
        raise IngestError(f"{where}.key: expected a non-empty string of at most 1000 characters")
    score = doc.get("score")
    if score is not None and (not isinstance(score, (int, float))):
        raise IngestError(f"{where}.score: expected a number or a boolean")
    comment = doc.get("comment")
    if comment is not None and not isinstance(comment, str):
        raise IngestError(f"{where}.comment: expected a string")
    source = doc.get("feedback_source")
    if source is not None and not isinstance(source, dict):
        raise IngestError(f"{where}.feedback_source: expected an object")
    source_type = source.get("type") if isinstance(source, dict) else None
    if source_type is not None and not isinstance(source_type, str):
        raise IngestError(f"{where}.feedback_source.type: expected a string")
    now = format_time_us(int(time.time() * 1_000_000))
    for key_name in ("created_at", "modified_at", "start_time"):
        if doc.get(key_name) is not None:
            doc[key_name] = normal_time(doc[key_name], where, key_name)
    doc.setdefault("created_at", now)
    doc["created_at"] = doc["created_at"] or now
    doc["modified_at"] = doc.get("modified_at") or doc["created_at"]
    doc.setdefault("run_id", None)
    doc.setdefault("trace_id", None)
    check_depth(doc, where)
    return FeedbackOp(
        id=doc["id"],
        run_id=doc["run_id"],
        trace_id=doc["trace_id"],
        key=key,
        score=float(score) if score is not None else None,
        source_type=source_type,
        created_us=parse_time_us(doc["created_at"]),
        doc=doc,
    )


def write_feedback(conn: Connection, op: FeedbackOp) -> None:
    """Store ``op`` (a repeat of the same id replaces it: the SDK may resend)."""
    conn.execute(
        "INSERT INTO feedback(id, run_id, trace_id, key, score, source_type, created_us,"
        " doc_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
        " run_id = excluded.run_id, trace_id = excluded.trace_id, key = excluded.key,"
        " score = excluded.score, source_type = excluded.source_type,"
        " created_us = excluded.created_us, doc_json = excluded.doc_json",
        (
            op.id,
            op.run_id,
            op.trace_id,
            op.key,
            op.score,
            op.source_type,
            op.created_us,
            orjson.dumps(op.doc).decode(),
        ),
    )


def _in(column: str, values: list[str], where: list[str], params: list[Any]) -> None:
    where.append(f"{column} IN ({','.join('?' * len(values))})")
    params.extend(values)


def find_feedback(conn: Connection, flt: FeedbackFilter) -> list[dict[str, Any]]:
    """One page of feedback documents matching ``flt``, oldest first."""
    where: list[str] = []
    params: list[Any] = []
    if flt.run_ids:
        _in("run_id", flt.run_ids, where, params)
    if flt.keys:
        _in("key", flt.keys, where, params)
    if flt.sources:
        _in("source_type", flt.sources, where, params)
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    rows = conn.execute(
        f"SELECT doc_json FROM feedback{clause} ORDER BY created_us, id LIMIT ? OFFSET ?",
        [*params, flt.limit, flt.offset],
    ).fetchall()
    return [orjson.loads(row[0]) for row in rows]


def get_feedback(conn: Connection, feedback_id: str) -> dict[str, Any] | None:
    """One feedback document, or None."""
    row = conn.execute("SELECT doc_json FROM feedback WHERE id = ?", (feedback_id,)).fetchone()
    return orjson.loads(row[0]) if row else None


def delete_for_trace(conn: Connection, trace_id: str) -> None:
    """Forget the feedback on a trace's runs (retention deletes the trace)."""
    conn.execute(
        "DELETE FROM feedback WHERE trace_id = ? OR run_id IN"
        " (SELECT id FROM runs WHERE trace_id = ?)",
        (trace_id, trace_id),
    )

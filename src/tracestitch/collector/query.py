"""Trace list filters and the SQL they turn into (kept apart from the store for testing)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TraceFilter", "build_trace_query", "like_pattern"]

STATUSES = ("success", "error", "pending")


@dataclass
class TraceFilter:
    """Filters of ``GET /api/traces``; None means "don't filter". Times are epoch microseconds."""

    project: str | None = None
    service: str | None = None
    name: str | None = None
    status: str | None = None
    start_gte_us: int | None = None
    start_lte_us: int | None = None
    min_duration_us: int | None = None
    text: str | None = None
    limit: int = 50
    offset: int = 0


def like_pattern(text: str) -> str:
    """A LIKE pattern matching ``text`` anywhere, with LIKE's wildcards escaped (ESCAPE '\\')."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def build_trace_query(flt: TraceFilter) -> tuple[str, str, list[object]]:
    """(page SQL expecting LIMIT/OFFSET params last, count SQL, shared params)."""
    where: list[str] = []
    params: list[object] = []
    name = like_pattern(flt.name) if flt.name is not None else None
    service = "EXISTS (SELECT 1 FROM runs r WHERE r.service = ? AND r.trace_id = t.trace_id)"
    for value, condition in (
        (flt.project, "t.project = ?"),
        (flt.service, service),
        (name, "t.root_name LIKE ? ESCAPE '\\'"),
        (flt.status, "t.status = ?"),
        (flt.start_gte_us, "t.start_us >= ?"),
        (flt.start_lte_us, "t.start_us <= ?"),
        (flt.min_duration_us, "t.duration_us >= ?"),
    ):
        if value is not None:
            where.append(condition)
            params.append(value)
    if flt.text:
        # A linear scan of the trace's run JSON: fine for a local collector's data volumes.
        pattern = like_pattern(flt.text)
        where.append(
            "EXISTS (SELECT 1 FROM runs r WHERE r.trace_id = t.trace_id AND (r.name LIKE ?"
            " ESCAPE '\\' OR r.post_json LIKE ? ESCAPE '\\' OR r.patch_json LIKE ? ESCAPE '\\'))"
        )
        params += [pattern, pattern, pattern]
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    page = (
        f"SELECT * FROM traces t{clause} ORDER BY t.start_us DESC, t.trace_id DESC LIMIT ? OFFSET ?"
    )
    count = f"SELECT COUNT(*) FROM traces t{clause}"
    return page, count, params

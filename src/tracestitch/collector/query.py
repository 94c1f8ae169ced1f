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
    if flt.project is not None:
        where.append("t.project = ?")
        params.append(flt.project)
    if flt.service is not None:
        where.append(
            "EXISTS (SELECT 1 FROM runs r WHERE r.service = ? AND r.trace_id = t.trace_id)"
        )
        params.append(flt.service)
    if flt.name is not None:
        where.append("t.root_name LIKE ? ESCAPE '\\'")
        params.append(like_pattern(flt.name))
    if flt.status is not None:
        where.append("t.status = ?")
        params.append(flt.status)
    if flt.start_gte_us is not None:
        where.append("t.start_us >= ?")
        params.append(flt.start_gte_us)
    if flt.start_lte_us is not None:
        where.append("t.start_us <= ?")
        params.append(flt.start_lte_us)
    if flt.min_duration_us is not None:
        where.append("t.duration_us >= ?")
        params.append(flt.min_duration_us)
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

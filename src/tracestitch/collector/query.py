"""Trace list filters and the SQL they turn into (kept apart from the store for testing)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from tracestitch.status import STATUS_WORDS

__all__ = [
    "MIN_PREFIX",
    "SORTS",
    "TraceFilter",
    "TraceRefError",
    "build_trace_query",
    "like_pattern",
    "resolve_trace_ref",
]

#: The shortest trace-id prefix accepted in place of a whole id (as `git` takes short hashes).
MIN_PREFIX = 8
_PREFIX = re.compile(r"[0-9a-f-]+")

#: The ``status`` filter's values: the one set of status words (:mod:`tracestitch.status`).
STATUSES = STATUS_WORDS


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
    #: Traces with a run that carries this tag / this ``extra.metadata`` key and value (compared
    #: as text) / of this run type / serving this route (``extra.route``, e.g. ``/orders/{id}``).
    tag: str | None = None
    metadata: tuple[str, str] | None = None
    run_type: str | None = None
    route: str | None = None
    #: One of :data:`SORTS`; newest first by default.
    sort: str = "start"
    descending: bool = True
    limit: int = 50
    offset: int = 0


#: The columns the trace list sorts on, by their names in ``GET /api/traces?sort=``.
SORTS = {
    "start": "t.start_us",
    "duration": "t.duration_us",
    "runs": "t.run_count",
    "errors": "t.error_count",
    "tokens": "t.total_tokens",
    "name": "t.root_name",
}


def _in_runs(condition: str) -> str:
    # A trace matches when one of its runs does; the condition reads the run's post and patch.
    either = f"({condition.format(doc='r.post_json')} OR {condition.format(doc='r.patch_json')})"
    return f"EXISTS (SELECT 1 FROM runs r WHERE r.trace_id = t.trace_id AND {either})"


# The run documents are JSON text; each database reads into them its own way. Per dialect:
# (tag, metadata key and value, route). PostgreSQL: jsonb containment and ->> (its stores set
# ``dialect = "postgres"`` on their connections); SQLite: its JSON functions.
_JSON_CONDITIONS = {
    "sqlite": (
        _in_runs("EXISTS (SELECT 1 FROM json_each({doc}, '$.tags') WHERE value = ?)"),
        _in_runs("CAST(json_extract({doc}, '$.extra.metadata.' || json_quote(?)) AS TEXT) = ?"),
        _in_runs("json_extract({doc}, '$.extra.route') = ?"),
    ),
    "postgres": (
        _in_runs("({doc}::jsonb -> 'tags') @> jsonb_build_array(CAST(? AS TEXT))"),
        _in_runs("({doc}::jsonb -> 'extra' -> 'metadata' ->> CAST(? AS TEXT)) = ?"),
        _in_runs("({doc}::jsonb -> 'extra' ->> 'route') = ?"),
    ),
}
_RUN_TYPE = "EXISTS (SELECT 1 FROM runs r WHERE r.trace_id = t.trace_id AND r.run_type = ?)"


def like_pattern(text: str) -> str:
    """A LIKE pattern matching ``text`` anywhere, with LIKE's wildcards escaped (ESCAPE '\\')."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def build_trace_query(flt: TraceFilter, dialect: str = "sqlite") -> tuple[str, str, list[object]]:
    """(page SQL expecting LIMIT/OFFSET params last, count SQL, shared params) for ``dialect``
    (``"sqlite"`` or ``"postgres"``: how the run documents' JSON is read)."""
    tag_sql, metadata_sql, route_sql = _JSON_CONDITIONS[dialect]
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
    for value, condition in (
        (
            flt.run_type,
            "EXISTS (SELECT 1 FROM runs r WHERE r.trace_id = t.trace_id AND r.run_type = ?)",
        ),
        (flt.tag, tag_sql),
        (flt.route, route_sql),
    ):
        if value is not None:
            where.append(condition)
            params += [value] * condition.count("?")
    if flt.metadata is not None:
        where.append(metadata_sql)
        params += [*flt.metadata, *flt.metadata]
    if flt.text:
        # A linear scan of the trace's run JSON: fine for a local collector's data volumes.
        pattern = like_pattern(flt.text)
        where.append(
            "EXISTS (SELECT 1 FROM runs r WHERE r.trace_id = t.trace_id AND (r.name LIKE ?"
            " ESCAPE '\\' OR r.post_json LIKE ? ESCAPE '\\' OR r.patch_json LIKE ? ESCAPE '\\'))"
        )
        params += [pattern, pattern, pattern]
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    direction = "DESC" if flt.descending else "ASC"
    column = SORTS.get(flt.sort, SORTS["start"])
    page = (
        f"SELECT * FROM traces t{clause} ORDER BY {column} {direction} NULLS LAST,"
        f" t.trace_id {direction} LIMIT ? OFFSET ?"
    )
    count = f"SELECT COUNT(*) FROM traces t{clause}"
    return page, count, params


class TraceRefError(ValueError):
    """A trace reference that is neither a trace id nor a usable prefix, or an ambiguous one."""


def resolve_trace_ref(text: str, lookup: Callable[[str, int], list[str]]) -> str | None:
    """The trace id that ``text`` (a whole id, or a prefix of at least :data:`MIN_PREFIX`
    characters) names, or None when no stored trace matches.

    ``lookup(prefix, limit)`` returns up to ``limit`` stored ids starting with ``prefix``.
    """
    try:
        return str(uuid.UUID(text))
    except ValueError:
        pass
    prefix = text.strip().lower()
    if len(prefix) < MIN_PREFIX or not _PREFIX.fullmatch(prefix):
        raise TraceRefError(
            f"{text[:60]!r} is not a trace id or a prefix of one ({MIN_PREFIX} or more hex digits)"
        )
    found = lookup(prefix, 3)
    if len(found) > 1:
        shown = ", ".join(found[:2]) + (", ..." if len(found) > 2 else "")
        raise TraceRefError(f"{prefix!r} matches several traces ({shown}): give more of the id")
    return found[0] if found else None

"""Run filters of LangSmith's ``POST /runs/query`` (what ``Client.list_runs`` sends) and their SQL.

Supported: ``session`` (project ids), ``run_type``, ``trace``, ``id``, ``parent_run``, ``is_root``,
``error``, ``start_time``, ``order``, ``limit`` and ``cursor``; ``select`` is accepted and
ignored (every field is returned). LangSmith's filter language (``filter``, ``trace_filter``,
``tree_filter``, ``query``) and dataset filters are not: a query using them is refused (501)
rather than answered as if they were not there.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from .ingest import IngestError, parse_time_us

__all__ = ["PAGE_SIZE", "RunQuery", "UnsupportedQuery", "build_run_query", "parse_run_query"]

#: The most runs one page holds (the SDK asks for more pages with the cursor).
PAGE_SIZE = 100
#: The most ids one query may name (``id``, ``session``).
MAX_IDS = 1000
_IGNORED = {"select", "limit", "cursor", "order"}
_UNSUPPORTED = (
    "filter",
    "trace_filter",
    "tree_filter",
    "query",
    "reference_example",
    "data_source_type",
    "search_filter",
)


class UnsupportedQuery(Exception):
    """A query using a filter the collector does not implement (answered 501)."""


@dataclass
class RunQuery:
    """A parsed ``/runs/query`` body. ``session_ids`` are project ids; the store turns them
    into names. ``cursor`` is (start_us, run id) of the last run of the previous page."""

    session_ids: list[str] | None = None
    run_type: str | None = None
    trace_id: str | None = None
    ids: list[str] | None = None
    parent_run_id: str | None = None
    is_root: bool | None = None
    error: bool | None = None
    start_gte_us: int | None = None
    descending: bool = True
    limit: int = PAGE_SIZE
    cursor: tuple[int, str] | None = None


def _uuid(value: Any, where: str) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise IngestError(f"{where}: {str(value)[:60]!r} is not a UUID") from None


def _uuids(value: Any, where: str) -> list[str]:
    items = value if isinstance(value, list) else [value]
    if len(items) > MAX_IDS:
        raise IngestError(f"{where}: at most {MAX_IDS} ids per query")
    return [_uuid(item, f"{where}[{i}]") for i, item in enumerate(items)]


def _bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if value in (0, 1):  # the SDK's docs show is_root=1
        return bool(value)
    raise IngestError(f"{where}: expected true or false")


def encode_cursor(start_us: int, run_id: str) -> str:
    """The opaque ``cursors.next`` of a page ending with this run."""
    return f"{start_us}_{run_id}"


def _cursor(value: Any) -> tuple[int, str]:
    if isinstance(value, str):
        start, _, run_id = value.partition("_")
        try:
            return int(start), str(uuid.UUID(run_id))
        except ValueError:
            pass
    raise IngestError("cursor: not a cursor this collector handed out")


def parse_run_query(body: Any) -> RunQuery:
    """The :class:`RunQuery` of a request body; IngestError (422) names a malformed field,
    :class:`UnsupportedQuery` (501) a filter the collector does not implement."""
    if not isinstance(body, dict):
        raise IngestError("expected a JSON object of run filters")
    used = sorted(k for k in _UNSUPPORTED if body.get(k) not in (None, [], ""))
    if used:
        raise UnsupportedQuery(
            f"the tracestitch collector does not implement the run filter(s) {', '.join(used)};"
            " it filters by session, run_type, trace, id, parent_run, is_root, error and"
            " start_time"
        )
    query = RunQuery()
    if body.get("session") is not None:
        query.session_ids = _uuids(body["session"], "session")
    if body.get("run_type") is not None:
        if not isinstance(body["run_type"], str):
            raise IngestError("run_type: expected a string")
        query.run_type = body["run_type"]
    if body.get("trace") is not None:
        query.trace_id = _uuid(body["trace"], "trace")
    if body.get("id") is not None:
        query.ids = _uuids(body["id"], "id")
    if body.get("parent_run") is not None:
        query.parent_run_id = _uuid(body["parent_run"], "parent_run")
    if body.get("is_root") is not None:
        query.is_root = _bool(body["is_root"], "is_root")
    if body.get("error") is not None:
        query.error = _bool(body["error"], "error")
    if body.get("start_time") is not None:
        try:
            query.start_gte_us = parse_time_us(body["start_time"])
        except (ValueError, OverflowError, ArithmeticError) as exc:
            raise IngestError(f"start_time: not a time ({exc})") from None
    order = body.get("order")
    if order not in (None, "asc", "desc"):
        raise IngestError("order: expected 'asc' or 'desc'")
    query.descending = order != "asc"
    limit = body.get("limit")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise IngestError("limit: expected a positive integer")
        query.limit = min(limit, PAGE_SIZE)
    if body.get("cursor") is not None:
        query.cursor = _cursor(body["cursor"])
    return query


def build_run_query(query: RunQuery, projects: list[str] | None) -> tuple[str, list[Any]]:
    """(SQL, params) selecting one page of run ids and start times. ``projects`` are the names
    of ``query.session_ids`` (None: no project filter)."""
    # Only runs whose post has arrived: a run known only from its patch has no name or type.
    where = ["start_us IS NOT NULL", "name IS NOT NULL", "run_type IS NOT NULL"]
    params: list[Any] = []

    def among(column: str, values: list[str]) -> None:
        where.append(f"{column} IN ({','.join('?' * len(values))})")
        params.extend(values)

    if projects is not None:
        among("project", projects)
    for column, value in (
        ("run_type", query.run_type),
        ("trace_id", query.trace_id),
        ("parent_run_id", query.parent_run_id),
    ):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if query.ids is not None:
        among("id", query.ids)
    if query.is_root is not None:
        where.append("parent_run_id IS NULL" if query.is_root else "parent_run_id IS NOT NULL")
    if query.error is not None:
        where.append("status = 'error'" if query.error else "status != 'error'")
    if query.start_gte_us is not None:
        where.append("start_us >= ?")
        params.append(query.start_gte_us)
    if query.cursor is not None:
        where.append("(start_us, id) < (?, ?)" if query.descending else "(start_us, id) > (?, ?)")
        params.extend(query.cursor)
    direction = "DESC" if query.descending else "ASC"
    sql = (
        f"SELECT id, start_us FROM runs WHERE {' AND '.join(where)}"
        f" ORDER BY start_us {direction}, id {direction} LIMIT ?"
    )
    return sql, [*params, query.limit]

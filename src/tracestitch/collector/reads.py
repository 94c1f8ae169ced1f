"""The store's read side: the lookups behind the query API, each over a reader connection.

:class:`~tracestitch.collector.store.Store` hands these its per-thread reader connection; they
return plain dicts (trace summaries, merged wire runs) ready for the query API to shape.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import orjson

from .query import TraceFilter, build_trace_query
from .runs import error_summary, merge_run
from .sql import Connection

__all__ = [
    "attach_feedback",
    "child_runs",
    "count_runs",
    "get_attachment",
    "get_run",
    "list_traces",
    "runs_by_ids",
    "span_run_ids",
    "trace_ids_with_prefix",
    "trace_runs",
    "trace_summary",
]

# SQLite caps the number of bound parameters per statement.
_CHUNK = 500


def _chunks(ids: list[str]) -> Iterator[tuple[list[str], str]]:
    # ``ids`` in slices of at most _CHUNK, each with its "?,?,..." placeholders for IN (...).
    for i in range(0, len(ids), _CHUNK):
        chunk = ids[i : i + _CHUNK]
        yield chunk, ",".join("?" * len(chunk))


def _summary(row: Any) -> dict[str, Any]:
    return {
        "trace_id": row["trace_id"],
        "name": row["root_name"],
        "project": row["project"],
        "status": row["status"],
        "start_us": row["start_us"],
        "end_us": row["end_us"],
        "duration_ms": row["duration_us"] / 1000 if row["duration_us"] is not None else None,
        "run_count": row["run_count"],
        "error_count": row["error_count"],
        "services": orjson.loads(row["services"]),
        "total_tokens": row["total_tokens"],
        "total_cost": row["total_cost"],
        "has_root": bool(row["has_root"]),
    }


def list_traces(conn: Connection, flt: TraceFilter) -> dict[str, Any]:
    """One page of trace summaries, newest first, plus the total matching count."""
    # A PostgreSQL connection says so (pg_store's wrapper); sqlite3's has no such attribute.
    sql, count_sql, params = build_trace_query(flt, getattr(conn, "dialect", "sqlite"))
    rows = conn.execute(sql, [*params, flt.limit, flt.offset]).fetchall()
    total = conn.execute(count_sql, params).fetchone()[0]
    items = [_summary(row) for row in rows]
    _attach_errors(conn, items)
    next_offset = flt.offset + len(items) if flt.offset + len(items) < total else None
    return {"traces": items, "total": total, "offset": flt.offset, "next_offset": next_offset}


def _attach_errors(conn: Connection, items: list[dict[str, Any]]) -> None:
    # Each listed trace's error, for the list's error column: the deepest failed run's, as the
    # cause (the root often only says "HTTP 502"), summed up in a line.
    for item in items:
        item["error"] = None
    by_id = {item["trace_id"]: item for item in items if item["error_count"]}
    ids = list(by_id)
    deepest: dict[str, tuple[int, str]] = {}
    for chunk, marks in _chunks(ids):
        for row in conn.execute(
            "SELECT trace_id, dotted_order, post_json, patch_json FROM runs"
            f" WHERE trace_id IN ({marks}) AND status = 'error' ORDER BY dotted_order",
            chunk,
        ):
            depth = (row["dotted_order"] or "").count(".")
            if row["trace_id"] in deepest and deepest[row["trace_id"]][0] >= depth:
                continue
            post = orjson.loads(row["post_json"]) if row["post_json"] else None
            patch = orjson.loads(row["patch_json"]) if row["patch_json"] else None
            error = merge_run(post, patch).get("error")
            if error:
                deepest[row["trace_id"]] = (depth, error_summary(error))
    for trace_id, item in by_id.items():
        item["error"] = deepest.get(trace_id, (0, None))[1]


def trace_summary(conn: Connection, trace_id: str) -> dict[str, Any] | None:
    """The summary row of one trace, or None."""
    found = conn.execute("SELECT * FROM traces WHERE trace_id = ?", (trace_id,)).fetchone()
    return _summary(found) if found else None


def _runs(conn: Connection, where: str, *params: str) -> list[dict[str, Any]]:
    # The merged wire dicts of the runs matching ``where``, in dotted (tree) order.
    rows = conn.execute(
        f"SELECT id, parent_run_id, post_json, patch_json, span_id FROM runs WHERE {where}"
        " ORDER BY dotted_order, start_us",
        params,
    ).fetchall()
    runs = []
    for row in rows:
        post = orjson.loads(row["post_json"]) if row["post_json"] else None
        patch = orjson.loads(row["patch_json"]) if row["patch_json"] else None
        run = merge_run(post, patch)
        run["id"] = row["id"]
        if row["parent_run_id"] is not None:
            # The column wins: an OTLP span's parent is re-linked there once its run arrives.
            run["parent_run_id"] = row["parent_run_id"]
        run["_has_post"] = post is not None
        run["_span_id"] = row["span_id"]
        runs.append(run)
    return runs


def _attach_attachment_info(conn: Connection, runs: list[dict[str, Any]]) -> None:
    by_id = {run["id"]: run for run in runs}
    ids = list(by_id)
    for chunk, marks in _chunks(ids):
        for row in conn.execute(
            "SELECT run_id, name, content_type, length(data) AS size FROM attachments"
            f" WHERE run_id IN ({marks})",
            chunk,
        ):
            run = by_id[row["run_id"]]
            if not isinstance(run.get("attachments"), dict):
                run["attachments"] = {}
            run["attachments"][row["name"]] = {
                "content_type": row["content_type"],
                "size": row["size"],
                # Percent-encoded: a name may hold "/", "?", "#" or spaces.
                "presigned_url": f"/api/runs/{row['run_id']}/attachments/"
                + quote(row["name"], safe=""),
            }


def attach_feedback(conn: Connection, runs: list[dict[str, Any]]) -> None:
    """Put each run's feedback documents (oldest first) on it as ``feedback``."""
    by_id = {run["id"]: run for run in runs}
    ids = list(by_id)
    for chunk, marks in _chunks(ids):
        for row in conn.execute(
            f"SELECT run_id, doc_json FROM feedback WHERE run_id IN ({marks})"
            " ORDER BY created_us, id",
            chunk,
        ):
            by_id[row["run_id"]].setdefault("_feedback", []).append(orjson.loads(row["doc_json"]))


def trace_runs(conn: Connection, trace_id: str) -> list[dict[str, Any]]:
    """Every stored run of a trace (merged wire dicts, with their attachments and feedback),
    in dotted order."""
    runs = _runs(conn, "trace_id = ?", trace_id)
    _attach_attachment_info(conn, runs)
    attach_feedback(conn, runs)
    return runs


def runs_by_ids(conn: Connection, ids: list[str]) -> list[dict[str, Any]]:
    """The runs ``ids`` that exist (merged, with attachments and feedback), in that order."""
    found: dict[str, dict[str, Any]] = {}
    for chunk, marks in _chunks(ids):
        for run in _runs(conn, f"id IN ({marks})", *chunk):
            found[run["id"]] = run
    runs = [found[i] for i in ids if i in found]
    _attach_attachment_info(conn, runs)
    attach_feedback(conn, runs)
    return runs


def span_run_ids(conn: Connection, trace_id: str, span_ids: list[str]) -> dict[str, str]:
    """{span id: run id} for the runs of a trace answering to ``span_ids``."""
    found: dict[str, str] = {}
    for chunk, marks in _chunks(span_ids):
        for row in conn.execute(
            f"SELECT span_id, id FROM runs WHERE trace_id = ? AND span_id IN ({marks})",
            [trace_id, *chunk],
        ):
            found.setdefault(row["span_id"], row["id"])
    return found


def get_run(conn: Connection, run_id: str) -> dict[str, Any] | None:
    """One merged run, or None."""
    runs = runs_by_ids(conn, [run_id])
    return runs[0] if runs else None


def child_runs(conn: Connection, run_id: str) -> list[dict[str, Any]]:
    """The direct children of a run, in dotted order."""
    return _runs(conn, "parent_run_id = ?", run_id)


def get_attachment(conn: Connection, run_id: str, name: str) -> tuple[str, bytes] | None:
    """(content type, bytes) of one attachment, or None."""
    row = conn.execute(
        "SELECT content_type, data FROM attachments WHERE run_id = ? AND name = ?",
        (run_id, name),
    ).fetchone()
    return (row["content_type"], bytes(row["data"])) if row else None


def count_runs(conn: Connection) -> int:
    """Number of stored runs."""
    return int(conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0])


def trace_ids_with_prefix(conn: Connection, prefix: str, limit: int = 2) -> list[str]:
    """Up to ``limit`` stored trace ids starting with ``prefix`` (lowercase UUID text)."""
    # A range on the primary key rather than LIKE: an index seek, not a scan. Ids hold only
    # hex digits and "-", all of which sort below "~".
    rows = conn.execute(
        "SELECT trace_id FROM traces WHERE trace_id >= ? AND trace_id < ? ORDER BY trace_id"
        " LIMIT ?",
        (prefix, prefix + "~", limit),
    ).fetchall()
    return [row[0] for row in rows]

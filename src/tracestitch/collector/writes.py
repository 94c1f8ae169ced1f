"""The store's write side: one op into the ``runs`` table, and a trace's summary row.

Both run inside the caller's write transaction (:meth:`Store.ingest`), so a trace's summary is
always recomputed in the same commit as the runs it summarises.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import orjson

from .ingest import RunOp
from .runs import merge_run, overlay, run_service, run_status, time_us
from .usage import run_usage

__all__ = ["summarise_trace", "write_op"]


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def write_op(conn: sqlite3.Connection, op: RunOp, now_us: int) -> str | None:
    """Fold ``op`` into its run's stored post or patch and refresh the run's indexed columns.

    Returns the run's trace id (None if it has none yet).
    """
    row = conn.execute("SELECT post_json, patch_json FROM runs WHERE id = ?", (op.run_id,))
    found = row.fetchone()
    post = orjson.loads(found["post_json"]) if found and found["post_json"] else None
    patch = orjson.loads(found["patch_json"]) if found and found["patch_json"] else None
    if op.kind == "post":
        post = overlay(post or {}, op.data)
    else:
        patch = overlay(patch or {}, op.data)
    run = merge_run(post, patch)
    usage = run_usage(run)
    start_us = time_us(run.get("start_time"))
    end_us = time_us(run.get("end_time"))
    values = (
        op.run_id,
        run.get("trace_id"),
        run.get("parent_run_id"),
        run.get("dotted_order"),
        run.get("name"),
        run.get("run_type"),
        run.get("session_name") or "default",
        run_service(run),
        run_status(run, end_us),
        start_us,
        end_us,
        usage["total_tokens"],
        usage["total_cost"],
        _dumps(post) if post is not None else None,
        _dumps(patch) if patch is not None else None,
        now_us,
    )
    conn.execute(
        "INSERT OR REPLACE INTO runs(id, trace_id, parent_run_id, dotted_order, name, run_type,"
        " project, service, status, start_us, end_us, total_tokens, total_cost, post_json,"
        " patch_json, received_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        values,
    )
    trace_id = run.get("trace_id")
    return trace_id if isinstance(trace_id, str) else None


def summarise_trace(conn: sqlite3.Connection, trace_id: str, now_us: int) -> None:
    """Recompute the ``traces`` row of ``trace_id`` from its stored runs."""
    agg = conn.execute(
        "SELECT COUNT(*) AS n, MIN(start_us) AS start_us, MAX(COALESCE(end_us, start_us))"
        " AS end_us, SUM(status = 'error') AS errors, SUM(status = 'pending') AS pending,"
        " SUM(total_tokens) AS tokens, SUM(total_cost) AS cost FROM runs WHERE trace_id = ?",
        (trace_id,),
    ).fetchone()
    services = [
        r[0]
        for r in conn.execute(
            "SELECT DISTINCT service FROM runs WHERE trace_id = ? AND service IS NOT NULL"
            " ORDER BY service",
            (trace_id,),
        )
    ]
    root = conn.execute(
        "SELECT name, status, start_us, end_us, project FROM runs WHERE id = ?", (trace_id,)
    ).fetchone()
    if root is not None and root["start_us"] is not None:
        start_us, status = root["start_us"], root["status"]
        end_us = root["end_us"]
        name, project = root["name"], root["project"]
    else:
        # The root has not arrived (yet): summarise from what has.
        start_us, end_us = agg["start_us"], agg["end_us"] if not agg["pending"] else None
        status = "error" if agg["errors"] else ("pending" if agg["pending"] else "success")
        name = project = None
        first = conn.execute(
            "SELECT name, project FROM runs WHERE trace_id = ? ORDER BY start_us LIMIT 1",
            (trace_id,),
        ).fetchone()
        if first is not None:
            name, project = first["name"], first["project"]
    duration = end_us - start_us if end_us is not None and start_us is not None else None
    conn.execute(
        "INSERT OR REPLACE INTO traces(trace_id, root_name, project, status, start_us, end_us,"
        " duration_us, run_count, error_count, services, total_tokens, total_cost,"
        " has_root, updated_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            trace_id,
            name,
            project or "default",
            status,
            start_us,
            end_us,
            duration,
            agg["n"],
            agg["errors"] or 0,
            _dumps(services),
            agg["tokens"],
            agg["cost"],
            int(root is not None),
            now_us,
        ),
    )

"""The store's write side: a request's ops into the ``runs`` table, and its traces' summaries.

Both run inside the caller's write transaction (:meth:`Store.ingest`), so a trace's summary, and
its requests in the services rollup (:mod:`.rollups`), are always recomputed in the same commit
as the runs they sum up. They work a request at a time,
not an op at a time: one ``SELECT`` finds the runs already stored, one ``executemany`` writes
them back, and the summaries of all the traces touched are computed by grouped queries (per
op and per trace, those statements were most of the collector's ingest cost).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

import orjson

from tracestitch.schemas import usage_from_wire

from . import rollups
from .ingest import RunOp
from .rollups import Contributions
from .runs import overlay, run_service, run_status, time_us
from .sql import Connection
from .usage import cost_number

__all__ = [
    "RUN_COLUMNS",
    "TRACE_COLUMNS",
    "merge_ops",
    "relink",
    "run_span_id",
    "summarise_traces",
    "trace_rows",
    "write_ops",
]

# SQLite caps the number of bound parameters per statement (999 before 3.32).
_CHUNK = 500

#: The columns of a row :func:`merge_ops` makes, in order.
RUN_COLUMNS = (
    "id, trace_id, parent_run_id, dotted_order, name, run_type, project, service, status,"
    " start_us, end_us, total_tokens, total_cost, post_json, patch_json, received_us, span_id"
)
_INSERT_RUN = f"INSERT OR REPLACE INTO runs({RUN_COLUMNS}) VALUES ({', '.join('?' * 17)})"
_SPAN_ID_RE = re.compile("[0-9a-f]{16}")
#: The columns of a row :func:`trace_rows` makes, in order.
TRACE_COLUMNS = (
    "trace_id, root_name, project, status, start_us, end_us, duration_us, run_count,"
    " error_count, services, total_tokens, total_cost, has_root, updated_us"
)
_INSERT_TRACE = f"INSERT OR REPLACE INTO traces({TRACE_COLUMNS}) VALUES ({', '.join('?' * 14)})"


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def _chunks(items: Sequence[str]) -> Iterator[tuple[Sequence[str], str]]:
    """``items`` in slices SQLite can bind, each with its ``?, ?, ...`` placeholders."""
    for i in range(0, len(items), _CHUNK):
        chunk = items[i : i + _CHUNK]
        yield chunk, ",".join("?" * len(chunk))


def run_span_id(run: dict[str, Any], run_id: str) -> str:
    """The span id a run answers to: the OTLP span it was made from (``extra.otel.span_id``),
    else its UUID's low 64 bits, the span id tracestitch gives it in ``traceparent`` and OTLP."""
    extra = run.get("extra")
    otel = extra.get("otel") if isinstance(extra, dict) else None
    span_id = otel.get("span_id") if isinstance(otel, dict) else None
    if isinstance(span_id, str) and _SPAN_ID_RE.fullmatch(span_id):
        return span_id
    return run_id[19:23] + run_id[24:]


def _project_names(conn: Connection, runs: Sequence[dict[str, Any]]) -> dict[str, str]:
    # An SDK that knows a project's id (from read_project) may send only that, no name.
    wanted = sorted(
        {
            run["session_id"]
            for run in runs
            if not run.get("session_name") and isinstance(run.get("session_id"), str)
        }
    )
    names: dict[str, str] = {}
    for chunk, marks in _chunks(wanted):
        for row in conn.execute(f"SELECT id, name FROM projects WHERE id IN ({marks})", chunk):
            names[row[0]] = row[1]
    return names


def relink(conn: Connection, rows: list[tuple[Any, ...]]) -> None:
    """OTLP spans stored before their parent run, which named it only by its span id, were
    parented on the UUID that span id stands for (otlp_spans.py): point them at the run."""
    stand_ins: dict[str, tuple[str, str]] = {}
    for row in rows:
        run_id, trace_id, span_id = row[0], row[1], row[-1]
        if isinstance(trace_id, str):
            # The text of tracestitch.ids.uuid_from_w3c(trace, span_id): the trace id's high
            # 64 bits, the span id as the low 64 (built from text: this runs for every run).
            stand_in = f"{trace_id[:19]}{span_id[:4]}-{span_id[4:]}"
            if stand_in != run_id:
                stand_ins[stand_in] = (run_id, trace_id)
    found = []
    for chunk, marks in _chunks(list(stand_ins)):
        found += conn.execute(
            f"SELECT id, parent_run_id, trace_id FROM runs WHERE parent_run_id IN ({marks})",
            chunk,
        ).fetchall()
    conn.executemany(
        "UPDATE runs SET parent_run_id = ? WHERE id = ?",
        [
            (stand_ins[parent][0], child)
            for child, parent, trace_id in found
            if stand_ins[parent][1] == trace_id
        ],
    )


def write_ops(
    conn: Connection, ops: Sequence[RunOp], now_us: int
) -> tuple[set[str], set[str], Contributions]:
    """Fold ``ops`` (in order: a request may hold a run's post and its patch) into their runs'
    stored post and patch, and refresh the runs' indexed columns. Returns the trace ids
    touched, the projects the runs belong to, and what the touched traces added to the
    services rollup before (for :func:`summarise_traces`)."""
    rows, touched, projects = merge_ops(conn, ops, now_us)
    before = rollups.contributions(conn, touched)
    conn.executemany(_INSERT_RUN, rows)
    relink(conn, rows)
    return touched, projects, before


def merge_ops(
    conn: Connection, ops: Sequence[RunOp], now_us: int
) -> tuple[list[tuple[Any, ...]], set[str], set[str]]:
    """The rows (:data:`RUN_COLUMNS`) of the runs ``ops`` touch, each the stored post and patch
    with ``ops`` folded in, plus the trace ids touched and the projects the runs belong to.
    Writes nothing: the caller stores the rows, then calls :func:`relink` with them."""
    stored: dict[str, tuple[str | None, str | None]] = {}
    ids = list(dict.fromkeys(op.run_id for op in ops))
    for chunk, marks in _chunks(ids):
        for row in conn.execute(
            f"SELECT id, post_json, patch_json FROM runs WHERE id IN ({marks})", chunk
        ):
            stored[row[0]] = (row[1], row[2])
    # run id -> [post, patch] as they will be stored
    state: dict[str, list[dict[str, Any] | None]] = {}
    for op in ops:
        current = state.get(op.run_id)
        if current is None:
            post_json, patch_json = stored.get(op.run_id, (None, None))
            current = state[op.run_id] = [
                orjson.loads(post_json) if post_json else None,
                orjson.loads(patch_json) if patch_json else None,
            ]
        slot = 0 if op.kind == "post" else 1
        current[slot] = overlay(current[slot] or {}, op.data)
    rows = []
    touched: set[str] = set()
    projects: set[str] = set()
    # The union of post and patch, the patch's fields winning (runs.merge_run), without
    # a copy when there is only one of them: nothing below changes it.
    merged = {
        run_id: (post or {}) if patch is None else overlay(post or {}, patch)
        for run_id, (post, patch) in state.items()
    }
    names = _project_names(conn, list(merged.values()))
    for run_id, (post, patch) in state.items():
        run = merged[run_id]
        project = (
            run.get("session_name")
            or names.get(run.get("session_id") or "")
            # An addressed run (LangSmith 0.14+) names no project: filed under its address.
            or (run.get("address") if isinstance(run.get("address"), str) else None)
            or "default"
        )
        projects.add(project)
        usage = usage_from_wire(run)
        end_us = time_us(run.get("end_time"))
        trace_id = run.get("trace_id")
        if isinstance(trace_id, str):
            touched.add(trace_id)
        rows.append(
            (
                run_id,
                trace_id,
                run.get("parent_run_id"),
                run.get("dotted_order"),
                run.get("name"),
                run.get("run_type"),
                project,
                run_service(run),
                run_status(run, end_us),
                time_us(run.get("start_time")),
                end_us,
                usage.total_tokens,
                cost_number(usage.total_cost),
                _dumps(post) if post is not None else None,
                _dumps(patch) if patch is not None else None,
                now_us,
                run_span_id(run, run_id),
            )
        )
    return rows, touched, projects


def summarise_traces(
    conn: Connection, trace_ids: set[str], now_us: int, before: Contributions
) -> None:
    """Recompute the ``traces`` rows of ``trace_ids`` from their stored runs, and bring their
    requests in the services rollup from ``before`` to what the runs hold now."""
    conn.executemany(_INSERT_TRACE, trace_rows(conn, trace_ids, now_us))
    rollups.update(conn, trace_ids, before)


def trace_rows(conn: Connection, trace_ids: set[str], now_us: int) -> list[tuple[Any, ...]]:
    """The summary rows (:data:`TRACE_COLUMNS`) of ``trace_ids``, from their stored runs."""
    ordered = sorted(trace_ids)
    aggregates: dict[str, Any] = {}
    services: dict[str, list[str]] = {t: [] for t in ordered}
    roots: dict[str, Any] = {}
    for chunk, marks in _chunks(ordered):
        for row in conn.execute(
            "SELECT trace_id, COUNT(*) AS n, MIN(start_us) AS start_us,"
            " MAX(COALESCE(end_us, start_us)) AS end_us,"
            " SUM(CASE WHEN status = 'error' THEN 1 ELSE 0 END) AS errors,"
            " SUM(CASE WHEN status = 'pending' THEN 1 ELSE 0 END) AS pending,"
            " SUM(total_tokens) AS tokens,"
            f" SUM(total_cost) AS cost FROM runs WHERE trace_id IN ({marks}) GROUP BY trace_id",
            chunk,
        ):
            aggregates[row["trace_id"]] = row
        for row in conn.execute(
            "SELECT DISTINCT trace_id, service FROM runs WHERE trace_id IN"
            f" ({marks}) AND service IS NOT NULL ORDER BY trace_id, service",
            chunk,
        ):
            services[row[0]].append(row[1])
        # A trace's root is the run whose id is the trace id.
        for row in conn.execute(
            f"SELECT id, name, status, start_us, end_us, project FROM runs WHERE id IN ({marks})",
            chunk,
        ):
            roots[row["id"]] = row
    rows = []
    for trace_id in ordered:
        agg = aggregates.get(trace_id)
        if agg is None:
            continue
        root = roots.get(trace_id)
        if root is None:
            # A trace that came in over OTLP has no run whose id is the trace id: its root is
            # the run without a parent.
            root = conn.execute(
                "SELECT id, name, status, start_us, end_us, project FROM runs WHERE trace_id = ?"
                " AND parent_run_id IS NULL AND start_us IS NOT NULL ORDER BY start_us LIMIT 1",
                (trace_id,),
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
        rows.append(
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
                _dumps(services[trace_id]),
                agg["tokens"],
                agg["cost"],
                int(root is not None),
                now_us,
            )
        )
    return rows

"""Per-service figures and the service map, from runs that cross services.

A service is *entered* by a run whose parent belongs to another service (or that has no
parent): that run is one request to the service, and its name is the route (the server
middleware names a request's run ``"GET /orders/{id}"``). Per service and route: requests,
errors, request rate and p50/p95 latency (nearest rank) over a time range; the map's edges are
the (caller's service → callee's service) pairs of those runs.

The SQL is portable (window functions, ``CASE``, ``?`` placeholders), so SQLite and PostgreSQL
stores share it. Runs are reached through the traces started in the range (the ``traces``
start index), then each trace's runs and each run's parent through one covering index,
``runs_stats(trace_id, id, service, parent_run_id, name, status, start_us, end_us)``
(migration 3), so the runs' rows and their JSON are not read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .sql import Connection

__all__ = ["ServiceFilter", "service_stats"]


@dataclass
class ServiceFilter:
    """The time range of ``GET /api/services``: traces started in ``[since_us, until_us]``."""

    since_us: int | None = None
    until_us: int | None = None
    project: str | None = None


def _entries(flt: ServiceFilter) -> tuple[str, list[object]]:
    # One row per request to a service: the run, its duration, and the caller's service.
    where = ["r.service IS NOT NULL"]
    params: list[object] = []
    for value, condition in (
        (flt.since_us, "t.start_us >= ?"),
        (flt.until_us, "t.start_us <= ?"),
        (flt.project, "t.project = ?"),
    ):
        if value is not None:
            where.append(condition)
            params.append(value)
    sql = (
        "SELECT r.service AS service, r.name AS route, r.status AS status,"
        " r.end_us - r.start_us AS d, p.service AS caller"
        " FROM traces t JOIN runs r ON r.trace_id = t.trace_id"
        # The parent within the trace: a seek in the same covering index (runs_stats).
        " LEFT JOIN runs p ON p.trace_id = r.trace_id AND p.id = r.parent_run_id"
        f" WHERE {' AND '.join(where)}"
        " AND (p.service IS NULL OR p.service <> r.service)"
    )
    return sql, params


def _rank(fraction: int) -> str:
    # The nearest-rank percentile's row number, ceil(n * fraction / 100), in integer arithmetic.
    return f"(n * {fraction} + 99) / 100"


def service_stats(conn: Connection, flt: ServiceFilter) -> dict[str, Any]:
    """``{"routes": [...], "edges": [...]}`` for the runs of traces started in the range.

    A route: ``service``, ``route``, ``requests``, ``errors``, ``pending`` (not ended),
    ``p50_ms``, ``p95_ms`` (over the ended ones). An edge: ``caller``, ``callee``, ``calls``,
    ``errors``.
    """
    entries, params = _entries(flt)
    # Durations are ranked apart from the runs still open (no duration): NULLs sort first in
    # SQLite and last in PostgreSQL, so they get their own partition instead.
    sql = f"""
        WITH entry AS ({entries}),
        ranked AS (
            SELECT service, route, status, d,
                ROW_NUMBER() OVER (PARTITION BY service, route, d IS NULL ORDER BY d) AS rn,
                COUNT(d) OVER (PARTITION BY service, route) AS n
            FROM entry
        )
        SELECT service, route, COUNT(*) AS requests,
            SUM(CASE WHEN status = 'error' THEN 1 ELSE 0 END) AS errors,
            SUM(CASE WHEN d IS NULL THEN 1 ELSE 0 END) AS pending,
            MAX(CASE WHEN d IS NOT NULL AND rn = {_rank(50)} THEN d END) AS p50,
            MAX(CASE WHEN d IS NOT NULL AND rn = {_rank(95)} THEN d END) AS p95
        FROM ranked GROUP BY service, route ORDER BY service, requests DESC, route
    """
    routes = [
        {
            "service": row["service"],
            "route": row["route"],
            "requests": int(row["requests"]),
            "errors": int(row["errors"]),
            "pending": int(row["pending"]),
            "p50_ms": row["p50"] / 1000 if row["p50"] is not None else None,
            "p95_ms": row["p95"] / 1000 if row["p95"] is not None else None,
        }
        for row in conn.execute(sql, params)
    ]
    edge_sql = f"""
        WITH entry AS ({entries})
        SELECT caller, service AS callee, COUNT(*) AS calls,
            SUM(CASE WHEN status = 'error' THEN 1 ELSE 0 END) AS errors
        FROM entry WHERE caller IS NOT NULL GROUP BY caller, service ORDER BY caller, service
    """
    edges = [
        {
            "caller": row["caller"],
            "callee": row["callee"],
            "calls": int(row["calls"]),
            "errors": int(row["errors"]),
        }
        for row in conn.execute(edge_sql, params)
    ]
    return {"routes": routes, "edges": edges}

"""Per-service figures and the service map, from runs that cross services.

A service is *entered* by a run whose parent belongs to another service (or that has no
parent): that run is one request to the service, and its name is the route (the server
middleware names a request's run ``"GET /orders/{id}"``). Per service and route: requests,
errors, request rate and p50/p95 latency (nearest rank) over a time range; the map's edges are
the (caller's service → callee's service) pairs of those runs.

The SQL is portable (a join and ``?`` placeholders; the figures are summed up in Python from
one pass), so SQLite and PostgreSQL stores share it. Runs are reached through the traces
started in the range (the ``traces`` start index), then each trace's runs and each run's
parent through one covering index, ``runs_stats(trace_id, id, service, parent_run_id, name,
status, start_us, end_us)`` (migration 3), so the runs' rows and their JSON are not read.
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
    where = ["r.trace_id = t.trace_id", "r.service IS NOT NULL"]
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
        # CROSS JOIN: SQLite then keeps traces (the range, by its start index) as the outer
        # loop; left free, it would scan runs by service for the window's order instead.
        # PostgreSQL plans it as the inner join it is.
        " FROM traces t CROSS JOIN runs r"
        # The parent within the trace: a seek in the same covering index (runs_stats).
        " LEFT JOIN runs p ON p.trace_id = r.trace_id AND p.id = r.parent_run_id"
        f" WHERE {' AND '.join(where)}"
        " AND (p.service IS NULL OR p.service <> r.service)"
    )
    return sql, params


def _nearest_rank(ordered: list[int], percent: int) -> int:
    # The nearest-rank percentile of a sorted, non-empty list: the ceil(n * p / 100)-th value.
    return ordered[max(0, -(-len(ordered) * percent // 100) - 1)]


def service_stats(conn: Connection, flt: ServiceFilter) -> dict[str, Any]:
    """``{"routes": [...], "edges": [...]}`` for the runs of traces started in the range.

    A route: ``service``, ``route``, ``requests``, ``errors``, ``pending`` (not ended),
    ``p50_ms``, ``p95_ms`` (nearest rank over the ended ones). An edge: ``caller``, ``callee``,
    ``calls``, ``errors``.
    """
    sql, params = _entries(flt)
    # One pass over the requests, aggregated here: both tables from one scan, and percentiles
    # without window functions (whose sort order led SQLite's planner off the range index).
    routes: dict[tuple[str, str], tuple[list[int], list[int]]] = {}
    edges: dict[tuple[str, str], list[int]] = {}
    for row in conn.execute(sql, params):
        service, route, status, duration, caller = row[0], row[1], row[2], row[3], row[4]
        counts, durations = routes.setdefault((service, route), ([0, 0, 0], []))
        failed = status == "error"
        counts[0] += 1
        counts[1] += failed
        if duration is None:
            counts[2] += 1
        else:
            durations.append(duration)
        if caller is not None:
            edge = edges.setdefault((caller, service), [0, 0])
            edge[0] += 1
            edge[1] += failed
    out = []
    for (service, route), (counts, durations) in sorted(
        routes.items(), key=lambda item: (item[0][0], -item[1][0][0], item[0][1] or "")
    ):
        durations.sort()
        out.append(
            {
                "service": service,
                "route": route,
                "requests": counts[0],
                "errors": counts[1],
                "pending": counts[2],
                "p50_ms": _nearest_rank(durations, 50) / 1000 if durations else None,
                "p95_ms": _nearest_rank(durations, 95) / 1000 if durations else None,
            }
        )
    return {
        "routes": out,
        "edges": [
            {"caller": caller, "callee": callee, "calls": calls, "errors": errors}
            for (caller, callee), (calls, errors) in sorted(edges.items())
        ],
    }

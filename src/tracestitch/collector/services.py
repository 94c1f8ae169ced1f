"""Per-service figures and the service map, from runs that cross services.

A service is *entered* by a run whose parent belongs to another service (or that has no
parent): that run is one request to the service, and its name is the route (the server
middleware names a request's run ``"GET /orders/{id}"``). Per service and route: requests,
errors, request rate and p50/p95 latency (nearest rank) over a time range of trace starts; the
map's edges are the (caller's service → callee's service) pairs of those runs.

A range is read in three parts. Its whole hours come from the hourly rollup kept at ingest
(:mod:`.rollups`: counts exact, percentiles from a log-scale histogram, within
:data:`~.rollups.RELATIVE_ERROR` of the exact value), the whole minutes of its partial hours
from the per-minute rollup, and the partial minutes at either end from the stored runs,
through the traces' start index, binned the same way. A range within one minute is read from
the runs alone, with exact percentiles. So the cost follows the hours and minutes in the range
and the runs of its two edge minutes, not the runs in it: a week at a million runs reads a
few thousand rollup rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tracestitch.status import ERROR

from .rollups import LEVELS, NO_START, PENDING_BIN, bin_value_us, entry_rows, latency_bin
from .sql import Connection

__all__ = ["ServiceFilter", "service_stats"]


@dataclass
class ServiceFilter:
    """The time range of ``GET /api/services``: traces started in ``[since_us, until_us]``."""

    since_us: int | None = None
    until_us: int | None = None
    project: str | None = None


@dataclass
class _Route:
    requests: int = 0
    errors: int = 0
    pending: int = 0
    durations: list[int] = field(default_factory=list)  # exact, when no rollup is read
    bins: dict[int, int] = field(default_factory=dict)  # histogram bin -> requests


_Range = tuple[int | None, int | None]


def _cover(since: int | None, until: int | None, width: int) -> tuple[_Range | None, list[_Range]]:
    # The whole buckets of ``width`` in [since, until] as [first, end), or None; and the
    # [since, until] remainders at the edges they leave.
    first = None if since is None else -(-since // width) * width
    end = None if until is None else (until + 1) // width * width
    if first is not None and end is not None and first >= end:
        return None, [(since, until)]
    rest: list[_Range] = []
    if since is not None and first is not None and since < first:
        rest.append((since, first - 1))
    if until is not None and end is not None and end <= until:
        rest.append((end, until))
    return (first, end), rest


def _split(flt: ServiceFilter) -> tuple[list[tuple[str, _Range]], list[_Range]]:
    # (the (table, [first, end)) rollup reads, coarsest first; the ranges left to the runs).
    reads: list[tuple[str, _Range]] = []
    left: list[_Range] = [(flt.since_us, flt.until_us)]
    for table, width in LEVELS:
        finer: list[_Range] = []
        for since, until in left:
            whole, rest = _cover(since, until, width)
            if whole is not None:
                reads.append((table, whole))
            finer += rest
        left = finer
    return reads, left


def _nearest_rank(ordered: list[int], percent: int) -> int:
    # The nearest-rank percentile of a sorted, non-empty list: the ceil(n * p / 100)-th value.
    return ordered[max(0, -(-len(ordered) * percent // 100) - 1)]


def _from_bins(bins: dict[int, int], percent: int) -> float:
    # The same rank, counted through the histogram's bins in duration order.
    total = sum(count for latency, count in bins.items() if latency != PENDING_BIN)
    rank = max(1, -(-total * percent // 100))
    seen = 0
    for latency in sorted(b for b in bins if b != PENDING_BIN):
        seen += bins[latency]
        if seen >= rank:
            return bin_value_us(latency)
    raise AssertionError("rank beyond the histogram")  # pragma: no cover - rank <= total


def _read_rollup(
    conn: Connection,
    flt: ServiceFilter,
    table: str,
    buckets: _Range,
    routes: dict[tuple[str, str | None], _Route],
    edges: dict[tuple[str, str], list[int]],
) -> None:
    first, end = buckets
    where: list[str] = []
    params: list[object] = []
    if first is not None:
        where.append("bucket_us >= ?")
        params.append(first)
    if end is not None:
        where.append("bucket_us < ?")
        params.append(end)
    if (first is None) != (end is None):
        # A range bounded on one side leaves out traces with no start, as the runs' SQL does.
        where.append("bucket_us > ?")
        params.append(NO_START)
    if flt.project is not None:
        where.append("project = ?")
        params.append(flt.project)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    for service, route, caller, latency, requests, errors in conn.execute(
        f"SELECT service, route, caller, bin, SUM(requests), SUM(errors) FROM {table}"
        # A key whose added and subtracted rows are not compacted yet may sum to nothing.
        f"{clause} GROUP BY service, route, caller, bin HAVING SUM(requests) <> 0",
        params,
    ):
        _count(routes, edges, service, route, caller, requests, errors)
        entry = routes[(service, route or None)]
        entry.bins[latency] = entry.bins.get(latency, 0) + requests
        if latency == PENDING_BIN:
            entry.pending += requests


def _count(
    routes: dict[tuple[str, str | None], _Route],
    edges: dict[tuple[str, str], list[int]],
    service: str,
    route: str | None,
    caller: str | None,
    requests: int,
    errors: int,
) -> None:
    entry = routes.setdefault((service, route or None), _Route())
    entry.requests += requests
    entry.errors += errors
    if caller:
        edge = edges.setdefault((caller, service), [0, 0])
        edge[0] += requests
        edge[1] += errors


def service_stats(conn: Connection, flt: ServiceFilter) -> dict[str, Any]:
    """``{"routes": [...], "edges": [...]}`` for the runs of traces started in the range.

    A route: ``service``, ``route``, ``requests``, ``errors``, ``pending`` (not ended),
    ``p50_ms``, ``p95_ms`` (nearest rank over the ended ones; from the rollup's histogram,
    within :data:`~.rollups.RELATIVE_ERROR`, when the range holds a whole minute). An edge:
    ``caller``, ``callee``, ``calls``, ``errors``.
    """
    reads, partial = _split(flt)
    routes: dict[tuple[str, str | None], _Route] = {}
    edges: dict[tuple[str, str], list[int]] = {}
    for table, buckets in reads:
        _read_rollup(conn, flt, table, buckets, routes, edges)
    exact = not reads
    for since, until in partial:
        where, params = ["1 = 1"], []
        for value, condition in (
            (since, "t.start_us >= ?"),
            (until, "t.start_us <= ?"),
            (flt.project, "t.project = ?"),
        ):
            if value is not None:
                where.append(condition)
                params.append(value)
        for service, route, status, duration, caller, _, _ in entry_rows(
            conn, " AND ".join(where), params
        ):
            _count(routes, edges, service, route, caller, 1, int(status == ERROR))
            entry = routes[(service, route or None)]
            if duration is None:
                entry.pending += 1
            elif exact:
                entry.durations.append(duration)
            if not exact:
                latency = latency_bin(duration)
                entry.bins[latency] = entry.bins.get(latency, 0) + 1
    return {
        "routes": [_route_view(key, entry) for key, entry in _ordered(routes)],
        "edges": [
            {"caller": caller, "callee": callee, "calls": calls, "errors": errors}
            for (caller, callee), (calls, errors) in sorted(edges.items())
        ],
    }


def _busiest_first(item: tuple[tuple[str, str | None], _Route]) -> tuple[str, int, str]:
    return item[0][0], -item[1].requests, item[0][1] or ""


def _ordered(
    routes: dict[tuple[str, str | None], _Route],
) -> list[tuple[tuple[str, str | None], _Route]]:
    return sorted(
        routes.items(), key=lambda item: (item[0][0], -item[1].requests, item[0][1] or "")
    )


def _route_view(key: tuple[str, str | None], entry: _Route) -> dict[str, Any]:
    p50 = p95 = None
    if entry.durations:
        entry.durations.sort()
        p50, p95 = (_nearest_rank(entry.durations, p) / 1000 for p in (50, 95))
    elif entry.requests > entry.pending:
        p50, p95 = (_from_bins(entry.bins, p) / 1000 for p in (50, 95))
    return {
        "service": key[0],
        "route": key[1],
        "requests": entry.requests,
        "errors": entry.errors,
        "pending": entry.pending,
        "p50_ms": p50,
        "p95_ms": p95,
    }

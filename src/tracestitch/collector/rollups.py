"""The services view's figures rolled up at ingest, so a range of days reads a few thousand rows.

A *request* is a run that enters a service (its parent is in another service, or it has none;
see :mod:`.services`). Per hour (of its trace's start, the time the services view filters by),
project, service, route and calling service, the table ``service_rollup`` counts requests and
errors in a fixed log-scale latency histogram: bin 0 holds durations of 0 µs or less (a negative
one, from skewed clocks, reads as 0), bin ``k >= 1`` durations ``d`` with
``ceil(log(d) / log(g)) = k - 1``, where ``g = (1 + a) / (1 - a)`` and ``a`` is
:data:`RELATIVE_ERROR`; :data:`PENDING_BIN` holds the requests not ended. A percentile read from
the histogram is its bin's ``2 * g ** (k - 1) / (g + 1)``, within ``a`` (1%) of the exact
nearest-rank value (the DDSketch bound); counts are exact. ``service_rollup_minute`` holds the
same per minute, for the partial hours at a range's edges (:data:`LEVELS`).

The tables are kept exact as runs change, whatever order they arrive in: each write
transaction reads the touched traces' requests before it writes (:func:`contributions`), again
after, and adds the difference (:func:`update`). A patch that ends a request moves it out of the
pending bin; a parent arriving after its child can turn the child from a request into an
internal call; a root arriving late moves the whole trace to its own start hour and project.
Retention subtracts what it deletes (:func:`forget`); a new database, or one from before the
tables, is filled from the stored runs (:func:`rebuild`).

A difference is added as new rows marked ``fresh``, never by updating a row in place: with
upserts, collectors sharing a PostgreSQL database queued on the current minute's counters (two
collectors ingested at 0.4x of before). Reads sum a key's rows; :func:`compact` folds each
bucket that has fresh rows into one row per key, from time to time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from tracestitch.status import ERROR

from .sql import Connection

__all__ = [
    "BUCKET_US",
    "LEVELS",
    "MINUTE_US",
    "NO_START",
    "PENDING_BIN",
    "RELATIVE_ERROR",
    "Contributions",
    "bin_value_us",
    "compact",
    "contributions",
    "entry_rows",
    "forget",
    "latency_bin",
    "rebuild",
    "update",
]

#: The width of a rollup bucket: an hour of trace start times, in microseconds.
BUCKET_US = 3_600 * 1_000_000
#: The width of the finer buckets a range's partial hours are read from.
MINUTE_US = 60 * 1_000_000
#: ``(table, bucket width)`` of each level, coarsest first.
LEVELS = (("service_rollup", BUCKET_US), ("service_rollup_minute", MINUTE_US))
#: The most a percentile read from the histogram differs from the exact value, relatively.
RELATIVE_ERROR = 0.01
#: The histogram bin of a request that has not ended (no duration).
PENDING_BIN = -1
#: The bucket of a trace with no start time (only patches arrived): counted without a range.
NO_START = -(2**62)

_GAMMA = (1 + RELATIVE_ERROR) / (1 - RELATIVE_ERROR)
_LOG_GAMMA = math.log(_GAMMA)
_CHUNK = 500

#: ``(minute bucket_us, project, service, route, caller, bin) -> [requests, errors]``; route and
#: caller are ``""`` for none (they are part of the tables' primary key).
Contributions = dict[tuple[int, str, str, str, str, int], list[int]]

# One row per request: its service, route, status, duration, its caller's service, and its
# trace's start and project. CROSS JOIN keeps the traces (the range, by their start index, or
# the ids) as SQLite's outer loop; PostgreSQL plans it as the inner join it is.
_ENTRIES = (
    "SELECT r.service, r.name, r.status, r.end_us - r.start_us, p.service, t.start_us, t.project"
    " FROM traces t CROSS JOIN runs r"
    # The parent within the trace: a primary-key seek.
    " LEFT JOIN runs p ON p.trace_id = r.trace_id AND p.id = r.parent_run_id"
    " WHERE r.trace_id = t.trace_id AND r.service IS NOT NULL"
    " AND (p.service IS NULL OR p.service <> r.service)"
)
_COLUMNS = "bucket_us, project, service, route, caller, bin, requests, errors"
_INSERT = "INSERT INTO {0}(" + _COLUMNS + ", fresh) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
_KEY = "bucket_us, project, service, route, caller, bin"


def latency_bin(duration_us: int | None) -> int:
    """The histogram bin of a request's duration (:data:`PENDING_BIN` for None)."""
    if duration_us is None:
        return PENDING_BIN
    if duration_us <= 0:
        return 0
    return math.ceil(math.log(duration_us) / _LOG_GAMMA) + 1


def bin_value_us(latency: int) -> float:
    """The duration a bin stands for: within :data:`RELATIVE_ERROR` of every duration in it."""
    if latency <= 0:
        return 0.0
    return 2 * _GAMMA ** (latency - 1) / (_GAMMA + 1)


def entry_rows(conn: Connection, condition: str, params: Sequence[Any]) -> Iterator[Any]:
    """The requests of the traces ``condition`` (SQL on ``t``, the traces table) selects:
    ``(service, route, status, duration_us, caller, trace_start_us, project)`` rows."""
    yield from conn.execute(f"{_ENTRIES} AND {condition}", list(params))


def _add(out: Contributions, rows: Iterable[Any]) -> None:
    for service, route, status, duration, caller, start, project in rows:
        bucket = start // MINUTE_US * MINUTE_US if start is not None else NO_START
        key = (bucket, project, service, route or "", caller or "", latency_bin(duration))
        counts = out.get(key)
        if counts is None:
            counts = out[key] = [0, 0]
        counts[0] += 1
        counts[1] += status == ERROR


def contributions(conn: Connection, trace_ids: Iterable[str]) -> Contributions:
    """What the stored runs of ``trace_ids`` add to the rollup now."""
    ordered = sorted(trace_ids)
    out: Contributions = {}
    for i in range(0, len(ordered), _CHUNK):
        chunk = ordered[i : i + _CHUNK]
        _add(out, entry_rows(conn, f"t.trace_id IN ({','.join('?' * len(chunk))})", chunk))
    return out


def _apply(conn: Connection, delta: Contributions) -> None:
    for table, width in LEVELS:
        level: Contributions = {}
        for (bucket, project, service, route, caller, latency), (requests, errors) in delta.items():
            start = bucket // width * width if bucket != NO_START else bucket
            key = (start, project, service, route, caller, latency)
            counts = level.get(key)
            if counts is None:
                counts = level[key] = [0, 0]
            counts[0] += requests
            counts[1] += errors
        changed = [(key, counts) for key, counts in level.items() if counts != [0, 0]]
        _insert(conn, table, changed, fresh=1)


def _insert(
    conn: Connection, table: str, rows: list[tuple[tuple[Any, ...], list[int]]], fresh: int
) -> None:
    # One prepared statement for every row (psycopg pipelines them).
    conn.executemany(_INSERT.format(table), [(*key, *counts, fresh) for key, counts in rows])


def compact(conn: Connection) -> int:
    """Fold the rows of every bucket that has fresh ones into one row per key (none for a key
    that sums to nothing); returns the buckets compacted. Safe next to concurrent writers: on
    PostgreSQL one statement deletes the rows and inserts their sums, so what it sums is what it
    deleted; a row committed meanwhile stays as it is."""
    done = 0
    for table, _ in LEVELS:
        buckets = [
            row[0]
            for row in conn.execute(f"SELECT DISTINCT bucket_us FROM {table} WHERE fresh = 1")
        ]
        for i in range(0, len(buckets), _CHUNK):
            chunk = buckets[i : i + _CHUNK]
            where = f"bucket_us IN ({','.join('?' * len(chunk))})"
            if getattr(conn, "dialect", "sqlite") == "postgres":
                conn.execute(
                    f"WITH gone AS (DELETE FROM {table} WHERE {where} RETURNING {_COLUMNS})"
                    f" INSERT INTO {table}({_COLUMNS}, fresh) SELECT {_KEY}, SUM(requests),"
                    f" SUM(errors), 0 FROM gone GROUP BY {_KEY} HAVING SUM(requests) <> 0",
                    chunk,
                )
            else:  # one writer at a time: sum, delete, insert in its transaction
                sums = conn.execute(
                    f"SELECT {_KEY}, SUM(requests), SUM(errors) FROM {table} WHERE {where}"
                    f" GROUP BY {_KEY} HAVING SUM(requests) <> 0",
                    chunk,
                ).fetchall()
                conn.execute(f"DELETE FROM {table} WHERE {where}", chunk)
                _insert(conn, table, [(tuple(row[:6]), [row[6], row[7]]) for row in sums], 0)
            done += len(chunk)
    return done


def update(conn: Connection, trace_ids: Iterable[str], before: Contributions) -> None:
    """Add the difference between what ``trace_ids`` contribute now and ``before`` (read with
    :func:`contributions` in the same transaction, before its writes)."""
    delta = contributions(conn, trace_ids)
    for key, (requests, errors) in before.items():
        counts = delta.get(key)
        if counts is None:
            counts = delta[key] = [0, 0]
        counts[0] -= requests
        counts[1] -= errors
    _apply(conn, delta)


def forget(conn: Connection, trace_ids: Iterable[str]) -> None:
    """Subtract what ``trace_ids`` contribute (before retention deletes them)."""
    gone = contributions(conn, trace_ids)
    _apply(conn, {key: [-requests, -errors] for key, (requests, errors) in gone.items()})


def rebuild(conn: Connection) -> None:
    """Fill the rollup tables from every stored run (a migration's backfill)."""
    for table, _ in LEVELS:
        conn.execute(f"DELETE FROM {table}")
    out: Contributions = {}
    _add(out, entry_rows(conn, "1 = 1", ()))
    _apply(conn, out)
    compact(conn)

"""Services stats at scale: ``service_stats`` (``GET /api/services``) over a store of a million
runs, on SQLite and on PostgreSQL, against the exact scan it replaced and the trace list.

125,000 traces of 8 runs (a gateway request that calls a search service and a pricing service
through client runs, each with a child of its own, and renders), spread evenly over 7 days
and ingested through ``Store.ingest`` (which keeps the hourly rollup); the PostgreSQL store
gets the same rows by COPY and fills its rollup as the migration does (timed).
``--ingest-only`` times the SQLite ingest alone, with and without the ``runs_stats`` index
(migration 3's covering index for the scans, dropped by migration 4).
Then, for the last hour, the last day and the whole week, the median wall time of:

- ``service_stats``: the rollup's whole hours plus the runs of the partial edges;
- the exact scan (the code before the rollup: every request of the range's traces through the
  same join, summed up and sorted in Python), which the rollup must agree with;
- ``list_traces`` filtered by run type (the trace list's peer that visits the same runs).

``python bench/bench_services.py [--traces N] [--db PATH] [--postgres]`` (an existing PATH is
reused; ``--postgres`` also copies it into a throwaway database on 127.0.0.1:5432).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from tracestitch.collector import Store, TraceStore
from tracestitch.collector.ingest import validate_op
from tracestitch.collector.query import TraceFilter
from tracestitch.collector.rollups import entry_rows
from tracestitch.collector.services import ServiceFilter
from tracestitch.testing import throwaway_database

WEEK_S = 7 * 86_400
NOW = datetime(2026, 12, 1, tzinfo=timezone.utc)


def _run(
    name: str, start: datetime, ms: float, service: str, parent: dict[str, Any] | None
) -> dict[str, Any]:
    rid = str(uuid.uuid4())
    stamp = start.strftime("%Y%m%dT%H%M%S%fZ") + rid
    return {
        "id": rid,
        "trace_id": parent["trace_id"] if parent else rid,
        "parent_run_id": parent["id"] if parent else None,
        "dotted_order": f"{parent['dotted_order']}.{stamp}" if parent else stamp,
        "name": name,
        "run_type": "chain",
        "start_time": start.isoformat(),
        "end_time": (start + timedelta(milliseconds=ms)).isoformat(),
        "inputs": {},
        "outputs": {},
        "session_name": "bench",
        "extra": {"metadata": {"service": service}},
        "error": "HTTP 502" if name.endswith("{sku}") and rid[0] == "0" else None,
    }


def _trace(i: int, traces: int) -> list[dict[str, Any]]:
    start = NOW - timedelta(seconds=WEEK_S * (1 - i / traces))
    root = _run("POST /chat", start, 40 + i % 200, "gateway", None)
    runs = [root]
    for callee, route in (("search", "GET /search"), ("pricing", "GET /prices/{sku}")):
        call = _run(f"GET {callee}:8000{route}", start, 20 + i % 50, "gateway", root)
        served = _run(route, start, 15 + i % 45, callee, call)
        inner = _run("db query", start, 5 + i % 9, callee, served)
        runs += [call, served, inner]
    runs.append(_run("render", start, 3, "gateway", root))
    return runs


def build(path: Path, traces: int, *, stats_index: bool = False) -> float:
    """Ingest ``traces`` traces into a new store at ``path``; return the seconds it took."""
    store = Store(path, synchronous="NORMAL")
    if stats_index:
        # The covering index migration 3 made and 4 dropped: what it cost ingest.
        store._writer.execute(
            "CREATE INDEX runs_stats ON runs("
            "trace_id, id, service, parent_run_id, name, status, start_us, end_us)"
        )
    began = time.perf_counter()
    batch: list[Any] = []
    for i in range(traces):
        batch += [validate_op("post", run, "run") for run in _trace(i, traces)]
        if len(batch) >= 5000:
            store.ingest(batch)
            batch = []
    if batch:
        store.ingest(batch)
    took = time.perf_counter() - began
    print(f"stored {store.count_runs():,} runs in {took:.1f} s (runs_stats index: {stats_index})")
    store.close()
    return took


def _median_s(call: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        call()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def exact_scan(store: Any, flt: ServiceFilter) -> int:
    """The figures as computed before the rollup: every request of the range's traces, summed
    up and sorted in Python; returns the number of requests."""
    routes: dict[tuple[str, str], list[int]] = {}
    with store._read() as conn:
        for service, route, _, duration, _, _, _ in entry_rows(
            conn, "t.start_us >= ? AND t.start_us <= ?", (flt.since_us, flt.until_us)
        ):
            durations = routes.setdefault((service, route), [])
            if duration is not None:
                durations.append(duration)
    for durations in routes.values():
        durations.sort()
    return sum(len(d) for d in routes.values())


def to_postgres(sqlite_path: Path, url: str) -> float:
    """The SQLite store's rows into a new PostgreSQL store by COPY, then its rollup filled as
    the migration does; returns the seconds the fill took."""
    from bench_stores import copy_to_postgres

    from tracestitch.collector import rollups
    from tracestitch.collector.pg_store import PgStore

    copy_to_postgres(str(sqlite_path), url)
    store = PgStore(url, pool_size=1)
    began = time.perf_counter()
    with store._write() as conn:
        rollups.rebuild(conn)
    took = time.perf_counter() - began
    with store._write() as conn:
        conn.execute("ANALYZE service_rollup")
    store.close()
    return took


def measure(name: str, store: TraceStore, repeat: int) -> None:
    """Print the three ranges' times on ``store``."""
    # Ranges end 23 minutes before the newest trace, off the hour as a viewer's "now" is, so
    # both edges are partial hours read from the runs.
    end_us = int(NOW.timestamp() * 1e6) - 23 * 60 * 1_000_000
    print(f"{name}: {store.count_runs():,} runs; median of {repeat}, wall seconds")
    print(
        f"{'range':<8} {'service_stats':>14} {'exact scan':>11} {'ratio':>7}"
        f" {'list run_type=':>15} {'ratio':>7} {'requests':>9}"
    )
    for label, seconds in (("1 hour", 3600), ("1 day", 86_400), ("7 days", WEEK_S)):
        since = end_us - seconds * 1_000_000
        flt = ServiceFilter(since_us=since, until_us=end_us)
        stats = store.service_stats(flt)
        requests = sum(r["requests"] for r in stats["routes"])
        ours = _median_s(lambda f=flt: store.service_stats(f), repeat)
        exact = _median_s(lambda f=flt: exact_scan(store, f), repeat)
        # A list filter that looks at every run of the range's traces (and counts them all).
        scan_filter = TraceFilter(start_gte_us=since, start_lte_us=end_us, run_type="chain")
        scan = _median_s(lambda f=scan_filter: store.list_traces(f), repeat)
        print(
            f"{label:<8} {ours:>14.3f} {exact:>11.3f} {ours / exact:>6.3f}x"
            f" {scan:>15.3f} {ours / scan:>6.3f}x {requests:>9,}",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=125_000, help="traces of 8 runs")
    parser.add_argument(
        "--ingest-only", action="store_true", help="time ingest with and without the index"
    )
    parser.add_argument("--db", help="database to build or reuse (default: a temporary one)")
    parser.add_argument("--postgres", action="store_true", help="also on PostgreSQL")
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    if args.ingest_only:
        work = Path(tempfile.mkdtemp())
        took: dict[bool, list[float]] = {True: [], False: []}
        for round_ in range(2):  # interleaved: the machine's load drifts
            for with_index in (False, True):
                db = work / f"ingest-{round_}-{with_index}.db"
                took[with_index].append(build(db, args.traces, stats_index=with_index))
        best = {k: min(v) for k, v in took.items()}
        print(f"ingest with the index / without: {best[True] / best[False]:.2f}x (best of 2)")
        return 0
    path = Path(args.db) if args.db else Path(tempfile.mkdtemp()) / "services.db"
    if not path.exists():
        build(path, args.traces)
    store = Store(path)
    measure("SQLite", store, args.repeat)
    store.close()
    if args.postgres:
        from tracestitch.collector.pg_store import PgStore

        with throwaway_database(args.server, "tracestitch_bench") as url:
            fill = to_postgres(path, url)
            print(f"PostgreSQL rollup filled from the stored runs in {fill:.1f} s")
            pg = PgStore(url, pool_size=2)
            measure("PostgreSQL", pg, args.repeat)
            pg.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Store benchmark: SQLite against PostgreSQL, and one against two collectors on one PostgreSQL.

With ``--runs`` runs already stored (default 1,000,000; ``run(quick=True)``: 100,000), measures:

- ingest runs/s through ``tracestitch serve`` (``POST /runs/batch``, 100-run batches,
  pre-serialised, from 4 sender processes): one collector on SQLite, one on PostgreSQL, two on
  one PostgreSQL (the senders split between them);
- the viewer's trace list (``GET /api/traces?limit=50``, and filtered by project), p50/p95;
- one 1,000-run trace (``GET /api/traces/{id}``), p50/p95.

Targets (issue 16): two collectors on PostgreSQL ingest at least 2x one collector on SQLite;
trace-list p95 at most 100 ms at 1 million runs on both.

``python bench/bench_stores.py [--runs N] [--database postgresql://...]`` prints a table;
without ``--database`` it uses a new database on the machine's PostgreSQL (127.0.0.1:5432),
dropped afterwards. Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from tracestitch.collector import TraceStore, open_store
from tracestitch.collector.ingest import validate_op
from tracestitch.testing import CollectorProcess, throwaway_database

API_KEY = "bench-key"
RUNS_PER_TRACE = 10
PROJECTS = ("checkout", "search", "support", "billing", "ingest")
SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


def _order(at: datetime, rid: str) -> str:
    return at.strftime("%Y%m%dT%H%M%S%fZ") + rid


def make_trace(n: int, start: datetime, project: str) -> list[dict[str, Any]]:
    """A trace of ``n`` runs (a root, then chains of three below it) as LangSmith wire dicts."""
    root_id = str(uuid.uuid4())
    runs: list[dict[str, Any]] = []
    parent: dict[str, Any] | None = None
    for i in range(n):
        rid = root_id if i == 0 else str(uuid.uuid4())
        at = start + timedelta(milliseconds=i)
        if i % 3 == 1:
            parent = runs[0]
        run: dict[str, Any] = {
            "id": rid,
            "trace_id": root_id,
            "dotted_order": (parent["dotted_order"] + "." if parent else "") + _order(at, rid),
            "name": "root" if i == 0 else f"step-{i}",
            "run_type": "llm" if i % 3 == 0 and i else "chain",
            "start_time": at.isoformat(),
            "end_time": (at + timedelta(milliseconds=n + 5 - i)).isoformat(),
            "inputs": {"prompt": f"prompt {i} " + "x" * 100},
            "outputs": {
                "text": "y" * 100,
                "usage_metadata": {"input_tokens": 50, "output_tokens": 20, "total_tokens": 70},
            },
            "session_name": project,
            "extra": {"metadata": {"service": f"svc-{i % 3}"}},
        }
        if parent is not None:
            run["parent_run_id"] = parent["id"]
        runs.append(run)
        parent = run
    return runs


def populate(store: TraceStore, runs: int) -> float:
    """Store ``runs`` runs (traces of ten, started over the last 30 days); returns seconds."""
    now = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    batch: list[Any] = []
    for t in range(runs // RUNS_PER_TRACE):
        start = now - timedelta(seconds=(runs // RUNS_PER_TRACE - t) * 30 * 86_400 / runs * 10)
        for run in make_trace(RUNS_PER_TRACE, start, PROJECTS[t % len(PROJECTS)]):
            batch.append(validate_op("post", run, "run"))
        if len(batch) >= 2000:
            store.ingest(batch)
            batch = []
    if batch:
        store.ingest(batch)
    return time.perf_counter() - t0


def copy_to_postgres(sqlite_path: str, url: str) -> float:
    """The SQLite store's rows into a new PostgreSQL store, by COPY (the same million runs
    in both, without paying the ingest path twice); returns seconds."""
    import sqlite3

    import psycopg

    from tracestitch.collector.pg_store import PgStore
    from tracestitch.collector.writes import RUN_COLUMNS, TRACE_COLUMNS

    t0 = time.perf_counter()
    PgStore(url, pool_size=1).close()  # the schema and today's partitions
    day = int(time.time()) // 86_400
    source = sqlite3.connect(sqlite_path)
    with psycopg.connect(url) as conn:
        for table, columns in (("runs", RUN_COLUMNS), ("traces", TRACE_COLUMNS)):
            with conn.cursor().copy(f"COPY {table} (day, {columns}) FROM STDIN") as copy:
                for row in source.execute(f"SELECT {columns} FROM {table}"):
                    copy.write_row((day, *row))
        with conn.cursor().copy("COPY projects (id, name, created_us) FROM STDIN") as copy:
            for row in source.execute("SELECT id, name, created_us FROM projects"):
                copy.write_row(row)
        conn.execute("ANALYZE")
    source.close()
    return time.perf_counter() - t0


def _send(args: tuple[str, list[bytes]]) -> int:
    url, bodies = args
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
    failed = 0
    for body in bodies:
        conn.request(
            "POST",
            "/runs/batch",
            body,
            {"content-type": "application/json", "x-api-key": API_KEY},
        )
        response = conn.getresponse()
        response.read()
        failed += response.status != 200
    conn.close()
    return failed


def ingest_rate(urls: list[str], runs: int, senders: int = 4) -> tuple[float, int]:
    """Runs/s of ``runs`` runs in 100-run batches from ``senders`` processes spread over
    ``urls``; (runs/s, failed requests)."""
    now = datetime.now(timezone.utc)
    bodies = [
        orjson.dumps({"post": make_trace(100, now, PROJECTS[i % len(PROJECTS)])})
        for i in range(runs // 100)
    ]
    work = [(urls[i % len(urls)], bodies[i::senders]) for i in range(senders)]
    with multiprocessing.get_context("fork").Pool(senders) as pool:
        t0 = time.perf_counter()
        failed = sum(pool.map(_send, work))
        wall = time.perf_counter() - t0
    return runs / wall, failed


def _percentiles(times: list[float]) -> tuple[float, float]:
    ordered = sorted(times)
    return statistics.median(ordered), ordered[max(0, int(len(ordered) * 0.95) - 1)]


def latencies(url: str, path: str, repeats: int) -> tuple[float, float]:
    """(p50, p95) in ms of GET ``path``."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        conn.request("GET", path, headers={"x-api-key": API_KEY})
        response = conn.getresponse()
        response.read()
        times.append((time.perf_counter() - t0) * 1000)
        assert response.status == 200, response.status
    conn.close()
    return _percentiles(times)


@contextmanager
def collectors(target: str, count: int) -> Iterator[list[str]]:
    procs = [
        CollectorProcess(target, api_key=API_KEY, options=["--max-body-mb", "64"]).start()
        for _ in range(count)
    ]
    try:
        yield [p.url for p in procs]
    finally:
        for p in procs:
            p.stop()


@contextmanager
def pg_database(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    with throwaway_database(SERVER, "tracestitch_bench") as made:
        yield made


def bench_queries(target: str, big_trace: str, ingest_runs: int, repeats: int) -> dict[str, Any]:
    row: dict[str, Any] = {}
    with collectors(target, 1) as urls:
        row["list_ms"] = latencies(urls[0], "/api/traces?limit=50", repeats)
        row["list_project_ms"] = latencies(urls[0], "/api/traces?limit=50&project=search", repeats)
        row["trace_1000_ms"] = latencies(urls[0], f"/api/traces/{big_trace}", repeats)
        row["ingest_1"] = ingest_rate(urls, ingest_runs)
    return row


def run(
    quick: bool, stored: int | None = None, database: str | None = None
) -> list[dict[str, Any]]:
    """Every case; one dict per case (the figures ``make bench`` tabulates)."""
    stored = stored or (100_000 if quick else 1_000_000)
    ingest_runs = 20_000 if quick else 50_000
    repeats = 40 if quick else 100
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, pg_database(database) as url:
        path = str(Path(tmp) / "bench.db")
        store = open_store(path)
        fill_s = populate(store, stored)
        big = make_trace(1000, datetime.now(timezone.utc), "checkout")
        store.ingest([validate_op("post", run, "run") for run in big])
        total = store.count_runs()
        store.close()
        copy_s = copy_to_postgres(path, url)
        print(f"stored {total} runs: {fill_s:.0f} s through the store, {copy_s:.0f} s copied")
        sqlite = bench_queries(path, big[0]["id"], ingest_runs, repeats)
        pg = bench_queries(url, big[0]["id"], ingest_runs, repeats)
        with collectors(url, 2) as urls:
            pg["ingest_2"] = ingest_rate(urls, ingest_runs)
    base = sqlite["ingest_1"][0]
    for name, figures in (("sqlite", sqlite), ("postgres", pg)):
        for key, label in (
            ("list_ms", "trace list, newest 50"),
            ("list_project_ms", "trace list, one project"),
            ("trace_1000_ms", "one 1,000-run trace"),
        ):
            p50, p95 = figures[key]
            rows.append({"store": name, "case": label, "p50_ms": p50, "p95_ms": p95})
        for key, label in (
            ("ingest_1", "ingest, one collector"),
            ("ingest_2", "ingest, two collectors"),
        ):
            if key in figures:
                rate, failed = figures[key]
                rows.append(
                    {
                        "store": name,
                        "case": label,
                        "runs_per_s": rate,
                        "vs_sqlite_one": rate / base,
                        "failed": failed,
                    }
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1_000_000, help="runs stored before measuring")
    parser.add_argument("--database", help="a PostgreSQL database URL to use (an empty database)")
    parser.add_argument("--quick", action="store_true", help="100,000 stored runs")
    args = parser.parse_args()
    rows = run(args.quick, None if args.quick else args.runs, args.database)
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} cores")
    for row in rows:
        figures = ", ".join(
            f"{k}={v:,.1f}" if isinstance(v, float) else f"{k}={v}"
            for k, v in row.items()
            if k not in ("store", "case")
        )
        print(f"{row['store']:<9} {row['case']:<40} {figures}")


if __name__ == "__main__":
    main()

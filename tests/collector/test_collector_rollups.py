"""The services view's rollup (rollups.py) against the exact figures, on both stores.

An oracle here computes the exact figures from the runs the test sent (merged post and patch,
as the store merges them); the store answers from its hourly rollup plus the runs at the
range's partial edges. Counts must be equal, percentiles within RELATIVE_ERROR, after runs that
arrive out of order (children before parents, a late root moving its trace to another hour),
patches that end or fail runs later, retention, an import, and a migration's backfill.
"""

from __future__ import annotations

import random
import sqlite3
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from collector_helpers import BASE, make_run, wire

from tracestitch.collector import Store, TraceStore
from tracestitch.collector.ingest import validate_op
from tracestitch.collector.rollups import BUCKET_US, LEVELS, MINUTE_US, RELATIVE_ERROR
from tracestitch.collector.services import ServiceFilter
from tracestitch.collector.transfer import export_document, import_batch
from tracestitch.collector.tree import build_trace

HOUR_MS = 3_600_000
BASE_US = int(BASE.timestamp() * 1_000_000)
assert BASE_US % BUCKET_US == 0  # the test's hours are the rollup's


def _us(text: str | None) -> int | None:
    return int(datetime.fromisoformat(text).timestamp() * 1_000_000) if text else None


class Oracle:
    """The runs as the store holds them (post and patch merged), and the exact figures."""

    def __init__(self) -> None:
        self.runs: dict[str, dict[str, Any]] = {}

    def send(self, store: TraceStore, ops: list[tuple[str, dict[str, Any]]]) -> None:
        for kind, run in ops:
            merged = self.runs.setdefault(run["id"], {})
            merged.update({k: v for k, v in run.items() if v is not None})
            if kind == "post":
                merged["_posted"] = True
        store.ingest([validate_op(kind, wire(run), "run") for kind, run in ops])

    def forget_deleted(self, store: TraceStore) -> None:
        for run_id, run in list(self.runs.items()):
            if store.trace_summary(run["trace_id"]) is None:
                del self.runs[run_id]

    def _trace_start_project(self) -> dict[str, tuple[int | None, str]]:
        out = {}
        by_trace: dict[str, list[dict[str, Any]]] = {}
        for run in self.runs.values():
            by_trace.setdefault(run["trace_id"], []).append(run)
        for trace_id, runs in by_trace.items():
            root = self.runs.get(trace_id)
            if root is not None and root.get("start_time"):
                out[trace_id] = (_us(root["start_time"]), root["session_name"])
            else:
                first = min(runs, key=lambda r: _us(r.get("start_time")) or 0)
                out[trace_id] = (_us(first.get("start_time")), first["session_name"])
        return out

    def figures(self, flt: ServiceFilter) -> dict[str, Any]:
        traces = self._trace_start_project()
        routes: dict[tuple[str, str], dict[str, Any]] = {}
        edges: dict[tuple[str, str], list[int]] = {}
        for run in self.runs.values():
            service = (run.get("extra") or {}).get("metadata", {}).get("service")
            start, project = traces[run["trace_id"]]
            if service is None or not run.get("_posted"):
                continue
            if flt.since_us is not None and (start is None or start < flt.since_us):
                continue
            if flt.until_us is not None and (start is None or start > flt.until_us):
                continue
            if flt.project is not None and project != flt.project:
                continue
            parent = self.runs.get(run.get("parent_run_id") or "")
            caller = (
                (parent.get("extra") or {}).get("metadata", {}).get("service") if parent else None
            )
            if caller == service:
                continue
            route = routes.setdefault(
                (service, run["name"]), {"requests": 0, "errors": 0, "pending": 0, "d": []}
            )
            failed = int(bool(run.get("error")))
            route["requests"] += 1
            route["errors"] += failed
            end = _us(run.get("end_time"))
            if end is None:
                route["pending"] += 1
            else:
                route["d"].append(end - _us(run["start_time"]))  # type: ignore[operator]
            if caller is not None:
                edge = edges.setdefault((caller, service), [0, 0])
                edge[0] += 1
                edge[1] += failed
        return {"routes": routes, "edges": edges}


def _rank(values: list[int], percent: int) -> float:
    ordered = sorted(values)
    return ordered[max(0, -(-len(ordered) * percent // 100) - 1)] / 1000


RANGES = [
    ServiceFilter(),
    ServiceFilter(since_us=BASE_US + 17 * 60_000_000, until_us=BASE_US + 4 * BUCKET_US + 31),
    ServiceFilter(since_us=BASE_US + BUCKET_US, until_us=BASE_US + 3 * BUCKET_US - 1),
    ServiceFilter(since_us=BASE_US + 2 * BUCKET_US + 5),
    ServiceFilter(until_us=BASE_US + 2 * BUCKET_US + 5),
    ServiceFilter(since_us=BASE_US + BUCKET_US + 60_000_000, project="alpha"),
    ServiceFilter(since_us=BASE_US + 2 * BUCKET_US + 1, until_us=BASE_US + 3 * BUCKET_US - 2),
    # Partial minutes at both ends of partial hours: all three levels.
    ServiceFilter(
        since_us=BASE_US + 17 * MINUTE_US + 13_500_000,
        until_us=BASE_US + 4 * BUCKET_US + 31 * MINUTE_US + 7_000_001,
    ),
    ServiceFilter(until_us=BASE_US + 3 * BUCKET_US + 59 * MINUTE_US + 59_999_999, project="beta"),
]


def assert_matches(store: TraceStore, oracle: Oracle) -> None:
    for flt in RANGES:
        got = store.service_stats(flt)
        want = oracle.figures(flt)
        assert {(r["service"], r["route"]) for r in got["routes"]} == set(want["routes"]), flt
        for route in got["routes"]:
            exact = want["routes"][(route["service"], route["route"])]
            assert (route["requests"], route["errors"], route["pending"]) == (
                exact["requests"],
                exact["errors"],
                exact["pending"],
            ), (flt, route)
            if not exact["d"]:
                assert route["p50_ms"] is None and route["p95_ms"] is None
                continue
            for key, percent in (("p50_ms", 50), ("p95_ms", 95)):
                # Relative to the exact value, plus float noise (a duration of 0 reads as 0).
                assert route[key] == pytest.approx(
                    _rank(exact["d"], percent), rel=RELATIVE_ERROR * 1.000001, abs=1e-9
                ), (flt, route, key)
        assert {(e["caller"], e["callee"]): [e["calls"], e["errors"]] for e in got["edges"]} == (
            want["edges"]
        ), flt


def _rows(store: TraceStore) -> dict[str, int]:
    with store._read() as conn:  # type: ignore[attr-defined]
        counts = {"rows": 0, "fresh": 0, "keys": 0}
        for table, _ in LEVELS:
            rows, fresh = conn.execute(f"SELECT COUNT(*), SUM(fresh) FROM {table}").fetchone()
            keys = conn.execute(
                "SELECT COUNT(*) FROM (SELECT DISTINCT bucket_us, project, service, route,"
                f" caller, bin FROM {table}) k"
            ).fetchone()[0]
            counts["rows"] += rows
            counts["fresh"] += fresh or 0
            counts["keys"] += keys
        return counts


def _traces(
    rng: random.Random, count: int, first_ms: float = 0, span_ms: float = 5 * HOUR_MS - 2000
) -> list[list[dict[str, Any]]]:
    """Requests started over ``span_ms`` from BASE + ``first_ms`` (default: five hours):
    gateway → (client run) → search or pricing → a db call."""
    out = []
    for i in range(count):
        start = first_ms + rng.uniform(0, span_ms)
        project = "alpha" if i % 3 else "beta"
        root = make_run(
            "POST /chat" if i % 4 else "GET /health",
            start_ms=start,
            end_ms=start + rng.uniform(5, 400),
            service="gateway",
            project=project,
        )
        runs = [root]
        for callee, route in (("search", "GET /search"), ("pricing", "GET /prices/{sku}")):
            if rng.random() < 0.3:
                continue
            at = start + rng.uniform(0, 3)
            took = rng.lognormvariate(3, 1)
            call = make_run(
                f"GET {callee}:8000",
                parent=root,
                start_ms=at,
                end_ms=at + took + 1,
                service="gateway",
                project=project,
            )
            served = make_run(
                route,
                parent=call,
                start_ms=at + 0.5,
                end_ms=at + 0.5 + took,
                service=callee,
                project=project,
                error="HTTP 502" if rng.random() < 0.1 else None,
            )
            inner = make_run(
                "db query",
                parent=served,
                start_ms=at + 0.6,
                end_ms=at + 0.7,
                service=callee,
                project=project,
            )
            runs += [call, served, inner]
        out.append(runs)
    return out


def test_rollup_equals_the_exact_figures_through_disorder_patches_retention_and_import(
    store: TraceStore,
) -> None:
    rng = random.Random(17)
    oracle = Oracle()
    traces = _traces(rng, 120)
    # Posts in random order (children before parents), a quarter still open: patched later.
    posts: list[tuple[str, dict[str, Any]]] = []
    patches: list[tuple[str, dict[str, Any]]] = []
    for runs in traces:
        for run in runs:
            if rng.random() < 0.25:
                posts.append(("post", {**run, "end_time": None, "outputs": None}))
                patch = {k: run[k] for k in ("id", "trace_id", "dotted_order", "end_time")}
                if rng.random() < 0.3:
                    patch["error"] = "late failure"
                patches.append(("patch", patch))
            else:
                posts.append(("post", run))
    rng.shuffle(posts)
    for i in range(0, len(posts), 37):
        oracle.send(store, posts[i : i + 37])
    assert_matches(store, oracle)  # open runs pending, parents missing while children arrived
    rng.shuffle(patches)
    half = len(patches) // 2
    oracle.send(store, patches[:half])
    oracle.send(store, patches[half:])
    assert_matches(store, oracle)
    # Compaction folds each bucket's added and subtracted rows into one row per key.
    before = _rows(store)
    assert store.compact_rollups() > 0  # type: ignore[attr-defined]
    after = _rows(store)
    assert after["fresh"] == 0 and after["rows"] < before["rows"] and after["keys"] == after["rows"]
    assert_matches(store, oracle)

    # A trace whose children arrive first (its start: theirs, in hour 3), then its root, which
    # started in hour 2: the whole trace moves to hour 2.
    late = make_run(
        "POST /chat",
        start_ms=3 * HOUR_MS - 1,
        end_ms=3 * HOUR_MS + 50,
        service="gateway",
        project="alpha",
    )
    call = make_run(
        "GET search:8000",
        parent=late,
        start_ms=3 * HOUR_MS + 1,
        end_ms=3 * HOUR_MS + 20,
        service="gateway",
        project="alpha",
    )
    served = make_run(
        "GET /search",
        parent=call,
        start_ms=3 * HOUR_MS + 2,
        end_ms=3 * HOUR_MS + 19,
        service="search",
        project="alpha",
    )
    oracle.send(store, [("post", served)])
    assert_matches(store, oracle)  # a request with no caller yet
    oracle.send(store, [("post", call)])
    assert_matches(store, oracle)
    oracle.send(store, [("post", late)])
    assert_matches(store, oracle)
    # A run patched to another service (metadata arrives late) stops being a request.
    patch = {k: served[k] for k in ("id", "trace_id", "dotted_order")}
    oracle.send(store, [("patch", {**patch, "extra": {"metadata": {"service": "gateway"}}})])
    assert_matches(store, oracle)

    # Retention: the oldest traces beyond a run count go, and their requests with them.
    kept = traces[60:]
    exported = [
        export_document(build_trace(runs[0]["id"], store.trace_runs(runs[0]["id"]), None))
        for runs in traces[:60]
    ]
    store.max_runs = store.count_runs() // 2  # type: ignore[attr-defined]
    assert store.apply_retention() > 0
    oracle.forget_deleted(store)
    assert any(store.trace_summary(runs[0]["id"]) is None for runs in traces)
    assert any(store.trace_summary(runs[0]["id"]) is not None for runs in kept)
    assert_matches(store, oracle)
    store.max_runs = None  # type: ignore[attr-defined]

    # Import brings deleted traces back (as `tracestitch import` does, through ingest).
    for doc in exported:
        batch = import_batch(doc)
        oracle.send(store, [("post", op.data) for op in batch.ops])
    assert_matches(store, oracle)

    # Retention by age drops everything (on PostgreSQL: whole day partitions): nothing left.
    store.max_age_s = 86_400  # type: ignore[attr-defined]
    store.apply_retention(now=time.time() + 3 * 86_400)
    oracle.forget_deleted(store)
    assert store.count_runs() == 0 and oracle.runs == {}
    assert store.service_stats(ServiceFilter()) == {"routes": [], "edges": []}
    store.compact_rollups()  # type: ignore[attr-defined]
    with store._read() as conn:  # type: ignore[attr-defined]
        for table, _ in LEVELS:
            assert conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0


def test_a_database_from_before_the_rollup_is_filled_when_opened(
    store: TraceStore, tmp_path: Path
) -> None:
    oracle = Oracle()
    for runs in _traces(random.Random(3), 40):
        oracle.send(store, [("post", run) for run in runs])
    # As a version-3 database: no rollup table, the index runs_stats.
    with store._write() as conn:  # type: ignore[attr-defined]
        for table, _ in LEVELS:
            conn.execute(f"DROP TABLE {table}")
        conn.execute(
            "CREATE INDEX runs_stats ON runs (trace_id, id, service, parent_run_id, name,"
            " status, start_us, end_us)"
        )
    if isinstance(store, Store):
        store.close()
        raw = sqlite3.connect(store.path)
        raw.execute("PRAGMA user_version = 3")
        raw.commit()
        raw.close()
        reopened: TraceStore = Store(store.path)
    else:
        from tracestitch.collector.pg_store import PgStore

        with store._write() as conn:  # type: ignore[attr-defined]
            conn.execute("UPDATE tracestitch_schema SET version = 3")
        store.close()
        reopened = PgStore(store.url, pool_size=2)  # type: ignore[attr-defined]
    try:
        assert_matches(reopened, oracle)
        with reopened._read() as conn:  # type: ignore[attr-defined]
            for table, _ in LEVELS:
                assert conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] > 0
            # Gone (migration 5): the rollup does the work it did, and it cost every run.
            with pytest.raises(Exception, match="runs_stats"):
                conn.execute("DROP INDEX runs_stats")
    finally:
        reopened.close()


def test_a_range_within_one_minute_is_exact(store: TraceStore) -> None:
    oracle = Oracle()
    minute_ms = MINUTE_US // 1000
    for runs in _traces(random.Random(5), 60, first_ms=HOUR_MS + minute_ms, span_ms=minute_ms - 5):
        oracle.send(store, [("post", run) for run in runs])
    flt = ServiceFilter(
        since_us=BASE_US + BUCKET_US + MINUTE_US + 1,
        until_us=BASE_US + BUCKET_US + 2 * MINUTE_US - 1,
    )  # no whole minute: the runs alone
    want = oracle.figures(flt)["routes"]
    got = store.service_stats(flt)["routes"]
    assert got and all(
        (r["p50_ms"], r["p95_ms"])
        == (
            _rank(want[(r["service"], r["route"])]["d"], 50),
            _rank(want[(r["service"], r["route"])]["d"], 95),
        )
        for r in got
    )
    assert_matches(store, oracle)


def test_bins_hold_their_bound() -> None:
    from tracestitch.collector.rollups import PENDING_BIN, bin_value_us, latency_bin

    assert latency_bin(None) == PENDING_BIN and latency_bin(0) == 0 and latency_bin(-5) == 0
    rng = random.Random(1)
    for value in [
        1,
        2,
        3,
        999,
        1000,
        1001,
        10**9,
        *(rng.randrange(1, 10**10) for _ in range(5000)),
    ]:
        estimate = bin_value_us(latency_bin(value))
        assert abs(estimate - value) <= RELATIVE_ERROR * value * 1.000001, value

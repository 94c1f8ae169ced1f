"""Several ``tracestitch serve`` processes on one PostgreSQL database, as a team runs them
behind a load balancer: one trace's runs arriving through either collector read back as one
tree from both; concurrent senders lose nothing and store nothing twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from collector_helpers import API_KEY, make_run, wire

from tracestitch.testing import CollectorProcess


@pytest.fixture
def two_collectors(pg_url: str) -> Iterator[tuple[CollectorProcess, CollectorProcess]]:
    # The first is configured by its command line, the second only by the environment.
    env = {**os.environ, "TRACESTITCH_DATABASE_URL": pg_url}
    with (
        CollectorProcess(pg_url, api_key=API_KEY) as first,
        CollectorProcess(None, api_key=API_KEY, env=env) as second,
    ):
        yield first, second


def client(collector: CollectorProcess) -> httpx.Client:
    return httpx.Client(base_url=collector.url, headers={"x-api-key": API_KEY}, timeout=30)


def patch_of(run: dict[str, Any], output: str) -> dict[str, Any]:
    return {
        "id": run["id"],
        "trace_id": run["trace_id"],
        "dotted_order": run["dotted_order"],
        "end_time": run["end_time"],
        "outputs": {"out": output},
    }


def test_one_trace_through_two_collectors_reads_back_as_one_tree(
    two_collectors: tuple[CollectorProcess, CollectorProcess], pg_url: str
) -> None:
    a, b = two_collectors
    assert any("database: postgresql://" in line for line in b.output)
    root = make_run("checkout", service="web")
    call = make_run("charge", parent=root, service="web", start_ms=1)
    served = make_run("charge-handler", parent=call, service="payments", start_ms=2)
    runs = [wire(r) for r in (root, call, served)]
    with client(a) as to_a, client(b) as to_b:
        # Each service sends to the collector the load balancer picked for it; the root's
        # patch goes through the other collector than its post, and arrives before it.
        assert to_b.patch(f"/runs/{runs[0]['id']}", json=patch_of(runs[0], "paid")).is_success
        assert to_a.post("/runs/batch", json={"post": runs[:2]}).is_success
        assert to_b.post("/runs/batch", json={"post": runs[2:]}).is_success
        trees = [c.get(f"/api/traces/{root['id']}").json() for c in (to_a, to_b)]
    for tree in trees:
        tree.pop("now_us", None)  # each collector's clock at the time of the answer
    assert trees[0] == trees[1]
    tree = trees[0]
    assert tree["summary"]["run_count"] == 3
    assert tree["summary"]["services"] == ["payments", "web"]
    assert tree["root_run_ids"] == [root["id"]]
    ordered = [(run["name"], run["depth"], run["orphan"]) for run in tree["runs"]]
    assert ordered == [("checkout", 0, False), ("charge", 1, False), ("charge-handler", 2, False)]
    assert tree["runs"][0]["outputs"] == {"out": "paid"}
    assert tree["runs"][0]["status"] == "success"
    # The CLI reads the same database, told where by the environment alone.
    shown = subprocess.run(
        [sys.executable, "-m", "tracestitch.cli", "show", root["id"], "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "TRACESTITCH_DATABASE_URL": pg_url},
        timeout=60,
        check=True,
    )
    doc = json.loads(shown.stdout)
    assert [run["name"] for run in doc["runs"]] == ["checkout", "charge", "charge-handler"]


def test_four_senders_into_two_collectors_lose_nothing_and_store_nothing_twice(
    two_collectors: tuple[CollectorProcess, CollectorProcess], pg_url: str
) -> None:
    from tracestitch.collector.pg_store import PgStore

    traces, runs_per_trace = 12, 5
    # Two pairs of senders; the two of a pair send the same traces, one through each
    # collector, at the same time (a retrying exporter, or fan-out), then each patches its
    # runs through the other collector: every run and trace is written by both collectors.
    plans = []
    for pair in range(2):
        planned = []
        for t in range(traces):
            root = make_run(f"p{pair}-t{t}", service=f"svc{pair}", end_ms=None)
            kids = [
                make_run(f"p{pair}-t{t}-k{k}", parent=root, start_ms=k + 1, end_ms=None)
                for k in range(runs_per_trace - 1)
            ]
            planned.append([wire(r) for r in (root, *kids)])
        plans.append(planned)
    errors: list[Any] = []
    start = threading.Barrier(4)

    def sender(index: int) -> None:
        first, other = two_collectors[index % 2], two_collectors[(index + 1) % 2]
        with client(first) as to_first, client(other) as to_other:
            start.wait(30)
            for batch in plans[index // 2]:
                posted = to_first.post("/runs/batch", json={"post": batch})
                patches = [
                    {**patch_of(run, run["name"]), "end_time": run["start_time"]} for run in batch
                ]
                patched = to_other.post("/runs/batch", json={"patch": patches})
                if not (posted.is_success and patched.is_success):
                    errors.append((posted.status_code, posted.text, patched.status_code))

    threads = [threading.Thread(target=sender, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []

    store = PgStore(pg_url, pool_size=1)
    try:
        assert store.count_runs() == 2 * traces * runs_per_trace
        with store._read() as conn:
            twice = conn.execute(
                "SELECT id FROM runs GROUP BY id HAVING COUNT(*) > 1"
                " UNION ALL SELECT trace_id FROM traces GROUP BY trace_id HAVING COUNT(*) > 1"
            ).fetchall()
        assert twice == []
        for planned in plans:
            for batch in planned:
                summary = store.trace_summary(batch[0]["trace_id"])
                assert summary is not None
                assert (summary["run_count"], summary["status"]) == (runs_per_trace, "success")
                for run in store.trace_runs(batch[0]["trace_id"]):
                    assert run["outputs"] == {"out": run["name"]}
    finally:
        store.close()


def test_a_new_trace_written_through_both_collectors_at_once_keeps_the_service_map_exact(
    two_collectors: tuple[CollectorProcess, CollectorProcess], pg_url: str
) -> None:
    from tracestitch.collector.pg_store import PgStore
    from tracestitch.collector.services import ServiceFilter

    # Each trace's web half (the request and its client run) goes through one collector while
    # its payments half (the call it served, and a query below) goes through the other, at
    # the same time: whichever commits second must see the first's runs, or the served call
    # would count as a request from nowhere in the rollup, for good.
    halves: tuple[list[dict[str, Any]], list[dict[str, Any]]] = ([], [])
    for t in range(60):
        root = make_run(f"checkout {t % 3}", service="web", start_ms=t)
        call = make_run("charge", parent=root, service="web", start_ms=t + 1)
        served = make_run("POST /charge", parent=call, service="payments", start_ms=t + 2)
        query = make_run("select card", parent=served, service="payments", start_ms=t + 3)
        halves[0].extend(wire(r) for r in (root, call))
        halves[1].extend(wire(r) for r in (served, query))
    errors: list[Any] = []
    start = threading.Barrier(2)

    def sender(index: int) -> None:
        with client(two_collectors[index]) as to:
            start.wait(30)
            for i in range(0, len(halves[index]), 40):  # 20 traces' halves per request
                answer = to.post("/runs/batch", json={"post": halves[index][i : i + 40]})
                if not answer.is_success:
                    errors.append((answer.status_code, answer.text))

    threads = [threading.Thread(target=sender, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads) and errors == []
    store = PgStore(pg_url, pool_size=1)
    try:
        stats = store.service_stats(ServiceFilter())
        assert stats["edges"] == [{"caller": "web", "callee": "payments", "calls": 60, "errors": 0}]
        assert sorted((r["service"], r["requests"]) for r in stats["routes"]) == [
            ("payments", 60),
            ("web", 20),
            ("web", 20),
            ("web", 20),
        ]
    finally:
        store.close()

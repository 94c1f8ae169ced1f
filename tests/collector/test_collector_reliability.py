"""Reliability: SIGKILL mid-ingest loses nothing acknowledged; concurrent ingest while querying."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from collector_helpers import API_KEY, ServerThread, make_run, wire

from tracestitch.collector import Store, TraceStore
from tracestitch.testing import CollectorProcess

BATCH = 20


def start_collector(db: Path | str, *options: str) -> tuple[subprocess.Popen[str], str]:
    """The real ``tracestitch serve`` on an ephemeral port; (process, base URL)."""
    collector = CollectorProcess(db, api_key=API_KEY, options=options).start()
    assert collector.proc is not None
    return collector.proc, collector.url


def make_batch(i: int) -> list[dict[str, Any]]:
    root = make_run(f"batch-{i}", service="killer", inputs={"i": i, "pad": "x" * 500})
    kids = [
        make_run(f"child-{i}-{j}", parent=root, start_ms=j, end_ms=j + 1) for j in range(BATCH - 1)
    ]
    return [wire(r) for r in [root, *kids]]


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """Where the collector stores: a SQLite file, or a PostgreSQL database (its URL)."""
    if request.param == "sqlite":
        return tmp_path / "kill.db"
    url: str = request.getfixturevalue("pg_url")
    return url


def open_store(database: Path | str) -> TraceStore:
    if isinstance(database, Path):
        return Store(database)
    from tracestitch.collector.pg_store import PgStore

    return PgStore(database, pool_size=1)


def test_sigkill_keeps_every_acknowledged_run(database: Path | str) -> None:
    db = database
    proc, url = start_collector(db)
    acked: list[dict[str, Any]] = []
    enough = threading.Event()

    def sender() -> None:
        with httpx.Client(base_url=url, headers={"x-api-key": API_KEY}, timeout=5) as client:
            deadline = time.monotonic() + 15
            for i in range(2000):
                if time.monotonic() > deadline:
                    return
                batch = make_batch(i)
                try:
                    resp = client.post("/runs/batch", json={"post": batch})
                except httpx.HTTPError:
                    return  # the collector died under us: expected
                if resp.status_code == 200:
                    acked.extend(batch)
                if len(acked) >= 30 * BATCH:
                    enough.set()

    thread = threading.Thread(target=sender)
    thread.start()
    assert enough.wait(15), "sender made no progress"
    os.kill(proc.pid, signal.SIGKILL)  # while the sender keeps sending
    proc.wait(10)
    thread.join(20)
    assert not thread.is_alive()

    proc2, url2 = start_collector(db)
    try:
        store = open_store(db)
        for sent in acked:
            stored = store.get_run(sent["id"])
            assert stored is not None, sent["name"]
            for key in (
                "name",
                "trace_id",
                "parent_run_id",
                "dotted_order",
                "inputs",
                "outputs",
                "start_time",
                "end_time",
            ):
                assert stored.get(key) == sent[key], (key, sent["name"])
        store.close()
        # The restarted collector serves what survived.
        resp = httpx.get(url2 + "/api/traces", headers={"x-api-key": API_KEY})
        assert resp.json()["total"] >= len(acked) // BATCH
    finally:
        proc2.kill()
        proc2.wait(10)


def test_concurrent_ingest_while_querying(server: ServerThread, store: Store) -> None:
    writers, batches, errors = 4, 15, []
    stop = threading.Event()
    roots: list[str] = []

    def writer(w: int) -> None:
        with httpx.Client(base_url=server.url, headers={"x-api-key": API_KEY}) as client:
            for b in range(batches):
                root = make_run(f"w{w}-b{b}", service=f"svc{w}", end_ms=None)
                kids = [make_run(f"k{k}", parent=root, start_ms=k) for k in range(5)]
                roots.append(root["id"])
                ops = {"post": [wire(r) for r in [root, *kids]]}
                r1 = client.post("/runs/batch", json=ops)
                r2 = client.patch(
                    f"/runs/{root['id']}",
                    json={
                        "id": root["id"],
                        "trace_id": root["id"],
                        "end_time": "2025-03-01T12:00:01+00:00",
                        "outputs": {"ok": True},
                    },
                )
                if r1.status_code != 200 or r2.status_code != 200:
                    errors.append((r1.status_code, r2.status_code))

    def reader() -> None:
        with httpx.Client(base_url=server.url, headers={"x-api-key": API_KEY}) as client:
            while not stop.is_set():
                page = client.get("/api/traces", params={"limit": 20})
                if page.status_code != 200:
                    errors.append(("list", page.status_code))
                    continue
                for t in page.json()["traces"][:3]:
                    got = client.get(f"/api/traces/{t['trace_id']}")
                    if got.status_code != 200:
                        errors.append(("trace", got.status_code))

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    readers = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads + readers:
        t.start()
    for t in threads:
        t.join(60)
    stop.set()
    for t in readers:
        t.join(10)
    assert errors == []
    assert store.count_runs() == writers * batches * 6
    for root_id in roots:
        summary = store.trace_summary(root_id)
        assert summary is not None
        assert summary["run_count"] == 6
        assert summary["status"] == "success"

"""Store-level behaviour: retention and the run service rule."""

from __future__ import annotations

import time
from pathlib import Path

from collector_helpers import make_run, wire

from tracestitch.collector import Store
from tracestitch.collector.ingest import validate_op
from tracestitch.collector.store import run_service


def post(store: Store, *runs: dict[str, object]) -> None:
    store.ingest([validate_op("post", wire(r), "run") for r in runs])


def test_retention_max_runs_drops_oldest_whole_traces(tmp_path: Path) -> None:
    store = Store(tmp_path / "r.db", max_runs=5)
    for i in range(4):
        root = make_run(f"t{i}", start_ms=i * 1000)
        post(store, root, make_run(f"t{i}-child", parent=root, start_ms=i * 1000 + 1))
    assert store.count_runs() == 8
    deleted = store.apply_retention()
    assert deleted == 4  # two oldest traces, whole
    from tracestitch.collector.query import TraceFilter

    names = [t["name"] for t in store.list_traces(TraceFilter())["traces"]]
    assert names == ["t3", "t2"]
    store.close()


def test_retention_max_age(tmp_path: Path) -> None:
    store = Store(tmp_path / "a.db", max_age_s=60)
    post(store, make_run("old"))
    assert store.apply_retention(now=time.time() + 30) == 0
    assert store.apply_retention(now=time.time() + 120) == 1
    assert store.count_runs() == 0
    store.close()


def test_run_service_rule() -> None:
    assert run_service({"extra": {"metadata": {"service": "api"}}, "session_name": "p"}) == "api"
    assert run_service({"extra": {"metadata": {"service": 3}}, "session_name": "p"}) == "p"
    assert run_service({"extra": None}) is None

"""Store-level behaviour: retention and the run service rule."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from collector_helpers import make_run, wire

from tracestitch.collector import Store, TraceStore
from tracestitch.collector.ingest import validate_op
from tracestitch.collector.query import TraceFilter
from tracestitch.collector.store import run_service

MakeStore = Callable[..., TraceStore]


@pytest.fixture(params=["sqlite", "postgres"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeStore]:
    """Opens stores of one backend with the options given (each on the same database)."""
    opened: list[TraceStore] = []
    target: Any = tmp_path / "s.db"
    if request.param == "postgres":
        target = request.getfixturevalue("pg_url")

    def make(**options: Any) -> TraceStore:
        if request.param == "sqlite":
            store: TraceStore = Store(target, **options)
        else:
            from tracestitch.collector.pg_store import PgStore

            store = PgStore(target, pool_size=2, **options)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def post(store: TraceStore, *runs: dict[str, object]) -> None:
    store.ingest([validate_op("post", wire(r), "run") for r in runs])


def test_retention_max_runs_drops_oldest_whole_traces(make_store: MakeStore) -> None:
    store = make_store(max_runs=5)
    for i in range(4):
        root = make_run(f"t{i}", start_ms=i * 1000)
        post(store, root, make_run(f"t{i}-child", parent=root, start_ms=i * 1000 + 1))
    assert store.count_runs() == 8
    deleted = store.apply_retention()
    assert deleted == 4  # two oldest traces, whole
    names = [t["name"] for t in store.list_traces(TraceFilter())["traces"]]
    assert names == ["t3", "t2"]


def test_retention_max_age(make_store: MakeStore) -> None:
    store = make_store(max_age_s=60)
    post(store, make_run("old"))
    assert store.apply_retention(now=time.time() + 30) == 0
    assert store.apply_retention(now=time.time() + 120) == 1
    assert store.count_runs() == 0


def test_postgres_retention_drops_whole_day_partitions(pg_url: str) -> None:
    from tracestitch.collector.pg_store import PgStore

    store = PgStore(pg_url, max_age_s=86_400, pool_size=2)
    try:
        root = make_run("kept-whole")
        post(store, root, make_run("child", parent=root))
        with store._read() as conn:
            before = conn.execute("SELECT COUNT(*) FROM pg_inherits").fetchone()[0]
        # Three days on, the day these runs arrived is past the one-day limit: its partitions
        # go whole (DROP TABLE), with the trace summary, and no DELETE of rows is needed.
        assert store.apply_retention(now=time.time() + 3 * 86_400) == 2
        with store._read() as conn:
            after = conn.execute("SELECT COUNT(*) FROM pg_inherits").fetchone()[0]
        assert after < before
        assert store.count_runs() == 0
        assert store.list_traces(TraceFilter())["total"] == 0
    finally:
        store.close()


def test_postgres_schema_is_versioned_and_reopens(pg_url: str) -> None:
    import psycopg

    from tracestitch.collector.pg_schema import SCHEMA_VERSION, SchemaTooNew
    from tracestitch.collector.pg_store import PgStore

    first = PgStore(pg_url, pool_size=1)
    post(first, make_run("keep"))
    # A second collector on the same database finds the schema migrated and the run there.
    second = PgStore(pg_url, pool_size=1)
    assert second.count_runs() == 1
    first.close()
    second.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        version = conn.execute("SELECT version FROM tracestitch_schema").fetchone()
        assert version == (SCHEMA_VERSION,)
        conn.execute("UPDATE tracestitch_schema SET version = 99")
    with pytest.raises(SchemaTooNew, match="newer"):
        PgStore(pg_url, pool_size=1)


def test_run_service_rule() -> None:
    assert run_service({"extra": {"metadata": {"service": "api"}}, "session_name": "p"}) == "api"
    # No service named: none, not the project (a plain @traceable or LangSmith SDK run).
    assert run_service({"extra": {"metadata": {"service": 3}}, "session_name": "p"}) is None
    assert run_service({"extra": {"metadata": {}}, "session_name": "p"}) is None
    assert run_service({"extra": None}) is None


def test_postgres_store_without_psycopg_names_the_extra() -> None:
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['psycopg'] = None\n"
        "try:\n"
        "    import tracestitch.collector.pg_store\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'tracestitch[postgres]'" in out.stdout

"""Fixtures for the collector tests: a real uvicorn server on 127.0.0.1 with an ephemeral port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from collector_helpers import API_KEY, ServerThread
from pg_helpers import new_schema, session_database

from tracestitch.collector import Store, TraceStore, create_app


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A PostgreSQL database for this test session (see pg_helpers)."""
    with session_database() as url:
        yield url


@pytest.fixture
def pg_url(request: pytest.FixtureRequest) -> str:
    """The URL of an empty schema of the session's PostgreSQL database."""
    return new_schema(request.getfixturevalue("pg_database"))


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TraceStore]:
    """Each store test runs against both backends."""
    if request.param == "sqlite":
        s: TraceStore = Store(tmp_path / "traces.db")
    else:
        from tracestitch.collector.pg_store import PgStore

        s = PgStore(request.getfixturevalue("pg_url"), pool_size=4)
    yield s
    s.close()


@pytest.fixture
def server(store: TraceStore) -> Iterator[ServerThread]:
    srv = ServerThread(create_app(store, api_key=API_KEY, max_body_bytes=256 * 1024)).start()
    yield srv
    srv.stop()


@pytest.fixture
def open_server(store: TraceStore) -> Iterator[ServerThread]:
    """A collector without an API key (loopback development mode)."""
    srv = ServerThread(create_app(store)).start()
    yield srv
    srv.stop()

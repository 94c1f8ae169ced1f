"""Fixtures for the collector tests: a real uvicorn server on 127.0.0.1 with an ephemeral port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from collector_helpers import API_KEY, ServerThread

from tracestitch.collector import Store, create_app


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "traces.db")
    yield s
    s.close()


@pytest.fixture
def server(store: Store) -> Iterator[ServerThread]:
    srv = ServerThread(create_app(store, api_key=API_KEY, max_body_bytes=256 * 1024)).start()
    yield srv
    srv.stop()


@pytest.fixture
def open_server(store: Store) -> Iterator[ServerThread]:
    """A collector without an API key (loopback development mode)."""
    srv = ServerThread(create_app(store)).start()
    yield srv
    srv.stop()

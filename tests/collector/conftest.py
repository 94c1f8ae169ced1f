"""Fixtures for the collector tests: a real uvicorn server on 127.0.0.1 with an ephemeral port."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from tracestitch.collector import Store, create_app

API_KEY = "test-key-123"


class ServerThread:
    """uvicorn.Server running in a thread; ``url`` is valid once :meth:`start` returns."""

    def __init__(self, app: Any) -> None:
        self.app = app
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")  # type: ignore[arg-type]
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = ""

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        # Waiting on uvicorn's own `started` flag, not guessing a delay.
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.005)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


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

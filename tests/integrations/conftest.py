"""Fixtures of the integration tests: the real collector, a Redis broker, a downstream service."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from integration_helpers import Collector, downstream_service, redis_server


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    c = Collector(tmp_path_factory.mktemp("collector") / "collector.db").start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


@pytest.fixture(scope="module")
def downstream(collector: Collector, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A traced HTTP service on 127.0.0.1 (``GET /items/{n}``); its base URL."""
    with downstream_service(collector.url, tmp_path_factory.mktemp("downstream")) as url:
        yield url


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path

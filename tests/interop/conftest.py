"""Fixtures for the interop tests: the real collector, the pinned JS SDK under node."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from interop_helpers import Collector
from node_peer import install_js_sdk, missing_node


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Collector]:
    c = Collector(tmp_path / "collector.db").start()
    yield c
    c.stop()


@pytest.fixture(scope="session")
def js_sdk() -> Path:
    """``node_modules`` with the pinned LangSmith JS SDK. Without node: a skip on a laptop,
    a failure in CI, where the JS peer is part of the check."""
    problem = missing_node()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"CI must test the LangSmith JS SDK, but {problem}")
        pytest.skip(problem)
    return install_js_sdk()

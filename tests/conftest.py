from __future__ import annotations

from collections.abc import Iterator

import pytest

from tracestitch import exporter as exporter_mod
from tracestitch import open_runs
from tracestitch._guard import set_strict
from tracestitch.propagation import reset_stats


@pytest.fixture(autouse=True)
def _strict_and_isolated() -> Iterator[None]:
    """Internal errors raise in every test (a bug cannot hide behind the never-break rule);
    a test that checks the swallowing path turns it off itself. The process-wide exporter,
    header counters and watched open runs are reset around each test."""
    previous = set_strict(True)
    saved = exporter_mod.get_exporter()
    reset_stats()
    open_runs.clear()  # a run an earlier test left open must not be swept into this one
    try:
        yield
    finally:
        set_strict(previous)
        exporter_mod.set_exporter(saved)

"""Testing helpers, and the pytest plugin (registered through the ``pytest11`` entry point).

``capture_runs()`` is to tracestitch what ``structlog.testing.capture_logs`` is to structlog::

    from tracestitch.testing import capture_runs

    def test_checkout_is_traced(client):
        with capture_runs() as runs:
            client.post("/checkout")
        assert runs.one("POST /checkout").status == "success"

The ``captured_runs`` fixture does the same for a whole test and also makes tracestitch's
internal errors raise instead of being swallowed, so a bug cannot hide behind the
never-break-the-app rule.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from tracestitch._guard import set_strict
from tracestitch.export.memory import RunCollector

__all__ = ["capture_runs", "captured_runs", "strict_tracing"]


@contextmanager
def capture_runs(example_id: uuid.UUID | str | None = None) -> Iterator[RunCollector]:
    """Collect every run that finishes in the process inside the block."""
    with RunCollector(example_id=example_id) as collector:
        yield collector


@contextmanager
def strict_tracing() -> Iterator[None]:
    """Make tracestitch's internal errors raise inside the block."""
    previous = set_strict(True)
    try:
        yield
    finally:
        set_strict(previous)


try:  # the fixtures need pytest; capture_runs() does not
    import pytest
except ImportError:  # pragma: no cover - pytest is installed wherever the plugin is loaded
    pass
else:

    @pytest.fixture
    def captured_runs() -> Iterator[RunCollector]:
        """The runs finished during the test; tracestitch's internal errors raise."""
        with strict_tracing(), capture_runs() as collector:
            yield collector

    @pytest.fixture
    def tracestitch_strict() -> Iterator[None]:
        """tracestitch's internal errors raise during the test."""
        with strict_tracing():
            yield

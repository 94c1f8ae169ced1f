"""Waiting for runs that end on another thread: a server (or a streaming client) may end its run
just after the caller saw the response, so tests wait on the runs, never on a sleep."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tracestitch.export.memory import RunCollector
from tracestitch.exporter import add_listener, remove_listener
from tracestitch.testing import capture_runs


@contextmanager
def runs_until(count: int) -> Iterator[tuple[RunCollector, threading.Event]]:
    """Capture runs; the event is set once ``count`` runs have ended."""
    done = threading.Event()
    seen: set[uuid.UUID] = set()
    lock = threading.Lock()

    def on_run(run: Any) -> None:
        with lock:
            if run.end_time_us is not None:
                seen.add(run.id)
            if len(seen) >= count:
                done.set()

    with capture_runs() as runs:
        add_listener(on_run)
        try:
            yield runs, done
        finally:
            remove_listener(on_run)

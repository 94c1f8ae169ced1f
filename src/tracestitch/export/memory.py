"""``RunCollector``: every finished run, kept in a list, for tests and evaluation.

Usable two ways. As an exporter (``RunTree(..., exporter=collector)``, or installed with
``tracestitch.exporter.set_exporter``) it keeps the runs handed to it. As a context manager it
listens to the whole process and keeps every run that finishes while it is active, whatever
exporter the run has, from every thread and task: what an in-process multi-service test needs.

An explicit capture sees the runs whatever the environment says: while one is active, tracing
that is switched off (``TRACESTITCH_TRACING=false``, ``LANGSMITH_TRACING=false``,
``configure(enabled=False)``) runs in ``"local"`` mode, so runs are made and collected but
never exported. ``tracing_context(enabled=False)`` inside a capture still turns tracing off.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING

from tracestitch.context import capture_started, capture_stopped
from tracestitch.exporter import Op, add_listener, remove_listener

if TYPE_CHECKING:
    from tracestitch.run_tree import RunTree
    from tracestitch.schemas import Run

__all__ = ["RunCollector"]


class RunCollector:
    """Collects finished runs as :class:`tracestitch.schemas.Run`, each stamped with
    ``reference_example_id`` when an ``example_id`` is given::

        with RunCollector(example_id=example.id) as collector:
            app.invoke(example.inputs)
        assert collector.traced_runs[0].reference_example_id == example.id

    A run handed over more than once (posted after it ended, then patched) is kept once, in
    its latest state.
    """

    name = "run-collector"

    def __init__(self, example_id: uuid.UUID | str | None = None) -> None:
        self.example_id = uuid.UUID(example_id) if isinstance(example_id, str) else example_id
        self.traced_runs: list[Run] = []
        self._index: dict[uuid.UUID, int] = {}
        self._lock = threading.Lock()

    # -- the Exporter protocol --------------------------------------------------------------
    def submit(self, op: Op, run: RunTree) -> None:
        if run.end_time_us is not None:
            self._persist_run(run)

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def shutdown(self, timeout: float | None = None) -> bool:
        return True

    # -- collecting -------------------------------------------------------------------------
    def _persist_run(self, run: RunTree) -> None:
        record = run.to_run()
        if self.example_id is not None:
            record.reference_example_id = self.example_id
        with self._lock:
            index = self._index.get(record.id)
            if index is None:
                self._index[record.id] = len(self.traced_runs)
                self.traced_runs.append(record)
            else:
                self.traced_runs[index] = record

    def __enter__(self) -> RunCollector:
        add_listener(self._persist_run)
        capture_started()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        remove_listener(self._persist_run)
        capture_stopped()

    # -- reading ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.traced_runs)

    def __iter__(self) -> Iterator[Run]:
        return iter(list(self.traced_runs))

    def __getitem__(self, index: int) -> Run:
        return self.traced_runs[index]

    def clear(self) -> None:
        with self._lock:
            self.traced_runs.clear()
            self._index.clear()

    def named(self, name: str) -> list[Run]:
        """Runs called ``name``, in the order they finished."""
        return [r for r in self.traced_runs if r.name == name]

    def one(self, name: str) -> Run:
        """The single run called ``name`` (an AssertionError names what was there instead)."""
        found = self.named(name)
        if len(found) != 1:
            names = sorted({r.name for r in self.traced_runs})
            raise AssertionError(f"expected one run named {name!r}, found {len(found)}: {names}")
        return found[0]

    @property
    def roots(self) -> list[Run]:
        return [r for r in self.traced_runs if r.parent_run_id is None]

    def trace(self, trace_id: uuid.UUID) -> list[Run]:
        """The runs of one trace in causal (dotted) order."""
        return sorted((r for r in self.traced_runs if r.trace_id == trace_id), key=_order)

    def children(self, run: Run | uuid.UUID) -> list[Run]:
        parent_id = run if isinstance(run, uuid.UUID) else run.id
        return sorted((r for r in self.traced_runs if r.parent_run_id == parent_id), key=_order)


def _order(run: Run) -> str:
    return run.dotted_order

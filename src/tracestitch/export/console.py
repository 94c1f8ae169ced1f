"""``ConsoleSink``: prints each completed trace as a tree, for development.

A trace is printed when its local root ends (a run whose parent is not in this process: the
trace's root, or a service's server run under a remote caller). Runs are held only until then,
at most ``max_pending`` runs; beyond that the oldest are forgotten.

Example::

    tracestitch.set_exporter(BatchExporter(ConsoleSink(), flush_interval=0.05))

prints::

    trace 0190f2d4-...  project=default
    GET /checkout  chain  120.3 ms  success
    ├── POST /orders  chain  80.1 ms  success
    │   └── summarise  llm  50.0 ms  error  ValueError: boom
    └── render  chain  2.0 ms  success

Each run's status is one of the words the collector, its viewer and the CLI use, and an error
is summed up by the same line (:mod:`tracestitch.status`).
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, TextIO

from tracestitch import ids
from tracestitch.export.wire import WireOp
from tracestitch.status import error_summary, status_of

__all__ = ["ConsoleSink"]


def _ms(run: dict[str, Any]) -> str:
    try:
        start = ids.to_micros(run["start_time"])
        end = ids.to_micros(run["end_time"])
    except (KeyError, TypeError, ValueError):
        return "?"
    return f"{(end - start) / 1000:.1f} ms"


class ConsoleSink:
    """Prints each finished trace as a tree to ``stream`` (stderr by default); runs of a trace
    are held until its root ends, at most ``max_pending`` of them."""

    def __init__(self, stream: TextIO | None = None, *, max_pending: int = 10_000) -> None:
        self.stream = stream
        self.max_pending = max_pending
        self._runs: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return "ConsoleSink()"

    def send(self, ops: Sequence[WireOp]) -> None:
        roots: list[str] = []
        with self._lock:
            for op in ops:
                run = op.to_dict()
                earlier = self._runs.get(op.run_id)
                if earlier is not None:
                    run = {**earlier, **run}
                self._runs[op.run_id] = run
                if len(self._runs) > self.max_pending:
                    self._runs.popitem(last=False)
            for run_id, run in self._runs.items():
                parent = run.get("parent_run_id")
                if run.get("end_time") and (parent is None or parent not in self._runs):
                    roots.append(run_id)
            text = "".join(self._render(root) for root in roots if root in self._runs)
        if text:
            stream = self.stream or sys.stderr
            stream.write(text)
            stream.flush()

    def _render(self, root_id: str) -> str:
        children: dict[str, list[dict[str, Any]]] = {}
        for run in self._runs.values():
            parent = run.get("parent_run_id")
            if parent:
                children.setdefault(str(parent), []).append(run)
        root = self._runs[root_id]
        lines = [f"trace {root.get('trace_id')}  project={root.get('session_name')}"]

        def describe(run: dict[str, Any]) -> str:
            status = status_of(run.get("error"), bool(run.get("end_time")))
            text = f"{run.get('name')}  {run.get('run_type')}  {_ms(run)}  {status}"
            if run.get("error"):
                text += "  " + error_summary(run["error"])[:120]
            return text

        def walk(run: dict[str, Any], prefix: str) -> None:
            kids = sorted(children.get(str(run["id"]), []), key=lambda r: r.get("dotted_order", ""))
            for i, kid in enumerate(kids):
                last = i == len(kids) - 1
                lines.append(prefix + ("└── " if last else "├── ") + describe(kid))
                walk(kid, prefix + ("    " if last else "│   "))

        lines.append(describe(root))
        walk(root, "")
        # Forget the printed subtree.
        stack = [root_id]
        while stack:
            current = stack.pop()
            self._runs.pop(current, None)
            stack.extend(str(k["id"]) for k in children.get(current, []))
        return "\n".join(lines) + "\n"

    def close(self) -> None:
        return None

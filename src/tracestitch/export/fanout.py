"""``FanoutExporter``: one exporter slot feeding several exporters (e.g. LangSmith and OTLP)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tracestitch.exporter import Exporter, Op
    from tracestitch.run_tree import RunTree

__all__ = ["FanoutExporter"]


class FanoutExporter:
    """Hands every run to several exporters, each with its own queue, retries and spool, so a
    slow destination cannot hold back another."""

    def __init__(self, exporters: Sequence[Exporter]) -> None:
        self.exporters = list(exporters)

    def __repr__(self) -> str:
        return f"FanoutExporter({self.exporters!r})"

    def submit(self, op: Op, run: RunTree) -> None:
        for exporter in self.exporters:
            exporter.submit(op, run)

    def start(self) -> FanoutExporter:
        for exporter in self.exporters:
            start = getattr(exporter, "start", None)
            if callable(start):
                start()
        return self

    def flush(self, timeout: float | None = None) -> bool:
        # A list, not a generator: every exporter is flushed even after one fails.
        return all([e.flush(timeout) for e in self.exporters])

    def shutdown(self, timeout: float | None = None) -> bool:
        return all([e.shutdown(timeout) for e in self.exporters])

    def stats(self) -> list[dict[str, Any]]:
        return [s() for e in self.exporters if callable(s := getattr(e, "stats", None))]

"""``DeferredExporter``: stands in for an exporter while it is built on a thread.

The exporter an environment describes is built on first use, which is some request's path.
Building it means importing the export machinery and the sinks (tens of milliseconds), so the
factory :func:`tracestitch.export.config.install_from_env` registers returns one of these
instead: it starts a thread that builds the real exporter, holds the runs handed to it
meanwhile (bounded, counted when over), then passes them on in order and forwards everything
after. Where the process-wide slot still holds the stand-in, the real exporter replaces it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tracestitch._guard import report
from tracestitch.exporter import Exporter, NoopExporter

if TYPE_CHECKING:
    from tracestitch.exporter import Op
    from tracestitch.run_tree import RunTree

__all__ = ["DeferredExporter"]

#: Runs held while the real exporter is being built (a few ms; a burst beyond is dropped).
MAX_HELD = 10_000


class DeferredExporter:
    """See the module docstring. ``on_ready`` gets the real exporter once it is built."""

    def __init__(
        self, build: Callable[[], Exporter], on_ready: Callable[[Exporter], None] | None = None
    ) -> None:
        self._build = build
        self._on_ready = on_ready
        self._lock = threading.Lock()
        self._held: deque[tuple[Op, RunTree]] = deque()
        self._real: Exporter | None = None
        self._ready = threading.Event()
        self.dropped = 0
        threading.Thread(
            target=self._construct, name="tracestitch-export-init", daemon=True
        ).start()

    def __repr__(self) -> str:
        return f"DeferredExporter({self._real!r})"

    @property
    def exporter(self) -> Exporter | None:
        """The real exporter, once built."""
        return self._real

    def wait(self, timeout: float | None = None) -> Exporter | None:
        self._ready.wait(timeout)
        return self._real

    def _construct(self) -> None:
        # Let the request that started us run on first: building is GIL-bound work (imports)
        # that would otherwise hold it for a whole switch interval (5 ms) right away.
        time.sleep(0.001)
        try:
            real = self._build()
        except Exception as exc:
            report("export.build", exc)
            real = NoopExporter()
        with self._lock:
            # Pass the held runs on before anything newer, under the lock submit takes.
            while self._held:
                real.submit(*self._held.popleft())
            self._real = real
        self._ready.set()
        if self._on_ready is not None:
            self._on_ready(real)

    def submit(self, op: Op, run: RunTree) -> None:
        real = self._real
        if real is None:
            with self._lock:
                real = self._real
                if real is None:
                    if len(self._held) < MAX_HELD:
                        self._held.append((op, run))
                    else:
                        self.dropped += 1
                    return
        real.submit(op, run)

    def flush(self, timeout: float | None = None) -> bool:
        real = self.wait(timeout)
        return real.flush(timeout) if real is not None else False

    def shutdown(self, timeout: float | None = None) -> bool:
        real = self.wait(timeout)
        return real.shutdown(timeout) if real is not None else False

    def stats(self) -> Any:
        stats = getattr(self._real, "stats", None)
        return stats() if callable(stats) else {"held": len(self._held), "dropped": self.dropped}

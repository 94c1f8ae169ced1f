"""``DeferredExporter``: stands in for an exporter while it is built on a thread.

The exporter an environment describes is built on first use, which is some request's path.
Building it means importing the export machinery and the sinks (~50-150 ms), so the factory
:func:`tracestitch.export.config.install_from_env` registers returns one of these instead: it
starts a thread that builds the real exporter, holds the runs handed to it meanwhile, then
passes them on in order and forwards everything after. Where the process-wide slot still holds
the stand-in, the real exporter takes its place.

Nothing handed to it is lost:

- **A burst while building.** At most :data:`MAX_HELD` runs are held; a caller that finds the
  buffer full waits for the build to finish (bounded by ``build_wait``) instead of dropping its
  run, which paces a tight loop the way a full export queue does.
- **An exit while building.** The stand-in is shut down at exit like any exporter
  (:func:`tracestitch.exporter.shutdown_at_exit`): it waits for the build within the shutdown
  timeout, then shuts the real exporter down with what time is left, so a script that makes
  its runs and exits at once still delivers them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tracestitch.exporter import Exporter, NoopExporter, replace_exporter, shutdown_at_exit
from tracestitch.instrument import report

if TYPE_CHECKING:
    from tracestitch.exporter import Op
    from tracestitch.run_tree import RunTree

__all__ = ["MAX_HELD", "DeferredExporter"]

logger = logging.getLogger("tracestitch.export")

#: Runs held while the real exporter is being built; a caller finding it full waits.
MAX_HELD = 10_000


class DeferredExporter:
    """See the module docstring. Call :meth:`start` to begin building (the factory does)."""

    def __init__(
        self,
        build: Callable[[], Exporter],
        *,
        shutdown_timeout: float = 2.0,
        shutdown_max: float = 30.0,
        build_wait: float = 10.0,
    ) -> None:
        self._build = build
        self.shutdown_timeout = shutdown_timeout
        self.shutdown_max = shutdown_max
        self.build_wait = build_wait
        self._lock = threading.Lock()
        self._held: deque[tuple[Op, RunTree]] = deque()
        self._real: Exporter | None = None
        self._ready = threading.Event()
        self._started = False
        self.dropped = 0

    def __repr__(self) -> str:
        return f"DeferredExporter({self._real!r})"

    def start(self) -> DeferredExporter:
        """Start building on a thread (once)."""
        with self._lock:
            if self._started:
                return self
            self._started = True
        shutdown_at_exit(self)
        threading.Thread(
            target=self._construct, name="tracestitch-export-init", daemon=True
        ).start()
        return self

    @property
    def exporter(self) -> Exporter | None:
        """The real exporter, once built."""
        return self._real

    def wait(self, timeout: float | None = None) -> Exporter | None:
        """The real exporter once built, or ``None`` if that takes longer than ``timeout``."""
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
        # Into the slot before waiters wake: whoever waited for the build finds it there.
        replace_exporter(self, real)
        self._ready.set()

    def submit(self, op: Op, run: RunTree) -> bool | None:
        real = self._real
        if real is None:
            with self._lock:
                real = self._real
                if real is None and len(self._held) < MAX_HELD:
                    self._held.append((op, run))
                    return True
            if real is None:
                # A burst beyond the buffer while building: wait for the exporter rather
                # than drop the run (rare: the build takes a fraction of a second).
                real = self.wait(self.build_wait)
                if real is None:
                    with self._lock:
                        self.dropped += 1
                    logger.warning("tracestitch: exporter not built in time; a run was dropped")
                    return False
        return real.submit(op, run)

    def flush(self, timeout: float | None = None) -> bool:
        timeout = self.shutdown_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        real = self.wait(timeout)
        if real is None:
            return not self._held
        return real.flush(max(0.0, deadline - time.monotonic()))

    def shutdown(self, timeout: float | None = None) -> bool:
        given = timeout
        # At exit, the build (local work: imports, threads) may take up to build_wait, as for
        # a burst: on a loaded machine it can outlast shutdown_timeout, and every held run
        # would be lost for it.
        timeout = max(self.shutdown_timeout, self.build_wait) if timeout is None else timeout
        deadline = time.monotonic() + timeout
        real = self.wait(timeout) if self._started else None
        if real is None:
            with self._lock:
                lost = len(self._held)
                self._held.clear()
                self.dropped += lost
            if lost:
                logger.warning(
                    "tracestitch: %d run operation(s) lost: the exporter was not built within "
                    "%.1f s",
                    lost,
                    timeout,
                )
            return not lost
        # At exit (no timeout given) the real exporter applies its own policy: it goes on
        # while its sink takes batches.
        return real.shutdown(None if given is None else max(0.0, deadline - time.monotonic()))

    def stats(self) -> Any:
        stats = getattr(self._real, "stats", None)
        return stats() if callable(stats) else {"held": len(self._held), "dropped": self.dropped}

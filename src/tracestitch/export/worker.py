"""``BatchExporter``: ships runs out of the process without costing the request path.

Three stages, two daemon threads:

1. ``submit(op, run)`` (request path, :mod:`~tracestitch.export.intake`): appends ``(op, run)``
   to a queue bounded in estimated bytes. O(1), no serialization, never blocks, never raises.
   A patch whose run's post is still queued is coalesced (the post is serialized later, from
   the ended run). When the queue is full the caller serializes the run itself (a producer
   faster than the worker is paced, nothing is lost); over the byte bound an operation is
   dropped and counted.
2. The *batcher* thread (:mod:`~tracestitch.export.batcher`) serializes queued runs into
   batches, closed on count, bytes or interval; they wait in memory for the sender up to half
   the byte bound, beyond that they go to the spool.
3. The *sender* thread (:mod:`~tracestitch.export.sender`) delivers batches to the
   :class:`~tracestitch.export.sink.Sink`, retrying with backoff; what it cannot deliver is
   spooled, and the spool is replayed once the sink answers again (and at the next start).

Example::

    exporter = BatchExporter(LangSmithSink("http://127.0.0.1:1984"), spool="/var/tmp/ts")
    tracestitch.set_exporter(exporter)
    ...
    exporter.stats()["sent"]
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tracestitch.export.accounting import Ledger, report_internal
from tracestitch.export.batcher import Batcher, Handoff
from tracestitch.export.fanout import FanoutExporter
from tracestitch.export.intake import FULL, Intake
from tracestitch.export.retry import RetryPolicy
from tracestitch.export.sender import Sender
from tracestitch.export.spool import Spool
from tracestitch.exporter import shutdown_at_exit

if TYPE_CHECKING:
    from tracestitch.export.sink import Sink
    from tracestitch.export.wire import WireOp
    from tracestitch.exporter import Op
    from tracestitch.run_tree import RunTree

__all__ = ["BatchExporter", "FanoutExporter", "RetryPolicy"]

# For the fork hook. Exit is the core's (tracestitch.exporter.shutdown_all: every exporter at
# once, so the exit waits for the slowest rather than the sum).
_live: weakref.WeakSet[BatchExporter] = weakref.WeakSet()


def _reset_all_after_fork() -> None:
    for exporter in list(_live):
        exporter._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_all_after_fork)


class BatchExporter:
    """The process's exporter: see the module docstring.

    Parameters (all optional but ``sink``):

    - ``max_batch_size`` / ``max_batch_bytes`` / ``flush_interval``: a batch closes at this many
      operations, this many serialized bytes, or this many seconds after it opened.
    - ``max_queue_bytes``: the memory bound: estimated bytes of runs not yet serialized plus
      serialized bytes of batches not yet delivered. ``item_estimate`` is what a queued run is
      charged until the batcher has measured real ones (then: a running average of serialized
      bytes, times the memory a queued run holds per serialized byte).
    - ``spool``: a :class:`Spool`, a directory for one, or ``None`` (no disk: what cannot be
      held or delivered is dropped, counted). Constructing touches no disk: the spool directory
      is scanned and replayed on the worker thread.
    - ``post_open_after``: a traced call, request or client call still open after this many
      seconds is posted as it is (and patched at its end), so long and hung runs show up
      while open (:mod:`tracestitch.open_runs`); ``None`` or ``0``: only at their end.
    - ``retry``: a :class:`RetryPolicy`. ``shutdown_timeout``: the default for
      :meth:`flush`/:meth:`shutdown` (2 s); at exit, how long the sink may go without taking a
      batch. ``shutdown_max``: how long exit goes on delivering while it does (30 s).
    - ``clock``/``sleep``/``rand``: injectable for tests (``sleep`` defaults to an interruptible
      wait that shutdown cuts short).
    """

    def __init__(
        self,
        sink: Sink,
        *,
        max_batch_size: int = 200,
        max_batch_bytes: int = 4 << 20,
        flush_interval: float = 0.2,
        max_queue_bytes: int = 64 << 20,
        item_estimate: int = 2048,
        post_open_after: float | None = 2.0,
        spool: Spool | str | os.PathLike[str] | None = None,
        spool_max_bytes: int = 256 << 20,
        retry: RetryPolicy | None = None,
        shutdown_timeout: float = 2.0,
        shutdown_max: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
        rand: Callable[[], float] = random.random,
        warn_interval: float = 30.0,
        name: str = "tracestitch-export",
    ) -> None:
        self.sink = sink
        self.max_batch_size = max(1, max_batch_size)
        self.max_batch_bytes = max(1, max_batch_bytes)
        self.flush_interval = flush_interval
        self.max_queue_bytes = max_queue_bytes
        self.item_estimate = item_estimate
        self.post_open_after = post_open_after
        self.retry = retry or RetryPolicy()
        self.shutdown_timeout = shutdown_timeout
        self.shutdown_max = shutdown_max
        self.warn_interval = warn_interval
        self.name = name
        self._clock = clock
        self._custom_sleep = sleep
        self._rand = rand
        if spool is None or isinstance(spool, Spool):
            self.spool = spool
        else:
            # A replay holds one decoded segment in memory (~2x its size on disk): keep
            # segments small next to the memory bound.
            segment = max(64 << 10, min(4 << 20, max_queue_bytes // 16))
            self.spool = Spool(Path(spool), max_bytes=spool_max_bytes, segment_bytes=segment)
        self._init_state()
        _live.add(self)
        shutdown_at_exit(self)

    def _init_state(self) -> None:
        ledger = self._ledger = Ledger(self.spool, self._clock, self.warn_interval)
        if self.spool is not None:
            self.spool._on_drop = ledger.spool_dropped
        self._intake = Intake(ledger, self.max_queue_bytes, self.item_estimate)
        self._queue = self._intake.items
        handoff = Handoff()
        self._batcher = Batcher(
            ledger,
            self._intake,
            handoff,
            max_batch_size=self.max_batch_size,
            max_batch_bytes=self.max_batch_bytes,
            flush_interval=self.flush_interval,
            max_queue_bytes=self.max_queue_bytes,
            clock=self._clock,
            post_open_after=self.post_open_after,
        )
        self._sender = Sender(
            ledger,
            handoff,
            self.sink,
            retry=self.retry,
            idle_wait=self.flush_interval,
            clock=self._clock,
            sleep=self._sleep,
            rand=self._rand,
            replay_batch=self.max_batch_size,
        )
        self._started = False
        self._closing = False  # shutdown() began (runs are still taken until it closes the books)
        self._threads: list[threading.Thread] = []

    def __repr__(self) -> str:
        return f"BatchExporter(sink={self.sink!r}, spool={self.spool!r})"

    # ------------------------------------------------------------------ request path

    def submit(self, op: Op, run: RunTree) -> bool:
        """Queue ``run`` for export. O(1) (but when the queue is full: then the run is
        serialized here rather than dropped); never blocks; never raises."""
        refused = self._intake.put(op, run)
        if refused is not None and (refused is not FULL or not self._serialize_here(op, run)):
            self._ledger.drop(1, refused, refused=True)
            return False
        if not self._started:
            self._start()
        if len(self._queue) >= self.max_batch_size and not self._ledger.wake.is_set():
            self._ledger.wake.set()
        return True

    def _serialize_here(self, op: Op, run: RunTree) -> bool:
        """The queue is full: serialize on the caller's thread rather than drop (see
        :mod:`~tracestitch.export.intake`). ``False``: it cannot be kept after all."""
        from tracestitch.export.wire import serialize_run

        try:
            ops = serialize_run(op, run)
        except Exception as exc:
            report_internal("export.serialize", exc)
            return False
        if not self._intake.put_serialized(op, str(run.id), ops):
            return False
        self._ledger.count("serialized_by_caller")
        self._ledger.wake.set()  # the worker is behind: have it look now
        return True

    def stats(self) -> dict[str, Any]:
        """Counters since start: ``submitted``, ``sent``, ``retried`` (attempts repeated),
        ``spooled``, ``replayed``, ``dropped`` (every operation lost, with ``drop_reasons``),
        ``rejected`` (refused by the sink for good, a 4xx: counted in ``dropped`` too, or in
        ``spooled`` when refused on replay), ``coalesced`` (a patch not sent on its own: its
        run's post was still queued, or already went out complete), ``merged`` (a patch folded
        into its post in one batch; counted in ``sent`` too), ``serialized_by_caller``
        (serialized on the submitting thread because the queue was full; counted in the others
        too), plus ``bytes_queued``, ``queued``, ``item_estimate`` (bytes a queued run is
        charged now), ``pending``, ``spool_bytes``, ``spool_segments``. Always ``submitted ==
        sent + spooled + dropped + coalesced + pending``; ``spool_dropped`` counts spooled
        operations deleted later because the spool was full."""
        with self._ledger.lock:
            result = self._ledger.snapshot(self._intake.submitted)
            result["bytes_queued"] = self._intake.queued_bytes + self._ledger.mem_bytes
            result["queued"] = len(self._intake)
            result["item_estimate"] = self._intake.estimate
        if self.spool is not None:
            result["spool_bytes"] = self.spool.stats.bytes
            result["spool_segments"] = self.spool.stats.segments
        return result

    # ------------------------------------------------------------------ threads

    def _start(self) -> None:
        with self._ledger.lock:
            if self._started or self._ledger.closed or self._closing:
                return
            self._started = True
            self._threads = [
                threading.Thread(target=self._batcher.run, name=f"{self.name}-batch", daemon=True),
                threading.Thread(target=self._sender.run, name=f"{self.name}-send", daemon=True),
            ]
        for thread in self._threads:
            thread.start()

    def start(self) -> BatchExporter:
        """Start the worker threads now (they also start on the first submit), e.g. to replay
        a spool left by a previous process."""
        self._start()
        return self

    def _sleep(self, seconds: float) -> None:
        if self._custom_sleep is not None:
            self._custom_sleep(seconds)
        else:
            self._ledger.stop.wait(seconds)

    # ------------------------------------------------------------------ lifecycle

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted so far is delivered (or spooled, or dropped);
        ``False`` if that took longer than ``timeout`` (default: ``shutdown_timeout``)."""
        timeout = self.shutdown_timeout if timeout is None else timeout
        deadline = self._clock() + timeout
        return self._ledger.wait_settled(self._intake.submitted, deadline)

    def shutdown(self, timeout: float | None = None) -> bool:
        """Deliver what is queued, spool the rest, stop the threads. Returns whether everything
        was delivered. Called at exit automatically (:func:`tracestitch.exporter.shutdown_all`).

        With ``timeout``, it takes at most that long. Without (as at exit), it goes on while
        the sink keeps taking batches, up to ``shutdown_max``, and stops once the sink has
        taken nothing for ``shutdown_timeout``: a live endpoint gets everything a short
        process made, a dead one costs ``shutdown_timeout``.

        While the sink answers, what the spool holds (left by an earlier process, or by this
        one under load) is replayed within the same time. Once the sink fails, what is left
        goes straight to the spool (the next start replays it) instead of waiting out retries.
        What could be neither delivered nor spooled is counted as dropped, with its reason,
        and logged: after shutdown, ``stats()["pending"]`` is 0."""
        ledger = self._ledger
        with ledger.lock:
            if ledger.closed or self._closing:
                return ledger.settled >= self._intake.submitted
            self._closing = True
        stall = self.shutdown_timeout if timeout is None else timeout
        limit = max(stall, self.shutdown_max) if timeout is None else timeout
        start = self._clock()
        # Leave a reserve at the end for writing leftovers to the spool.
        reserve = min(0.5, stall * 0.25) if self.spool is not None else 0.0
        ledger.begin_exit(start, stall - reserve, start + limit - reserve)
        delivered = True
        if self._started:
            # Runs handed over while this waits are taken and waited for too, within the same
            # deadline: at exit (or SIGTERM) other threads still run, and a server's request
            # thread ends its run just after writing the response (a WSGI body's close). Only
            # what comes once the books close below is refused.
            target = -1
            while delivered and target != self._intake.submitted:
                target = self._intake.submitted
                delivered = ledger.wait_settled(target, None)
            if delivered and self.spool is not None:
                self._sender.wait_replayed()
        with ledger.lock:
            ledger.closed = True
        ledger.stop.set()
        ledger.wake.set()
        with ledger.lock:
            ledger.cond.notify_all()
        end = (ledger.spool_at or start) + reserve
        for thread in self._threads:
            thread.join(max(0.0, end - self._clock()))
        if not self._started or not self._threads[0].is_alive():
            # Nothing was ever started, or the batcher finished: spool what it did not reach.
            self._drain_to_spool()
        ledger.finalize(
            self._intake.submitted,
            "not delivered by the shutdown deadline"
            + ("" if self.spool is not None else " (no spool)"),
        )
        if self.spool is not None:
            with contextlib.suppress(Exception):
                self.spool.close()
        with contextlib.suppress(Exception):
            self.sink.close()
        _live.discard(self)
        return delivered

    def _drain_to_spool(self) -> None:
        from tracestitch.export.wire import serialize_run

        batch: list[WireOp] = []
        while self._intake.ready:
            _, _, ops, size = self._intake.pop_ready()
            with self._ledger.lock:
                self._ledger.release(size)  # counted again below, as spooled bytes
            batch.extend(ops)
        for op, run in self._intake.take(len(self._intake)):
            try:
                batch.extend(serialize_run(op, run))
            except Exception:
                self._ledger.drop(1, "serialization failed")
        if batch:
            size = sum(op.size for op in batch)
            self._ledger.to_spool(batch, size, in_memory=False)

    def _after_fork(self) -> None:
        """In a forked child: the parent's threads do not exist here and its queue is the
        parent's to send; start clean (threads start again on the first submit)."""
        reset = getattr(self.sink, "reset_after_fork", None)
        if callable(reset):
            reset()
        self._init_state()
        if self.spool is not None:
            self.spool._after_fork()

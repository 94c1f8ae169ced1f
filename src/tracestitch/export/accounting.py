"""The export worker's shared ledger: one lock, the counters, drops, and the stop signals.

Every submitted operation is *settled* exactly once, as sent, spooled, dropped or coalesced,
so ``submitted == settled + pending`` always holds and ``flush`` can wait for a target count.
The batcher, the sender and the lifecycle methods account here, under :attr:`Ledger.lock`; the
request path counts submissions under the queue's own lock (:mod:`~tracestitch.export.intake`)
and takes this one only to drop or coalesce. At the end of shutdown :meth:`Ledger.finalize`
closes the books: what is still pending then is counted as dropped, with its reason.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tracestitch.instrument import report

if TYPE_CHECKING:
    from tracestitch.export.spool import Spool
    from tracestitch.export.wire import WireOp

__all__ = ["COUNTERS", "Ledger", "report_internal"]

logger = logging.getLogger("tracestitch.export")

COUNTERS = (
    "sent",
    "retried",
    "spooled",
    "replayed",
    "dropped",
    "rejected",
    "coalesced",
    "merged",
    "serialized_by_caller",
    "spool_dropped",
    "batches",
    "requests_failed",
)


def report_internal(site: str, exc: BaseException) -> None:
    """Count and log an internal error on a worker thread. Under strict mode ``report``
    re-raises, which would end the thread for good; tests see it via ``internal_errors()``."""
    with contextlib.suppress(Exception):
        report(site, exc)


class Ledger:
    """Counters and the state every stage shares; see the module docstring.

    ``mem_bytes`` is the serialized bytes held in memory (open batch, waiting batches, the one
    being sent). ``stop`` ends the threads; ``spool_at`` is the shutdown deadline after which
    nothing more is attempted and whatever is left goes to the spool. While the sink keeps
    taking batches it moves on (see :meth:`begin_exit`).
    """

    def __init__(
        self, spool: Spool | None, clock: Callable[[], float], warn_interval: float
    ) -> None:
        self.spool = spool
        self.clock = clock
        self.warn_interval = warn_interval
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.wake = threading.Event()  # pokes the batcher
        self.stop = threading.Event()
        self.spool_at: float | None = None
        # Set by begin_exit(): how far a delivery moves spool_at on, and up to when.
        self._exit_stall = 0.0
        self._exit_until = 0.0
        self.closed = False
        # Set by finalize() at the end of shutdown: the books are closed, a late settle by a
        # thread that outlived the deadline changes nothing.
        self.final = False
        self.settled = 0
        self.mem_bytes = 0
        self.flush_waiters = 0
        self.counts = dict.fromkeys(COUNTERS, 0)
        self.drop_reasons: dict[str, int] = {}
        self._last_warn = -1e18
        self._drops_since_warn = 0

    # ------------------------------------------------------------------ signals

    def stopping(self) -> bool:
        """Past the shutdown deadline: spool, do not send."""
        return self.spool_at is not None and self.clock() >= self.spool_at

    def urgent(self) -> bool:
        """Someone waits (flush or shutdown): close batches now rather than on the interval."""
        return self.flush_waiters > 0 or self.spool_at is not None

    def begin_exit(self, start: float, stall: float, until: float) -> None:
        """Shutdown starts at ``start``: stop sending at ``start + stall`` unless a delivery
        comes first, each delivery allowing ``stall`` more, never past ``until``. A live
        endpoint thus gets everything a short process made (bench_short_lived: 20,000 traces,
        40,000 runs, took the collector about 5 s), a dead or stalled one costs ``stall``."""
        with self.lock:
            self._exit_stall, self._exit_until = stall, until
            self.spool_at = min(start + stall, until)

    def delivered(self) -> None:
        """A batch reached the sink: during shutdown, allow another stall period. Caller
        holds :attr:`lock`."""
        if self.spool_at is not None:
            self.spool_at = max(
                self.spool_at, min(self.clock() + self._exit_stall, self._exit_until)
            )

    # ------------------------------------------------------------------ memory

    def hold(self, size: int) -> None:
        """``size`` more serialized bytes are held in memory. Caller holds :attr:`lock`."""
        self.mem_bytes += size

    def release(self, size: int) -> None:
        """``size`` serialized bytes are no longer held in memory (sent, spooled, or handed
        on). Caller holds :attr:`lock`."""
        self.mem_bytes -= size

    # ------------------------------------------------------------------ counting

    def sent(self, weight: int) -> None:
        """A fresh batch of ``weight`` operations reached the sink. Caller holds :attr:`lock`."""
        self.counts["batches"] += 1
        self.settle(weight, "sent")

    def replayed(self, ops: int) -> None:
        """A spooled segment of ``ops`` operations reached the sink (they were settled when
        spooled: only counted; each part moved the exit deadline on as it was delivered).
        Caller holds :attr:`lock`."""
        self.counts["replayed"] += ops
        self.counts["batches"] += 1
        self.cond.notify_all()  # shutdown may wait for the spool to empty

    def settle(
        self, weight: int, counter: str, n: int | None = None, *, refused: bool = False
    ) -> None:
        """Record ``weight`` submitted operations as finished. Caller holds :attr:`lock`.
        Once the books are closed only ``refused`` ones count (submitted after shutdown)."""
        if self.final and not refused:
            return
        self.settled += weight
        self.counts[counter] += weight if n is None else n
        if counter == "sent":
            self.delivered()
        if self.flush_waiters:
            self.cond.notify_all()

    def count(self, counter: str, n: int = 1) -> None:
        with self.lock:
            self.counts[counter] += n

    def drop(
        self,
        weight: int,
        reason: str,
        *,
        settle: bool = True,
        rejected: bool = False,
        refused: bool = False,
    ) -> None:
        """Count ``weight`` operations as dropped for ``reason``; warn, rate-limited.
        ``rejected``: the sink refused them for good (also counted as ``rejected``);
        ``settle=False``: they were settled already (as spooled), only the loss is counted;
        ``refused``: turned away on submission (counted even after shutdown, when a worker
        thread that outlived the deadline no longer counts: finalize() did)."""
        with self.lock:
            if self.final and not refused:
                return
            if settle:
                self.settle(weight, "dropped", refused=refused)
            elif not rejected:
                self.counts["spool_dropped"] += weight
            if rejected:
                self.counts["rejected"] += weight
            self.drop_reasons[reason] = self.drop_reasons.get(reason, 0) + weight
            self._drops_since_warn += weight
            now = self.clock()
            if now - self._last_warn < self.warn_interval:
                return
            self._last_warn = now
            dropped, self._drops_since_warn = self._drops_since_warn, 0
            totals = dict(self.drop_reasons)
        logger.warning(
            "tracestitch: dropped %d run operation(s) (latest reason: %s; totals %s); "
            "see exporter.stats()",
            dropped,
            reason,
            totals,
        )

    def spool_dropped(self, weight: int, reason: str) -> None:
        """The spool deleted ``weight`` operations to make room. They were settled as spooled
        already: counted (and warned about), not settled a second time."""
        self.drop(weight, reason, settle=False)

    def to_spool(self, batch: list[WireOp], size: int, *, in_memory: bool = True) -> None:
        """Write ``batch`` to the spool (or drop it, counted, when there is none or it fails);
        ``in_memory``: its ``size`` bytes were counted in :attr:`mem_bytes` until now."""
        weight = sum(op.weight for op in batch)
        kept = 0
        if self.spool is not None:
            try:
                kept = self.spool.append(batch)
            except Exception as exc:
                report_internal("export.spool", exc)
        with self.lock:
            if in_memory:
                self.release(size)
            kept_weight = sum(op.weight for op in batch[:kept])
            self.settle(kept_weight, "spooled")
        if kept < len(batch):
            self.drop(weight - kept_weight, "spool unavailable" if self.spool else "no spool")

    # ------------------------------------------------------------------ waiting

    def wait_settled(self, target: int, deadline: float | None) -> bool:
        """Block until ``target`` operations are settled or ``deadline`` (on :attr:`clock`;
        ``None``: the moving exit deadline :attr:`spool_at`) passes; pokes the batcher so an
        open batch closes at once."""
        with self.lock:
            if self.settled >= target:
                return True
            self.flush_waiters += 1
        self.wake.set()
        try:
            with self.lock:
                while self.settled < target:
                    end = deadline if deadline is not None else self.spool_at
                    assert end is not None, "no deadline: begin_exit() not called"
                    remaining = end - self.clock()
                    if remaining <= 0:
                        return False
                    self.cond.wait(min(remaining, 0.05))
                    self.wake.set()
                return True
        finally:
            with self.lock:
                self.flush_waiters -= 1

    def finalize(self, submitted: int, reason: str) -> int:
        """Close the books at the end of shutdown: whatever of ``submitted`` is not settled
        yet was neither delivered nor spooled in time, and is counted as dropped for
        ``reason`` (and logged, whatever the rate limit). Returns how many."""
        with self.lock:
            if self.final:
                return 0
            pending = submitted - self.settled
            if pending > 0:
                self.settle(pending, "dropped")
                self.drop_reasons[reason] = self.drop_reasons.get(reason, 0) + pending
            self.final = True
            dropped = self.counts["dropped"]
        if pending > 0:
            logger.warning(
                "tracestitch: %d run operation(s) %s; %d dropped in all (see exporter.stats())",
                pending,
                reason,
                dropped,
            )
        return max(pending, 0)

    def snapshot(self, submitted: int) -> dict[str, Any]:
        """The counters (caller adds queue and spool figures). Caller holds :attr:`lock` and
        reads ``submitted`` after taking it, so ``pending`` is never negative."""
        result: dict[str, Any] = {"submitted": submitted, **self.counts}
        result["drop_reasons"] = dict(self.drop_reasons)
        result["pending"] = submitted - self.settled
        return result

"""The sender thread: delivers batches to the sink, retries, and replays the spool.

A batch is attempted up to ``RetryPolicy.max_attempts`` times with exponential backoff and
jitter (``Retry-After`` honoured); one that exhausts them is spooled, and the sink then counts
as *down*: until a probe succeeds, one attempt per backoff period (growing to ``max_delay``),
everything else straight to the spool. Spooled segments are replayed, alternating with fresh
batches while the sink is up so a steady load cannot starve the spool; a replay is also the
probe that finds a sink back up when no new runs arrive.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from tracestitch.export.accounting import report_internal
from tracestitch.export.retry import RetryPolicy
from tracestitch.export.sink import DeliveryError, Sink

if TYPE_CHECKING:
    from tracestitch.export.accounting import Ledger
    from tracestitch.export.batcher import Handoff
    from tracestitch.export.spool import Claim
    from tracestitch.export.wire import WireOp

__all__ = ["Sender"]

logger = logging.getLogger("tracestitch.export")


class Sender:
    """The sender thread's state and loop; see the module docstring."""

    def __init__(
        self,
        ledger: Ledger,
        handoff: Handoff,
        sink: Sink,
        *,
        retry: RetryPolicy,
        idle_wait: float,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.ledger = ledger
        self.handoff = handoff
        self.sink = sink
        self.retry = retry
        self.idle_wait = idle_wait
        self._clock = clock
        self._sleep = sleep
        self._rand = rand
        self._failures = 0
        self.down = False
        self._next_probe = 0.0
        self._logged_statuses: set[int | None] = set()
        # The current outage: when the sink went down, and the spooled operations delivered
        # since it came back (logged once, when the spool is empty again).
        self._outage_since: float | None = None
        self._outage_replayed = 0
        self.spool_ready = threading.Event()  # the spool is opened (scanned) on this thread

    def run(self) -> None:
        ledger, spool = self.ledger, self.ledger.spool
        if spool is not None:
            try:
                spool.open()  # directory scan and recovery: here, never on a caller's thread
            except Exception as exc:
                report_internal("export.spool", exc)
        self.spool_ready.set()
        replay_turn = False
        while not ledger.stop.is_set():
            try:
                batch: list[WireOp] | None = None
                size = 0
                with ledger.lock:
                    if not self.handoff.batches and not self._replayable():
                        ledger.cond.wait(self.idle_wait)
                    if ledger.stop.is_set():
                        return
                    if self.handoff.batches and not (replay_turn and self._replayable()):
                        batch, size = self.handoff.pop()
                        ledger.cond.notify_all()
                replay_turn = not replay_turn
                if batch is not None:
                    self._deliver(batch, None, size)
                elif self._replayable() and spool is not None:
                    claim = spool.claim_oldest()
                    if claim is not None:
                        self._deliver(claim.ops, claim, sum(op.size for op in claim.ops))
            except Exception as exc:
                report_internal("export.sender", exc)

    def _replayable(self) -> bool:
        # Also while the sink is failing: a replay is then the probe that finds it back up
        # (paced by the backoff in _deliver) even when no new runs arrive.
        spool = self.ledger.spool
        return (
            spool is not None
            and not self.ledger.stopping()
            and not self._waiting_to_probe()
            and spool.pending()
        )

    def wait_replayed(self, deadline: float) -> bool:
        """At shutdown: wait until the spool is replayed while the sink answers, or until
        ``deadline`` (on the ledger's clock); whether it is empty."""
        ledger, spool = self.ledger, self.ledger.spool
        if spool is None:
            return True
        # What the spool holds is known once this thread has scanned it.
        if not self.spool_ready.wait(max(0.0, deadline - self._clock())):
            return False
        with ledger.lock:
            while spool.pending() and not self.down:
                remaining = deadline - self._clock()
                if remaining <= 0:
                    return False
                ledger.cond.notify_all()  # the sender may be idle-waiting on the condition
                ledger.cond.wait(min(remaining, 0.05))
        return not spool.pending()

    def _waiting_to_probe(self) -> bool:
        return self.down and self._clock() < self._next_probe

    def _deliver(self, batch: list[WireOp], claim: Claim | None, size: int) -> None:
        attempts = 0
        ledger = self.ledger
        while True:
            if ledger.stopping() or ledger.stop.is_set() or self._waiting_to_probe():
                # Known down and not yet time to probe again: straight to the spool (a claim
                # just goes back) rather than holding memory for a sink that is not there.
                self._give_up(batch, claim, size)
                return
            attempts += 1
            try:
                self.sink.send(batch)
            except DeliveryError as exc:
                error: DeliveryError = exc
            except Exception as exc:  # a sink bug: count it, retry like a connection error
                report_internal("export.sink", exc)
                error = DeliveryError(f"{type(exc).__name__} in sink")
            else:
                self._finish(batch, claim, size)
                return
            ledger.count("requests_failed")
            self._log_failure(error)
            if not error.retryable:
                self._reject(batch, claim, size, error)
                return
            self._failures += 1
            delay = self.retry.delay(self._failures, error.retry_after, self._rand)
            # Shutting down with a spool: the next start replays it, so waiting out retries
            # would only delay the exit (and leave less time to spool the rest).
            exiting = ledger.spool_at is not None and ledger.spool is not None
            if self.down or exiting or attempts >= self.retry.max_attempts:
                if not self.down and self._outage_since is None:
                    self._outage_since, self._outage_replayed = self._clock(), 0
                self.down = True
                self._next_probe = self._clock() + delay
                self._give_up(batch, claim, size)
                return
            ledger.count("retried")
            self._sleep(delay)

    def _finish(self, batch: list[WireOp], claim: Claim | None, size: int) -> None:
        """``batch`` was delivered."""
        ledger, spool = self.ledger, self.ledger.spool
        self._failures = 0
        self.down = False
        if claim is not None and spool is not None:
            # Replayed ops were settled when spooled.
            spool.ack(claim)
            with ledger.lock:
                ledger.counts["replayed"] += len(batch)
                ledger.counts["batches"] += 1
                ledger.cond.notify_all()  # shutdown may wait for the spool to empty
            self._outage_replayed += len(batch)
        else:
            with ledger.lock:
                ledger.counts["batches"] += 1
                if self.handoff.release(batch):
                    ledger.mem_bytes -= size
                    ledger.settle(sum(op.weight for op in batch), "sent")
                # else shutdown spooled it meanwhile: settled there; a repeat is harmless.
        if self._outage_since is not None and (spool is None or not spool.pending()):
            logger.warning(
                "tracestitch: export to %r is back after %.0f s; delivered %d spooled run "
                "operation(s)",
                self.sink,
                self._clock() - self._outage_since,
                self._outage_replayed,
            )
            self._outage_since = None
            self._logged_statuses.clear()  # the next outage is logged again

    def _reject(
        self, batch: list[WireOp], claim: Claim | None, size: int, error: DeliveryError
    ) -> None:
        """The sink refused ``batch`` for good (a 4xx other than 408/429): dropped, with the
        status as its reason. A replayed one is acked too: replaying it would loop forever."""
        ledger, spool = self.ledger, self.ledger.spool
        reason = "refused by the endpoint: " + (
            f"HTTP {error.status}" if error.status is not None else str(error)
        )
        weight = sum(op.weight for op in batch)
        if claim is not None and spool is not None:
            spool.ack(claim)
            ledger.drop(weight, reason, settle=False, rejected=True)
            return
        with ledger.lock:
            owned = self.handoff.release(batch)
            if owned:
                ledger.mem_bytes -= size
        if owned:
            ledger.drop(weight, reason, rejected=True)

    def _give_up(self, batch: list[WireOp], claim: Claim | None, size: int) -> None:
        spool = self.ledger.spool
        if claim is not None and spool is not None:
            spool.release(claim)
            return
        with self.ledger.lock:
            owned = self.handoff.release(batch)
        if owned:
            self.ledger.to_spool(batch, size)

    def _log_failure(self, error: DeliveryError) -> None:
        # Once per status (None: connection errors), so a long outage logs one line, not one
        # per attempt; the counters keep the totals.
        if error.status in self._logged_statuses:
            return
        self._logged_statuses.add(error.status)
        level = logging.WARNING if error.retryable else logging.ERROR
        logger.log(
            level,
            "tracestitch: export to %r failed (%s)%s; further failures like this are counted",
            self.sink,
            error,
            ", retrying" if error.retryable else ", not retried",
        )

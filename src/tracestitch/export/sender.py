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


class _GaveUp:
    """The batch goes to the spool: the sink is down, or it is time to stop."""


_GAVE_UP = _GaveUp()


def _refusal(error: DeliveryError | _GaveUp) -> str:
    """The drop reason of a batch the sink refused for good."""
    status = getattr(error, "status", None)
    return "refused by the endpoint: " + (f"HTTP {status}" if status is not None else str(error))


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
        replay_batch: int = 200,
    ) -> None:
        self.ledger = ledger
        self.replay_batch = max(1, replay_batch)
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
                    self._deliver(batch, size)
                elif self._replayable() and spool is not None:
                    claim = spool.claim_oldest()
                    if claim is not None:
                        self._replay(claim)
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

    def wait_replayed(self) -> bool:
        """At shutdown: wait until the spool is replayed while the sink answers, or until the
        exit deadline (the ledger's ``spool_at``, moved on by each delivery); whether it is
        empty."""
        ledger, spool = self.ledger, self.ledger.spool
        if spool is None or ledger.spool_at is None:
            return spool is None
        # What the spool holds is known once this thread has scanned it.
        if not self.spool_ready.wait(max(0.0, ledger.spool_at - self._clock())):
            return False
        with ledger.lock:
            while spool.pending() and not self.down:
                remaining = ledger.spool_at - self._clock()
                if remaining <= 0:
                    return False
                ledger.cond.notify_all()  # the sender may be idle-waiting on the condition
                ledger.cond.wait(min(remaining, 0.05))
        return not spool.pending()

    def _waiting_to_probe(self) -> bool:
        return self.down and self._clock() < self._next_probe

    def _deliver(self, batch: list[WireOp], size: int) -> None:
        """Send a fresh batch (``size`` bytes in the ledger's memory count) and settle it."""
        outcome = self._attempt(batch)
        if outcome is None:
            with self.ledger.lock:
                if self.handoff.release(batch):
                    self.ledger.release(size)
                    self.ledger.sent(sum(op.weight for op in batch))
                # else shutdown spooled it meanwhile: settled there; a repeat is harmless.
            self._recovered()
            return
        with self.ledger.lock:
            owned = self.handoff.release(batch)
            if owned:
                self.ledger.release(size)
        if not owned:
            return
        if outcome is _GAVE_UP:
            self.ledger.to_spool(batch, size, in_memory=False)
        else:
            self.ledger.drop(sum(op.weight for op in batch), _refusal(outcome), rejected=True)

    def _replay(self, claim: Claim) -> None:
        """Send a spooled segment in parts the size of a batch (one request of a whole segment
        can outlast the sink's timeout, and would be repeated whole), acknowledged once every
        part is delivered; a part the sink refuses for good is counted and skipped, since
        replaying it would loop forever."""
        ledger, spool = self.ledger, self.ledger.spool
        assert spool is not None
        step = self.replay_batch
        for start in range(0, len(claim.ops), step):
            part = claim.ops[start : start + step]
            outcome = self._attempt(part)
            if outcome is _GAVE_UP:
                spool.release(claim)  # replayed again later, whole: a repeat is harmless
                return
            if outcome is not None:  # settled as spooled already: only the loss is counted
                ledger.drop(len(part), _refusal(outcome), settle=False, rejected=True)
            else:
                with ledger.lock:
                    ledger.delivered()  # a segment can take longer than the exit's stall
        spool.ack(claim)
        with ledger.lock:
            ledger.replayed(len(claim.ops))
        self._outage_replayed += len(claim.ops)
        self._recovered()

    def _attempt(self, batch: list[WireOp]) -> DeliveryError | _GaveUp | None:
        """Send ``batch`` with retries: ``None`` once delivered, the error when the sink
        refused it for good, :data:`_GAVE_UP` when it is to be spooled (the sink is down, or
        it is time to stop)."""
        attempts = 0
        ledger = self.ledger
        while True:
            if ledger.stopping() or ledger.stop.is_set() or self._waiting_to_probe():
                # Known down and not yet time to probe again: straight to the spool rather
                # than holding memory for a sink that is not there.
                return _GAVE_UP
            attempts += 1
            try:
                self.sink.send(batch)
            except DeliveryError as exc:
                error: DeliveryError = exc
            except Exception as exc:  # a sink bug: count it, retry like a connection error
                report_internal("export.sink", exc)
                error = DeliveryError(f"{type(exc).__name__} in sink")
            else:
                self._failures = 0
                self.down = False
                return None
            ledger.count("requests_failed")
            self._log_failure(error)
            if not error.retryable:
                return error
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
                return _GAVE_UP
            ledger.count("retried")
            self._sleep(delay)

    def _recovered(self) -> None:
        """After a delivery: log the end of an outage once the spool is empty again."""
        spool = self.ledger.spool
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

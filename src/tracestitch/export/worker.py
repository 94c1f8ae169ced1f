"""``BatchExporter``: ships runs out of the process without costing the request path.

Three stages, two daemon threads:

1. ``submit(op, run)`` (request path): appends ``(op, run)`` to a deque and charges a fixed
   size estimate against the byte bound. O(1), no serialization, never blocks, never raises;
   over the bound the run is dropped and counted (it cannot be serialized or spooled here
   without costing the request).
2. The *batcher* thread drains the deque, calls ``RunTree.to_wire`` and serializes (orjson),
   coalescing a run's post and patch, and closes batches on count, bytes or interval. Each
   run's estimate is replaced by its real serialized size. Batches wait in memory for the
   sender up to half the byte bound; beyond that they go to the spool, so a slow or dead sink
   costs disk, not memory, and never stops the batcher from draining submissions.
3. The *sender* thread delivers batches to the :class:`~tracestitch.export.sink.Sink`,
   retrying with exponential backoff and jitter (``Retry-After`` honoured); a batch that
   exhausts its attempts is spooled, and the spool is replayed once the sink answers again (and
   at the next start).

Example::

    exporter = BatchExporter(LangSmithSink("http://127.0.0.1:1984"), spool="/var/tmp/ts")
    tracestitch.set_exporter(exporter)
    ...
    exporter.stats()["sent"]
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import random
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tracestitch._guard import report
from tracestitch.export.sink import DeliveryError, Sink
from tracestitch.export.spool import Claim, Spool
from tracestitch.export.wire import WireOp, serialize_run
from tracestitch.exporter import Exporter, Op

if TYPE_CHECKING:
    from tracestitch.run_tree import RunTree

__all__ = ["BatchExporter", "FanoutExporter", "RetryPolicy"]

logger = logging.getLogger("tracestitch.export")

#: How many run ids posted complete are remembered, so their later patch can be skipped.
_POSTED_MEMORY = 8192


@dataclass(frozen=True)
class RetryPolicy:
    """When to try a failed batch again.

    Attempt ``n`` failing waits ``min(max_delay, initial_delay * multiplier**(n-1))``, shortened
    by up to ``jitter`` (a fraction) at random so many processes do not retry in lockstep; a
    ``Retry-After`` from the server replaces that (capped at ``max_retry_after``). After
    ``max_attempts`` the batch goes to the spool. The delay keeps growing across batches while
    the sink stays down, so a dead endpoint is probed ever less often.

    >>> RetryPolicy(jitter=0).delay(3, None)
    0.8
    """

    max_attempts: int = 5
    initial_delay: float = 0.2
    max_delay: float = 15.0
    multiplier: float = 2.0
    jitter: float = 0.25
    max_retry_after: float = 60.0

    def delay(
        self, failures: int, retry_after: float | None, rand: Callable[[], float] = random.random
    ) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        exponent = max(failures - 1, 0)
        base = min(self.max_delay, self.initial_delay * self.multiplier ** min(exponent, 64))
        return base * (1.0 - self.jitter * rand())


_live: weakref.WeakSet[BatchExporter] = weakref.WeakSet()


def _shutdown_all_at_exit() -> None:
    for exporter in list(_live):
        with contextlib.suppress(Exception):
            exporter.shutdown()


def _reset_all_after_fork() -> None:
    for exporter in list(_live):
        exporter._after_fork()


atexit.register(_shutdown_all_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_all_after_fork)


class BatchExporter:
    """The process's exporter: see the module docstring.

    Parameters (all optional but ``sink``):

    - ``max_batch_size`` / ``max_batch_bytes`` / ``flush_interval``: a batch closes at this many
      operations, this many serialized bytes, or this many seconds after it opened.
    - ``max_queue_bytes``: the memory bound: estimated bytes of runs not yet serialized plus
      serialized bytes of batches not yet delivered. ``item_estimate`` is what a run is charged
      until it is serialized.
    - ``spool``: a :class:`Spool`, a directory for one, or ``None`` (no disk: what cannot be
      held or delivered is dropped, counted).
    - ``retry``: a :class:`RetryPolicy`. ``shutdown_timeout``: the default for
      :meth:`flush`/:meth:`shutdown` (2 s), also used by the ``atexit`` hook.
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
        item_estimate: int = 4096,
        spool: Spool | str | os.PathLike[str] | None = None,
        spool_max_bytes: int = 256 << 20,
        retry: RetryPolicy | None = None,
        shutdown_timeout: float = 2.0,
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
        self.retry = retry or RetryPolicy()
        self.shutdown_timeout = shutdown_timeout
        self.warn_interval = warn_interval
        self.name = name
        self._clock = clock
        self._custom_sleep = sleep
        self._rand = rand
        if spool is None or isinstance(spool, Spool):
            self.spool = spool
        else:
            self.spool = Spool(Path(spool), max_bytes=spool_max_bytes)
        if self.spool is not None:
            self.spool._on_drop = self._count_spool_drop
        self._init_state()
        _live.add(self)

    def _init_state(self) -> None:
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._queue: deque[tuple[Op, RunTree]] = deque()
        self._raw_bytes = 0
        self._mem_bytes = 0  # serialized: open batch + waiting batches + the one being sent
        self._open: dict[tuple[str, str], list[WireOp]] = {}
        self._open_bytes = 0
        self._open_count = 0
        self._open_since = 0.0
        self._handoff: deque[list[WireOp]] = deque()
        self._handoff_bytes = 0
        self._inflight: list[WireOp] | None = None
        self._posted_complete: OrderedDict[str, None] = OrderedDict()
        self._flush_waiters = 0
        self._failures = 0
        self._down = False
        self._next_probe = 0.0
        self._started = False
        self._closed = False
        self._spool_at: float | None = None
        self._threads: list[threading.Thread] = []
        self._last_warn = -1e18
        self._drops_since_warn = 0
        self._logged_statuses: set[int | None] = set()
        # Counters, in submitted operations (a merged post+patch settles two).
        self._submitted = 0
        self._settled = 0
        self._counts = dict.fromkeys(
            (
                "sent",
                "retried",
                "spooled",
                "replayed",
                "dropped",
                "rejected",
                "coalesced",
                "merged",
                "spool_dropped",
                "batches",
                "requests_failed",
            ),
            0,
        )
        self._drop_reasons: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"BatchExporter(sink={self.sink!r}, spool={self.spool!r})"

    # ------------------------------------------------------------------ request path

    def submit(self, op: Op, run: RunTree) -> None:
        """Queue ``run`` for export. O(1); never blocks; never raises."""
        estimate = self.item_estimate
        with self._lock:
            self._submitted += 1
            if self._closed or self._raw_bytes + self._mem_bytes + estimate > self.max_queue_bytes:
                accepted = False
            else:
                accepted = True
                self._raw_bytes += estimate
                self._queue.append((op, run))
        if not accepted:
            self._drop(1, "exporter closed" if self._closed else "queue full")
            return
        if not self._started:
            self._start()
        if len(self._queue) >= self.max_batch_size and not self._wake.is_set():
            self._wake.set()

    # ------------------------------------------------------------------ accounting

    def _settle(self, weight: int, counter: str, n: int | None = None) -> None:
        """Record ``weight`` submitted operations as finished (sent/spooled/dropped...).
        Caller holds ``self._lock``."""
        self._settled += weight
        self._counts[counter] += weight if n is None else n
        if self._flush_waiters:
            self._cond.notify_all()

    def _drop(self, weight: int, reason: str, *, settle: bool = True) -> None:
        with self._lock:
            if settle:
                self._settle(weight, "dropped")
            else:
                self._counts["spool_dropped"] += weight
            self._drop_reasons[reason] = self._drop_reasons.get(reason, 0) + weight
            self._drops_since_warn += weight
            now = self._clock()
            if now - self._last_warn < self.warn_interval:
                return
            self._last_warn = now
            dropped, self._drops_since_warn = self._drops_since_warn, 0
            totals = dict(self._drop_reasons)
        logger.warning(
            "tracestitch: dropped %d run operation(s) (latest reason: %s; totals %s); "
            "see exporter.stats()",
            dropped,
            reason,
            totals,
        )

    def _count_spool_drop(self, weight: int, reason: str) -> None:
        # Those operations were settled as spooled already; dropping them now is counted
        # (and warned about), not settled a second time.
        self._drop(weight, reason, settle=False)

    def stats(self) -> dict[str, Any]:
        """Counters since start: ``submitted``, ``sent``, ``retried`` (attempts repeated),
        ``spooled``, ``replayed``, ``dropped`` (with ``drop_reasons``), ``rejected`` (refused by
        the sink as invalid), ``coalesced`` (a patch skipped: its run was already posted
        complete), ``merged`` (a patch folded into its post in one batch; counted in ``sent``
        too), plus ``bytes_queued``, ``queued``, ``pending``, ``spool_bytes``,
        ``spool_segments``. Always ``submitted == sent + spooled + dropped + rejected +
        coalesced + pending``; ``spool_dropped`` counts spooled operations deleted later
        because the spool was full."""
        with self._lock:
            result: dict[str, Any] = {"submitted": self._submitted, **self._counts}
            result["drop_reasons"] = dict(self._drop_reasons)
            result["bytes_queued"] = self._raw_bytes + self._mem_bytes
            result["queued"] = len(self._queue)
            result["pending"] = self._submitted - self._settled
        if self.spool is not None:
            result["spool_bytes"] = self.spool.stats.bytes
            result["spool_segments"] = self.spool.stats.segments
        return result

    # ------------------------------------------------------------------ threads

    def _start(self) -> None:
        with self._lock:
            if self._started or self._closed:
                return
            self._started = True
            self._threads = [
                threading.Thread(target=self._run_batcher, name=f"{self.name}-batch", daemon=True),
                threading.Thread(target=self._run_sender, name=f"{self.name}-send", daemon=True),
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
            self._stop.wait(seconds)

    def _stopping(self) -> bool:
        return self._spool_at is not None and self._clock() >= self._spool_at

    # -- batcher ------------------------------------------------------------------------------

    def _run_batcher(self) -> None:
        while True:
            try:
                # Clear before looking at the queue: a submit racing with us then makes the
                # wait below return at once instead of being missed.
                self._wake.clear()
                urgent = self._flush_waiters > 0 or self._spool_at is not None
                if not self._queue and not self._stop.is_set():
                    if not self._open:
                        wait = self.flush_interval
                    elif urgent:
                        wait = 0.0
                    else:
                        wait = self._open_since + self.flush_interval - self._clock()
                    if wait > 0:
                        self._wake.wait(wait)
                self._drain()
                urgent = self._flush_waiters > 0 or self._spool_at is not None
                if self._open and (
                    urgent or self._clock() - self._open_since >= self.flush_interval
                ):
                    self._close_batch()
                if self._stop.is_set() and not self._queue:
                    self._final_spool()
                    return
            except Exception as exc:  # a bug here must not kill export for good
                _report("export.batcher", exc)

    def _drain(self, limit: int = 10_000) -> None:
        for _ in range(limit):
            try:
                op, run = self._queue.popleft()
            except IndexError:
                return
            try:
                ops = self._serialize(op, run)
            except Exception as exc:
                ops = None
                _report("export.serialize", exc)
            with self._lock:
                self._raw_bytes -= self.item_estimate
            if ops is None:
                self._drop(1, "serialization failed")
            if self._open_bytes >= self.max_batch_bytes or self._open_count >= self.max_batch_size:
                self._close_batch()

    def _serialize(self, op: Op, run: RunTree) -> list[WireOp] | None:
        run_id = str(run.id)
        if op == "patch":
            key = ("post", run_id)
            posted = self._open.get(key)
            if posted is not None:
                # The post is still here: re-serialize it now, after the patch was submitted,
                # so it carries the run's final state, and send one op instead of two.
                fresh = serialize_run("post", run, weight=posted[0].weight + 1)
                self._replace_open(key, fresh)
                with self._lock:
                    self._counts["merged"] += 1
                return []
            if run_id in self._posted_complete:
                with self._lock:
                    self._settle(1, "coalesced")
                return []
        ops = serialize_run(op, run)
        if op == "post" and run.end_time_us is not None:
            self._posted_complete[run_id] = None
            if len(self._posted_complete) > _POSTED_MEMORY:
                self._posted_complete.popitem(last=False)
        self._add_open((op, run_id), ops)
        return ops

    def _add_open(self, key: tuple[str, str], ops: list[WireOp]) -> None:
        if not self._open:
            self._open_since = self._clock()
        existing = self._open.get(key)
        if existing is not None:  # the same op twice (a repeated post): keep one, settle both
            ops[0].weight += existing[0].weight
            self._replace_open(key, ops)
            return
        size = sum(o.size for o in ops)
        self._open[key] = ops
        self._open_count += len(ops)
        self._open_bytes += size
        with self._lock:
            self._mem_bytes += size

    def _replace_open(self, key: tuple[str, str], ops: list[WireOp]) -> None:
        old = sum(o.size for o in self._open[key])
        new = sum(o.size for o in ops)
        self._open_count += len(ops) - len(self._open[key])
        self._open[key] = ops
        self._open_bytes += new - old
        with self._lock:
            self._mem_bytes += new - old

    def _close_batch(self) -> None:
        batch = [op for ops in self._open.values() for op in ops]
        size = self._open_bytes
        self._open = {}
        self._open_bytes = 0
        self._open_count = 0
        if not batch:
            return
        with self._lock:
            if not self._stopping() and (
                self._handoff_bytes + size <= self.max_queue_bytes // 2 or not self._handoff
            ):
                self._handoff.append(batch)
                self._handoff_bytes += size
                self._cond.notify_all()
                return
        if self.spool is not None:
            self._to_spool(batch, size)
            return
        # No spool: hold the batch until the sender has room (submissions meanwhile fill the
        # raw queue and are dropped, counted, at its bound).
        with self._lock:
            while (
                self._handoff_bytes + size > self.max_queue_bytes // 2
                and self._handoff
                and not self._stop.is_set()
            ):
                self._cond.wait(0.1)
            if not self._stop.is_set():
                self._handoff.append(batch)
                self._handoff_bytes += size
                self._cond.notify_all()
                return
        self._to_spool(batch, size)

    def _to_spool(self, batch: list[WireOp], size: int, *, in_memory: bool = True) -> None:
        """Write ``batch`` to the spool (or drop it, counted, when there is none)."""
        weight = sum(op.weight for op in batch)
        kept = 0
        if self.spool is not None:
            try:
                kept = self.spool.append(batch)
            except Exception as exc:
                _report("export.spool", exc)
        with self._lock:
            if in_memory:
                self._mem_bytes -= size
            kept_weight = sum(op.weight for op in batch[:kept])
            self._settle(kept_weight, "spooled")
        if kept < len(batch):
            self._drop(weight - kept_weight, "spool unavailable" if self.spool else "no spool")

    def _final_spool(self) -> None:
        """At shutdown: whatever is still in memory goes to the spool."""
        if self._open:
            self._close_batch()
        with self._lock:
            leftovers = list(self._handoff)
            self._handoff.clear()
            self._handoff_bytes = 0
            inflight, self._inflight = self._inflight, None
        if inflight is not None:
            leftovers.append(inflight)
        for batch in leftovers:
            self._to_spool(batch, sum(op.size for op in batch))

    # -- sender -------------------------------------------------------------------------------

    def _run_sender(self) -> None:
        replay_turn = False
        while not self._stop.is_set():
            try:
                batch: list[WireOp] | None = None
                with self._lock:
                    if not self._handoff and not self._replayable():
                        self._cond.wait(self.flush_interval)
                    if self._stop.is_set():
                        return
                    # Alternate with replay while the sink is up, so a steady load cannot
                    # starve the spool.
                    if self._handoff and not (replay_turn and self._replayable()):
                        batch = self._handoff.popleft()
                        self._handoff_bytes -= sum(op.size for op in batch)
                        self._inflight = batch
                        self._cond.notify_all()
                replay_turn = not replay_turn
                if batch is not None:
                    self._deliver(batch, None)
                elif self._replayable() and self.spool is not None:
                    claim = self.spool.claim_oldest()
                    if claim is not None:
                        self._deliver(claim.ops, claim)
            except Exception as exc:
                _report("export.sender", exc)

    def _replayable(self) -> bool:
        # Also while the sink is failing: a replay is then the probe that finds it back up
        # (paced by the backoff in _deliver) even when no new runs arrive.
        return (
            self.spool is not None
            and self._spool_at is None
            and not self._waiting_to_probe()
            and self.spool.pending()
        )

    def _deliver(self, batch: list[WireOp], claim: Claim | None) -> None:
        attempts = 0
        size = sum(op.size for op in batch)
        while True:
            if self._stopping() or self._stop.is_set() or self._waiting_to_probe():
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
                _report("export.sink", exc)
                error = DeliveryError(f"{type(exc).__name__} in sink")
            else:
                self._delivered(batch, claim, size)
                return
            with self._lock:
                self._counts["requests_failed"] += 1
            self._log_failure(error)
            if not error.retryable:
                self._rejected(batch, claim, size)
                return
            self._failures += 1
            delay = self.retry.delay(self._failures, error.retry_after, self._rand)
            if self._down or attempts >= self.retry.max_attempts:
                # The sink counts as down until a probe succeeds: one attempt per backoff
                # period (growing to max_delay), with everything else spooled meanwhile.
                self._down = True
                self._next_probe = self._clock() + delay
                self._give_up(batch, claim, size)
                return
            with self._lock:
                self._counts["retried"] += 1
            self._sleep(delay)

    def _waiting_to_probe(self) -> bool:
        return self._down and self._clock() < self._next_probe

    def _delivered(self, batch: list[WireOp], claim: Claim | None, size: int) -> None:
        self._failures = 0
        self._down = False
        if claim is not None and self.spool is not None:
            self.spool.ack(claim)
            with self._lock:
                self._counts["replayed"] += len(batch)
                self._counts["batches"] += 1
            return
        with self._lock:
            self._counts["batches"] += 1
            if self._inflight is batch:
                self._inflight = None
                self._mem_bytes -= size
                self._settle(sum(op.weight for op in batch), "sent")
            # else shutdown spooled it meanwhile: it is settled there; a repeat is harmless.

    def _rejected(self, batch: list[WireOp], claim: Claim | None, size: int) -> None:
        if claim is not None and self.spool is not None:
            self.spool.ack(claim)  # replaying a batch the sink refuses would loop forever
            with self._lock:
                self._counts["rejected"] += len(batch)
            return
        with self._lock:
            if self._inflight is batch:
                self._inflight = None
                self._mem_bytes -= size
                self._settle(sum(op.weight for op in batch), "rejected")

    def _give_up(self, batch: list[WireOp], claim: Claim | None, size: int) -> None:
        if claim is not None and self.spool is not None:
            self.spool.release(claim)
            return
        with self._lock:
            owned = self._inflight is batch
            if owned:
                self._inflight = None
        if owned:
            self._to_spool(batch, size)

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

    # ------------------------------------------------------------------ lifecycle

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted so far is delivered (or spooled, or dropped);
        ``False`` if that took longer than ``timeout`` (default: ``shutdown_timeout``)."""
        timeout = self.shutdown_timeout if timeout is None else timeout
        deadline = self._clock() + timeout
        with self._lock:
            target = self._submitted
            if self._settled >= target:
                return True
            self._flush_waiters += 1
        self._wake.set()
        try:
            with self._lock:
                while self._settled < target:
                    remaining = deadline - self._clock()
                    if remaining <= 0:
                        return False
                    self._cond.wait(min(remaining, 0.05))
                    self._wake.set()
                return True
        finally:
            with self._lock:
                self._flush_waiters -= 1

    def shutdown(self, timeout: float | None = None) -> bool:
        """Deliver what is queued within ``timeout`` seconds (default 2), spool the rest, stop
        the threads. Returns whether everything was delivered. Called at exit automatically."""
        with self._lock:
            if self._closed:
                return self._settled >= self._submitted
            self._closed = True
        timeout = self.shutdown_timeout if timeout is None else timeout
        start = self._clock()
        # Leave a reserve at the end for writing leftovers to the spool.
        reserve = min(0.5, timeout * 0.25) if self.spool is not None else 0.0
        self._spool_at = start + timeout - reserve
        delivered = self.flush(max(0.0, timeout - reserve)) if self._started else True
        self._stop.set()
        self._wake.set()
        with self._lock:
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(max(0.0, start + timeout - self._clock()))
        if not self._started or not self._threads[0].is_alive():
            # Nothing was ever started, or the batcher finished: spool what it did not reach.
            self._drain_to_spool()
        if self.spool is not None:
            with contextlib.suppress(Exception):
                self.spool.close()
        with contextlib.suppress(Exception):
            self.sink.close()
        _live.discard(self)
        return delivered

    def _drain_to_spool(self) -> None:
        batch: list[WireOp] = []
        while True:
            try:
                op, run = self._queue.popleft()
            except IndexError:
                break
            with self._lock:
                self._raw_bytes -= self.item_estimate
            try:
                batch.extend(serialize_run(op, run))
            except Exception:
                self._drop(1, "serialization failed")
        if batch:
            size = sum(op.size for op in batch)
            with self._lock:
                self._mem_bytes += size
            self._to_spool(batch, size)

    def _after_fork(self) -> None:
        """In a forked child: the parent's threads do not exist here and its queue is the
        parent's to send; start clean (threads start again on the first submit)."""
        sink_close = getattr(self.sink, "reset_after_fork", None)
        if callable(sink_close):
            sink_close()
        self._init_state()
        if self.spool is not None:
            self.spool._after_fork()


def _report(site: str, exc: BaseException) -> None:
    """Count and log an internal error on a worker thread. Under strict mode ``report``
    re-raises, which would end the thread for good; tests see it via ``internal_errors()``."""
    with contextlib.suppress(Exception):
        report(site, exc)


class FanoutExporter:
    """Hands every run to several exporters (e.g. LangSmith and an OTLP backend)."""

    def __init__(self, exporters: Sequence[Exporter]) -> None:
        self.exporters = list(exporters)

    def __repr__(self) -> str:
        return f"FanoutExporter({self.exporters!r})"

    def submit(self, op: Op, run: RunTree) -> None:
        for exporter in self.exporters:
            exporter.submit(op, run)

    def flush(self, timeout: float | None = None) -> bool:
        return all([e.flush(timeout) for e in self.exporters])

    def shutdown(self, timeout: float | None = None) -> bool:
        return all([e.shutdown(timeout) for e in self.exporters])

    def stats(self) -> list[dict[str, Any]]:
        return [s() for e in self.exporters if callable(s := getattr(e, "stats", None))]

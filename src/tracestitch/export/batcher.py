"""The batcher thread: queued runs in, serialized batches out (to the sender, or the spool).

It takes queued operations from the :class:`~tracestitch.export.intake.Intake` in chunks
(bigger ones when it is behind, so a burst costs fewer lock round trips), serializes each run
(``RunTree.to_wire`` + orjson) into the open batch, and closes the batch on count, bytes or
interval. Within the open batch a run's post absorbs its later patch (re-serialized, one op
instead of two), and a patch of a run recently posted complete is skipped.

A closed batch waits in memory for the sender while the waiting batches stay under half the
byte bound; beyond that, or past the shutdown deadline, it goes to the spool, so a slow or dead
sink costs disk, not memory, and never stops the batcher from draining submissions.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from tracestitch import open_runs
from tracestitch.export.accounting import report_internal
from tracestitch.export.wire import WireOp, serialize_run

if TYPE_CHECKING:
    from collections.abc import Callable

    from tracestitch.export.accounting import Ledger
    from tracestitch.export.intake import Intake
    from tracestitch.exporter import Op
    from tracestitch.run_tree import RunTree

__all__ = ["Batcher", "Handoff"]

#: Queue length beyond which the batcher counts as behind and takes bigger chunks.
_BIG_CHUNK = 2000


class Handoff:
    """Closed batches waiting for the sender, and the one being sent. Guarded by the
    ledger's lock; the batcher appends, the sender pops, shutdown spools what is left."""

    def __init__(self) -> None:
        self.batches: deque[tuple[list[WireOp], int]] = deque()
        self.bytes = 0
        self.inflight: list[WireOp] | None = None
        self.inflight_size = 0

    def push(self, batch: list[WireOp], size: int) -> None:
        self.batches.append((batch, size))
        self.bytes += size

    def pop(self) -> tuple[list[WireOp], int]:
        batch, size = self.batches.popleft()
        self.bytes -= size
        self.inflight, self.inflight_size = batch, size
        return batch, size

    def release(self, batch: list[WireOp]) -> bool:
        """Whether ``batch`` was still in flight (and is now ours to settle)."""
        if self.inflight is batch:
            self.inflight = None
            return True
        return False

    def take_all(self) -> list[tuple[list[WireOp], int]]:
        """Every batch still held, with the bytes it was counted at."""
        leftovers = list(self.batches)
        self.batches.clear()
        self.bytes = 0
        inflight, self.inflight = self.inflight, None
        if inflight is not None:
            leftovers.append((inflight, self.inflight_size))
        return leftovers


class Batcher:
    """The batcher thread's state and loop; see the module docstring.

    The open batch is the batcher's alone, so adding to it takes no lock: the serialized bytes
    it holds reach the ledger's ``mem_bytes`` once per chunk (:meth:`_account`), not once per
    operation.
    """

    def __init__(
        self,
        ledger: Ledger,
        intake: Intake,
        handoff: Handoff,
        *,
        max_batch_size: int,
        max_batch_bytes: int,
        flush_interval: float,
        max_queue_bytes: int,
        clock: Callable[[], float],
        post_open_after: float | None = None,
    ) -> None:
        self.ledger = ledger
        self.intake = intake
        self.handoff = handoff
        self.max_batch_size = max_batch_size
        self.max_batch_bytes = max_batch_bytes
        self.flush_interval = flush_interval
        self.max_queue_bytes = max_queue_bytes
        self._clock = clock
        # (op, run id as an int: hashing a UUID object is a Python-level call) -> its ops.
        self._open: dict[tuple[str, str], list[WireOp]] = {}
        self._open_bytes = 0
        self._open_count = 0
        self._open_since = 0.0
        self._unaccounted = 0  # bytes added to the open batch, not yet in ledger.mem_bytes
        self.post_open_after = post_open_after if post_open_after and post_open_after > 0 else None
        self._next_sweep = 0.0

    def run(self) -> None:
        ledger = self.ledger
        while True:
            try:
                # Clear before looking at the queue: a submit racing with us then makes the
                # wait below return at once instead of being missed.
                ledger.wake.clear()
                if not len(self.intake) and not ledger.stop.is_set():
                    if not self._open:
                        wait = self.flush_interval
                    elif ledger.urgent():
                        wait = 0.0
                    else:
                        wait = self._open_since + self.flush_interval - self._clock()
                    if wait > 0:
                        ledger.wake.wait(wait)
                self.drain()
                self._sweep_open_runs()
                if self._open and (
                    ledger.urgent() or self._clock() - self._open_since >= self.flush_interval
                ):
                    self.close_batch()
                if ledger.stop.is_set() and not len(self.intake):
                    self.final_spool()
                    return
            except Exception as exc:  # a bug here must not kill export for good
                report_internal("export.batcher", exc)

    def _sweep_open_runs(self) -> None:
        """Post runs open longer than ``post_open_after`` (see :mod:`tracestitch.open_runs`),
        about once a second; they are queued like any post and batched on the next drain."""
        if self.post_open_after is None:
            return
        now = self._clock()
        if now < self._next_sweep:
            return
        self._next_sweep = now + min(1.0, self.post_open_after / 2)
        open_runs.sweep(self.post_open_after)

    def drain(self, limit: int = 10_000) -> None:
        """Serialize up to ``limit`` queued operations into batches."""
        done = 0
        max_size, max_bytes = self.max_batch_size, self.max_batch_bytes
        ready = self.intake.ready
        while done < limit:
            # Queued runs first, then what callers serialized when the queue was full (both
            # oldest first; a post and its patch split across the two still meet in one batch
            # or arrive in either order, which ingest accepts).
            chunk_size = _BIG_CHUNK if len(self.intake) > _BIG_CHUNK else max_size
            chunk = self.intake.take(min(chunk_size, limit - done))
            if chunk:
                serialized = 0
                for op, run in chunk:
                    try:
                        serialized += self._serialize(op, run)
                    except Exception as exc:
                        report_internal("export.serialize", exc)
                        self.ledger.drop(1, "serialization failed")
                    if self._open_bytes >= max_bytes or self._open_count >= max_size:
                        self.close_batch()
                self.intake.observe(serialized, len(chunk))
                done += len(chunk)
            taken = 0
            while ready and taken < max_size:
                op, run_key, ops, size = self.intake.pop_ready()
                self._insert((op, run_key), ops, size, accounted=True)
                taken += 1
                if self._open_bytes >= max_bytes or self._open_count >= max_size:
                    self.close_batch()
            done += taken
            self._account()
            if not chunk and not taken:
                return

    def _account(self) -> None:
        if self._unaccounted:
            with self.ledger.lock:
                self.ledger.hold(self._unaccounted)
            self._unaccounted = 0

    def _serialize(self, op: Op, run: RunTree) -> int:
        """Add the run's ops to the open batch; returns the bytes they serialized to."""
        # The id's text, not its int: a RunId made from text computes its int only when asked.
        run_key = str(run.id)
        if op == "patch":
            key = ("post", run_key)
            posted = self._open.get(key)
            if posted is not None:
                # The post is still here: re-serialize it now, after the patch was submitted,
                # so it carries the run's final state, and send one op instead of two.
                fresh = serialize_run("post", run, weight=posted[0].weight + 1)
                size = sum(o.size for o in fresh)
                self._replace_open(key, fresh, size, size)
                self.ledger.count("merged")
                return size
            # A post already sent, even of an ended run, does not make the patch redundant:
            # the run may have changed since (an error recorded after end(), late metadata).
        ops = serialize_run(op, run)
        size = ops[0].size if len(ops) == 1 else sum(o.size for o in ops)
        self._insert((op, run_key), ops, size)
        return size

    def _insert(
        self, key: tuple[str, str], ops: list[WireOp], size: int, *, accounted: bool = False
    ) -> None:
        """Add ``ops`` (``size`` bytes; ``accounted``: already in the ledger's mem_bytes) to
        the open batch."""
        charge = 0 if accounted else size  # what the ledger does not count yet
        if not self._open:
            self._open_since = self._clock()
        elif key in self._open:  # the same op twice (a repeated post): keep one, settle both
            ops[0].weight += self._open[key][0].weight
            self._replace_open(key, ops, size, charge)
            return
        self._open[key] = ops
        self._open_count += len(ops)
        self._open_bytes += size
        self._unaccounted += charge

    def _replace_open(
        self, key: tuple[str, str], ops: list[WireOp], size: int, charge: int
    ) -> None:
        """Put ``ops`` in place of the open ops under ``key``, whose bytes leave memory;
        ``charge`` is what of ``size`` the ledger does not count yet."""
        old = self._open[key]
        old_size = sum(o.size for o in old)
        self._open_count += len(ops) - len(old)
        self._open[key] = ops
        self._open_bytes += size - old_size
        self._unaccounted += charge - old_size

    def close_batch(self) -> None:
        self._account()
        open_ops = self._open.values()
        if self._open_count == len(open_ops):  # one op per run (no replicas): the usual case
            batch = [ops[0] for ops in open_ops]
        else:
            batch = [op for ops in open_ops for op in ops]
        size = self._open_bytes
        self._open = {}
        self._open_bytes = 0
        self._open_count = 0
        if not batch:
            return
        ledger, handoff = self.ledger, self.handoff
        # With a spool, batches beyond an eighth of the bound wait on disk instead.
        room = self.max_queue_bytes // (8 if ledger.spool is not None else 2)
        with ledger.lock:
            if not ledger.stopping() and (handoff.bytes + size <= room or not handoff.batches):
                handoff.push(batch, size)
                ledger.cond.notify_all()
                return
        if ledger.spool is not None:
            ledger.to_spool(batch, size)
            return
        # No spool: hold the batch until the sender has room (submissions meanwhile fill the
        # queue and are dropped, counted, at its bound).
        with ledger.lock:
            while handoff.bytes + size > room and handoff.batches and not ledger.stop.is_set():
                ledger.cond.wait(0.1)
            if not ledger.stop.is_set():
                handoff.push(batch, size)
                ledger.cond.notify_all()
                return
        ledger.to_spool(batch, size)

    def final_spool(self) -> None:
        """At shutdown: whatever is still in memory goes to the spool."""
        if self._open:
            self.close_batch()
        with self.ledger.lock:
            leftovers = self.handoff.take_all()
        for batch, size in leftovers:
            self.ledger.to_spool(batch, size)

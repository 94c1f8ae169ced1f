"""The request-path end of the export worker: a byte-bounded queue of unserialized runs.

``put`` runs on the caller's thread inside ``Exporter.submit``: one lock, a deque append and a
set lookup, no serialization. The lock is the queue's own, not the ledger's: the worker never
holds it while it serializes or accounts, so a request contends only with other requests and
with :meth:`Intake.take`, a few microseconds per chunk. (With the GIL handed between threads, a
worker preempted while holding a shared lock makes the request thread block, sleep and wake;
this split, with the batcher's leaner bookkeeping in the same change, took the export's share of
all-thread CPU on the ASGI harness from ~60 to ~28 µs a request.) Two things keep it from
filling up:

- **Coalescing.** A run is posted once, at its end, except a run still open after
  ``post_open_after`` (posted by the open-runs sweep, then patched at its end) and a manual
  ``RunTree.post()`` before ``end()``. A run's post is serialized later, from the live run
  (``RunTree.to_wire``), so while that post still waits here a patch of the same run adds
  nothing: the post will carry the end state. Such a patch
  is settled as ``coalesced`` and not queued. The ids of runs whose post waits here are kept
  under the queue's lock, and :meth:`Intake.take` removes them in the same critical section
  that takes the posts, so there are only two orders: the patch sees the id (the post has not
  been taken; whenever it is, the run has already ended, and the lock orders the two), or it
  does not (the batcher took the post, maybe while the run was still open) and the patch is
  queued as usual.
- **An honest size.** What a queued run costs is estimated from what the batcher actually
  serializes: a running average of bytes per operation times :data:`MEMORY_FACTOR` (a queued
  ``RunTree`` holds its Python objects, measured at about 2.5 times its JSON size), clamped to
  ``[MIN_ESTIMATE, MAX_ESTIMATE]``. The bound is checked against ``queued * estimate``, so a
  change of estimate re-prices the whole queue instead of leaving stale charges behind.

**When the queue is full** the caller serializes the run itself (:meth:`Intake.put_serialized`)
instead of dropping it: a producer faster than the worker (a tight loop of traced calls) then
pays ~10 µs per run on its own thread, which paces it to what the worker can take, and nothing
is lost while the byte bound holds (serialized bytes are ~2.5x smaller than a queued run).
Only beyond the bound is an operation dropped, counted. This is the one case where the request
path serializes; it never does I/O.

Unserialized runs get at most :data:`QUEUE_SHARE` of the exporter's byte bound, and never
the last :data:`WORKING_RESERVE` bytes of it (though at least an eighth of it): the rest is
for batches waiting for the sender and the worker's own working memory (allocator slack,
buffers, a replayed segment), which measured ~5-6 MiB of RSS when a tight loop keeps the
worker saturated (plus up to an eighth of the bound for batches waiting for a stuck
sender). Serialized bytes held in memory count against the same bound.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tracestitch.export.accounting import Ledger
    from tracestitch.export.wire import WireOp
    from tracestitch.exporter import Op
    from tracestitch.run_tree import RunTree

__all__ = ["FULL", "MAX_ESTIMATE", "MEMORY_FACTOR", "MIN_ESTIMATE", "QUEUE_SHARE", "Intake"]

#: Why :meth:`Intake.put` refused an operation when the caller may serialize it instead.
FULL = "queue full"

#: Memory held by a queued run per byte of its serialized JSON (measured as RSS on
#: ``@traceable`` runs: ~1.5 KB resident for ~0.6 KB of JSON).
MEMORY_FACTOR = 2.5
#: The share of the byte bound that unserialized runs may take.
QUEUE_SHARE = 0.5
#: RSS the worker needs beyond its queue when saturated (measured, see the docstring).
WORKING_RESERVE = 8 << 20
#: Memory a caller-serialized operation holds beyond its bytes (the objects around them).
READY_OVERHEAD = 256
MIN_ESTIMATE = 256
MAX_ESTIMATE = 1 << 20
#: Weight of the newest sample in the running average.
_SMOOTHING = 1 / 16


class Intake:
    """See the module docstring. ``max_bytes`` bounds estimated queued bytes plus the ledger's
    serialized ``mem_bytes``. ``submitted`` counts every operation ever offered (queued,
    coalesced or refused), under the queue's lock."""

    def __init__(self, ledger: Ledger, max_bytes: int, initial_estimate: int) -> None:
        self._ledger = ledger
        self._lock = threading.Lock()
        self.submitted = 0
        self.max_bytes = max_bytes
        self._queue_max = max(
            max_bytes // 8, min(int(max_bytes * QUEUE_SHARE), max_bytes - WORKING_RESERVE)
        )
        self.estimate = max(MIN_ESTIMATE, min(MAX_ESTIMATE, initial_estimate))
        # Queued operations, oldest first (public so the exporter can len() it cheaply).
        self.items: deque[tuple[Op, RunTree]] = deque()
        # id() of each run whose post is queued. Identity, not run id: coalescing relies on
        # *this object* being serialized later, and the queue keeps it alive (so its id()
        # cannot be reused) until take() removes it from here.
        self._posts: set[int] = set()
        # Operations their caller serialized because the queue was full: (op, run id text, ops,
        # bytes), already counted in the ledger's mem_bytes.
        self.ready: deque[tuple[Op, str, list[WireOp], int]] = deque()
        # What they hold, charged against half the queue's share (on top of it: a full queue is
        # why they are here) and against the whole bound like any serialized bytes.
        self.ready_bytes = 0

    def __len__(self) -> int:
        return len(self.items) + len(self.ready)

    @property
    def queued_bytes(self) -> int:
        return len(self.items) * self.estimate

    def put(self, op: Op, run: RunTree) -> str | None:
        """Queue one operation; ``None`` if it was queued or coalesced, else why it was not
        (the caller drops it, counted). Counts it as submitted either way."""
        key = id(run)
        ledger = self._ledger
        with self._lock:
            self.submitted += 1
            if op == "patch" and key in self._posts:
                coalesced = True
            else:
                coalesced = False
                if ledger.closed:
                    return "exporter closed"
                # mem_bytes is the worker's, read without its lock: an int, at most a chunk stale.
                queued = (len(self.items) + 1) * self.estimate
                if queued > self._queue_max or queued + ledger.mem_bytes > self.max_bytes:
                    return FULL
                self.items.append((op, run))
                if op == "post":
                    self._posts.add(key)
        if coalesced:  # rare: a run posted open and patched while its post still waits here
            with ledger.lock:
                ledger.settle(1, "coalesced")
        return None

    def put_serialized(self, op: Op, run_key: str, ops: list[WireOp]) -> bool:
        """Queue ``ops`` serialized by their caller (see the module docstring); ``False`` when
        even their bytes do not fit the bound (the caller drops them, counted)."""
        # The bytes plus the objects holding them (WireOp, list, tuple: ~250 bytes by getsizeof).
        size = sum(o.size for o in ops) + READY_OVERHEAD
        ledger = self._ledger
        with ledger.lock:
            if (
                ledger.closed
                or self.ready_bytes + size > self._queue_max // 2
                or self.queued_bytes + ledger.mem_bytes + size > self.max_bytes
            ):
                return False
            ledger.hold(size)
            self.ready_bytes += size
            self.ready.append((op, run_key, ops, size))
        return True

    def pop_ready(self) -> tuple[Op, str, list[WireOp], int]:
        """The oldest caller-serialized operation and its bytes, which the ledger still counts;
        the object overhead it was charged while waiting here is given back now, so from here
        on its size is its ops' sizes, as for any serialized op."""
        with self._ledger.lock:
            op, run_key, ops, charged = self.ready.popleft()
            self.ready_bytes -= charged
            self._ledger.release(READY_OVERHEAD)
        return op, run_key, ops, charged - READY_OVERHEAD

    def take(self, limit: int) -> list[tuple[Op, RunTree]]:
        """Up to ``limit`` operations, oldest first; their posts can no longer absorb a patch."""
        with self._lock:
            items = self.items
            chunk = [items.popleft() for _ in range(min(limit, len(items)))]
            posts = self._posts
            if posts:
                for op, run in chunk:
                    if op == "post":
                        posts.discard(id(run))
        return chunk

    def observe(self, serialized_bytes: int, ops: int) -> None:
        """Fold what ``ops`` operations really serialized to into the estimate (batcher only;
        an int store, so the request path reads it without the lock)."""
        if ops <= 0:
            return
        sample = serialized_bytes / ops * MEMORY_FACTOR
        updated = self.estimate + (sample - self.estimate) * min(1.0, _SMOOTHING * ops)
        self.estimate = int(max(MIN_ESTIMATE, min(MAX_ESTIMATE, updated)))

    def clear(self) -> None:
        """Forget everything (after a fork: the queue is the parent's)."""
        with self._lock:
            self.items.clear()
            self._posts.clear()
            self.ready.clear()
            self.ready_bytes = 0

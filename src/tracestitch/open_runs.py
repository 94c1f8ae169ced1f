"""Runs still open, so that a long one shows up before it ends.

Traced calls, server requests and client calls hand their run to the exporter once, complete,
when it ends: half the export work of a post at start plus a patch at end. The price would be
that a run open for long (a slow LLM call, a hung upstream) stays invisible until it ends, or
for good if it never does. So those call sites register their run here when it starts
(:func:`watch`) and ship it through here when it ends (:func:`ship`), and the export worker
calls :func:`sweep` about once a second: a run open longer than the threshold is posted as it
is, and at its end it goes out as a patch instead of a post.

The cost on the request path is a weak reference and a dict store at start and a dict pop at
end (the lock only for a run a sweep has claimed). At most :data:`MAX_WATCHED` runs are watched
at once; runs beyond that are shipped at their end as usual. The sweep is process-wide: any
exporter's worker that sweeps posts every watched run that is old enough, to that run's own
exporter.

Example::

    watch(run)        # at start
    ...
    ship(run)         # at end: run.post(), or run.patch() if a sweep posted it open
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import TYPE_CHECKING

from tracestitch import ids
from tracestitch._guard import report
from tracestitch.exporter import get_exporter

if TYPE_CHECKING:
    from tracestitch.run_tree import RunTree

__all__ = ["MAX_WATCHED", "clear", "ship", "sweep", "watch", "watched"]

#: Runs watched at once (open, plus swept and not yet ended); beyond it a run is not watched.
MAX_WATCHED = 10_000

_lock = threading.Lock()
# id(run) -> weak reference, for open runs not yet posted; id(run) -> weak reference, for runs a
# sweep posted while open (their end is a patch). Weak, so a run abandoned without ending (a
# generator never finished, an exception between start and ship) is still collected; every
# read checks the referent is the very run asked about, since a dead run's id() can be reused.
_open: dict[int, weakref.ref[RunTree]] = {}
_posted: dict[int, weakref.ref[RunTree]] = {}
_exporter_asked = False


def watch(run: RunTree) -> None:
    """Register a run that has just started (a single dict store: atomic under the GIL, and
    :func:`sweep` copies the dict before reading it)."""
    if not _exporter_asked:
        _ask_for_exporter()
    if len(_open) + len(_posted) < MAX_WATCHED:
        _open[id(run)] = weakref.ref(run)


def _ask_for_exporter() -> None:
    # The sweep runs on the exporter's worker, and an exporter described by the environment is
    # built on first use: at the end of the first run, too late if that run hangs. Asking for
    # it (and starting it) at the first start instead costs that start what the first end
    # would have paid (the build itself happens on a thread; see export/deferred.py).
    global _exporter_asked
    _exporter_asked = True
    start = getattr(get_exporter(), "start", None)
    if callable(start):
        start()


def ship(run: RunTree) -> None:
    """Hand an ended run to its exporter: a post, or a patch when a sweep already posted it
    while it was open. A run is claimed by one side only, the end or a sweep (each pops it
    from the watched runs); a sweep holds the lock from its claim until it has posted the run,
    and an end that finds its run claimed waits for that lock: it can neither post a run a
    sweep posts too nor overtake the sweep's post with its patch."""
    key = id(run)
    # Claimed here, by one atomic pop, before any sweep claimed it: no sweep can post it now,
    # so it is posted whole without the lock (every short run). Else a sweep may hold it:
    # the lock waits until that sweep has posted it and said so in _posted.
    ref = _open.pop(key, None)
    if ref is not None and ref() is run:
        run.post()
        return
    with _lock:
        ref = _posted.pop(key, None)
        posted = ref is not None and ref() is run
    if posted:
        run.patch()
    else:
        run.post()


def sweep(min_age_s: float, now_us: int | None = None) -> int:
    """Post every watched run that has been open for ``min_age_s`` seconds or more; returns
    how many the exporter kept. Called by the export worker."""
    now = ids.now_micros() if now_us is None else now_us
    oldest_start = now - int(min_age_s * 1_000_000)
    kept = 0
    with _lock:
        for key, ref in list(_open.items()):
            run = ref()
            if run is None:  # abandoned and collected
                _open.pop(key, None)
                continue
            if run.start_time_us > oldest_start:
                continue
            if _open.pop(key, None) is None:
                continue  # its end claimed it meanwhile (ship() pops without the lock)
            # An ended run is about to be shipped by its end (after this lock): as a post. (A
            # caller's stand-in is never here: only runs this process starts are watched.)
            if run.end_time_us is not None or not run.tracing_enabled:
                continue
            if _post_open(run):
                _posted[key] = ref
                kept += 1
            # else the exporter did not keep it: no longer watched, its end posts it whole.
        for key, ref in list(_posted.items()):
            if ref() is None:
                del _posted[key]
    return kept


def _post_open(run: RunTree) -> bool:
    """Submit the open run's post (under :data:`_lock`; O(1), or ~10 µs when the exporter's
    queue is full); whether the exporter kept it. Listeners are not told: they see runs end."""
    target = run.exporter if run.exporter is not None else get_exporter()
    try:
        return target.submit("post", run) is not False
    except Exception as exc:
        report("open_runs.sweep", exc)
        return False


def watched() -> int:
    """How many runs are watched now (open, or posted open and not yet ended; a run collected
    without ending counts until the next sweep)."""
    return len(_open) + len(_posted)


def clear() -> None:
    """Forget every watched run (tests; after a fork the parent's runs are not ours)."""
    global _lock, _exporter_asked
    _lock = threading.Lock()  # a fork may have copied it held
    _exporter_asked = False
    _open.clear()
    _posted.clear()


if hasattr(os, "register_at_fork"):
    # A forked child must not post its parent's in-flight runs as its own open runs.
    os.register_at_fork(after_in_child=clear)

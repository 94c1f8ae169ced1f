"""Runs still open, so that a long one shows up before it ends.

Traced calls, server requests and client calls hand their run to the exporter once, complete,
when it ends: half the export work of a post at start plus a patch at end. The price would be
that a run open for long (a slow LLM call, a hung upstream) stays invisible until it ends, or
for good if it never does. So those call sites register their run here when it starts
(:func:`watch`) and ship it through here when it ends (:func:`ship`), and the export worker
calls :func:`sweep` about once a second: a run open longer than the threshold is posted as it
is, and at its end it goes out as a patch instead of a post.

The cost on the request path is a dict store at start and one uncontended lock at end. At most
:data:`MAX_WATCHED` runs are watched at once; runs beyond that are shipped at their end as
usual.

Example::

    watch(run)        # at start
    ...
    ship(run)         # at end: run.post(), or run.patch() if a sweep posted it open
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

from tracestitch import ids
from tracestitch.exporter import get_exporter

if TYPE_CHECKING:
    from tracestitch.run_tree import RunTree

__all__ = ["MAX_WATCHED", "clear", "ship", "sweep", "watch", "watched"]

#: Runs watched at once (open, plus swept and not yet ended); beyond it a run is not watched.
MAX_WATCHED = 10_000

_lock = threading.Lock()
# id(run) -> run, for open runs not yet posted. Holding the run keeps its id() from being
# reused while it is here.
_open: dict[int, RunTree] = {}
# id(run) -> run, for runs a sweep posted while open: their end is a patch. Held for the same
# reason, and checked by identity.
_posted: dict[int, RunTree] = {}


_exporter_asked = False


def watch(run: RunTree) -> None:
    """Register a run that has just started (a single dict store: atomic under the GIL, and
    :func:`sweep` copies the dict before reading it)."""
    if not _exporter_asked:
        _ask_for_exporter()
    if len(_open) + len(_posted) < MAX_WATCHED:
        _open[id(run)] = run


def _ask_for_exporter() -> None:
    # The sweep runs on the exporter's worker, and an exporter described by the environment is
    # built on first use: at the end of the first run, too late if that run hangs. Asking for
    # it at the first start instead costs that start what the first end would have paid (the
    # build itself happens on a thread; see export/deferred.py).
    global _exporter_asked
    _exporter_asked = True
    get_exporter()


def ship(run: RunTree) -> None:
    """Hand an ended run to its exporter: a post, or a patch when a sweep already posted it
    while it was open. Under the lock, so a sweep and the end cannot both post it."""
    key = id(run)
    with _lock:
        _open.pop(key, None)
        posted = _posted.get(key) is run
        if posted:
            del _posted[key]
    if posted:
        run.patch()
    else:
        run.post()


def sweep(min_age_s: float, now_us: int | None = None) -> int:
    """Post every watched run that has been open for ``min_age_s`` seconds or more; returns
    how many. Called by the export worker."""
    now = ids.now_micros() if now_us is None else now_us
    oldest_start = now - int(min_age_s * 1_000_000)
    due: list[RunTree] = []
    with _lock:
        for key, run in list(_open.items()):
            if run.start_time_us <= oldest_start:
                del _open[key]
                if run.end_time_us is None:
                    _posted[key] = run
                    due.append(run)
                # else it ended and its end is about to ship it (after this lock): a post.
    for run in due:
        run.post()  # serialized later by the worker, with whatever the run holds by then
    return len(due)


def watched() -> int:
    """How many runs are watched now (open, or posted open and not yet ended)."""
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

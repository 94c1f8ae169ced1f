"""SIGTERM: deliver the runs before the process goes, without changing how it goes.

A process ended by SIGTERM under the default disposition runs no ``atexit`` hook, so the
exporter's exit flush (:func:`tracestitch.exporter.shutdown_all`) never runs. uvicorn makes that
the ordinary way a service stops: on SIGTERM it drains its connections, runs the ASGI lifespan
shutdown, restores the handlers it found at start and raises the signal again. The ASGI
middleware flushes at lifespan shutdown, but an app with no lifespan (Django's ASGI handler,
``--lifespan off``) lost every run of its last batch interval and of every request answered
during the drain; so does a script or a WSGI server that leaves SIGTERM at its default.

:func:`install` (called where export is configured: ``import tracestitch`` with a destination
in the environment, or ``configure()``) puts one handler in front of the one it finds, in the
main thread only, and never where it would change what the signal does:

- **The default (the process dies).** The handler flushes (at most ``shutdown_timeout``),
  then shuts the exporters down as ``atexit`` would (``TRACESTITCH_SHUTDOWN_MAX`` while the
  endpoint keeps taking batches; at once if the flush ran out of time), then restores the
  default and raises the signal again: the exit status is still "killed by SIGTERM". This is
  also where uvicorn's re-raised signal lands when tracestitch was imported before uvicorn
  started (``uvicorn.run(app)``): uvicorn restores this handler, not the default.
- **A Python handler (uvicorn's, gunicorn's, the app's own).** The handler flushes what has
  ended so far (at most ``shutdown_timeout``), marks the process as stopping, then calls the
  handler it found, with the same arguments, every time. uvicorn's CLI imports the app after
  taking SIGTERM, so this is the usual case there; and since uvicorn later restores the
  *default* and re-raises, the runs of requests answered during its drain are flushed by the
  middleware as each request finishes (:func:`flush_if_stopping`) instead.
- **Ignored, or a handler set outside Python.** Left alone: that is the host's choice.

Why a handler rather than something else: nothing else runs between uvicorn's drain and its
re-raise for an app without a lifespan, and the default disposition runs no Python code at all.
Chaining keeps the host's handler in charge of what the signal means; ``getsignal`` then shows
ours, which is how a server that saves and restores handlers (uvicorn) hands the re-raised
signal back to us. SIGINT needs none of this: its default raises ``KeyboardInterrupt``, so the
process exits through ``atexit`` (uvicorn re-raises it the same way).

The flush runs on a thread the handler waits for, with a bound: the signal may arrive while
the main thread holds a lock the exporter needs, and a handler must never hang the process.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from tracestitch._guard import report
from tracestitch.exporter import exit_bound, flush_all, flush_bound, shutdown_all

__all__ = ["flush_if_stopping", "install", "stopping"]

# When the first SIGTERM reached a chained handler (monotonic), else None.
_stopped_at: float | None = None
# Set once a flush while stopping ran out of time: the endpoint is not taking runs, so later
# flushes return at once and a dead collector holds the shutdown for one bound, not one per
# request.
_stalled = False


def stopping() -> bool:
    """Whether the process got SIGTERM and is still draining (its server finishing the
    requests in flight): then each finished request's runs should be flushed at once."""
    return _stopped_at is not None


def flush_if_stopping() -> bool:
    """While :func:`stopping`, flush every exporter (at most its ``shutdown_timeout``; at
    once after one flush found the endpoint not taking runs); else return at once. Blocks:
    call it on a thread, after the response went out. ``True`` when nothing is left."""
    global _stalled
    if _stopped_at is None:
        return True
    done = flush_all(0.0 if _stalled else None)
    if not done:
        _stalled = True
    return done


def install() -> bool:
    """Put the SIGTERM handler described above in front of the current one, once; ``False``
    where it does not (not the main thread, no SIGTERM, ignored or foreign, already ours)."""
    sigterm = getattr(signal, "SIGTERM", None)
    if sigterm is None or threading.current_thread() is not threading.main_thread():
        return False
    try:
        current = signal.getsignal(sigterm)
        if current is signal.SIG_IGN or current is None or isinstance(current, _Handler):
            return False
        if current is not signal.SIG_DFL and not callable(current):
            return False
        signal.signal(sigterm, _Handler(current))
    except (ValueError, OSError, RuntimeError) as exc:  # an embedded interpreter, a sandbox
        report("sigterm.install", exc)
        return False
    return True


class _Handler:
    """The installed handler; ``previous`` is what it found (``SIG_DFL`` or a callable)."""

    __slots__ = ("previous",)

    def __init__(self, previous: Callable[[int, FrameType | None], Any] | int) -> None:
        self.previous = previous

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        global _stopped_at
        previous = self.previous
        if not callable(previous):  # the default: the process dies now, as it would have
            _bounded(_deliver_and_close, flush_bound() + exit_bound())
            signal.signal(signum, previous)
            signal.raise_signal(signum)
            return
        if _stopped_at is None:  # a second SIGTERM (a forced stop) is not held up again
            _stopped_at = time.monotonic()
            _bounded(flush_if_stopping, flush_bound() + 1.0)
        previous(signum, frame)


def _deliver_and_close() -> None:
    """Flush with the exporters still open, then shut them down. A server with no drain
    (werkzeug) has request threads still running: a run that ends just after its response was
    written (a WSGI body's close) is taken during the flush, where a closed exporter would
    refuse it. When the flush ran out of time the endpoint is not keeping up, so the shutdown
    spools or drops the rest at once: a dead collector costs one ``shutdown_timeout``."""
    delivered = flush_all()
    shutdown_all(None if delivered else 0.0)


def _bounded(work: Callable[[], Any], bound: float) -> None:
    """Run ``work`` on a thread and wait for it ``bound`` seconds at most."""

    def run() -> None:
        try:
            work()
        except Exception as exc:
            report("sigterm.flush", exc)

    thread = threading.Thread(target=run, name="tracestitch-sigterm", daemon=True)
    try:
        thread.start()
        thread.join(bound)
    except Exception as exc:  # a thread that cannot start: never break the shutdown
        report("sigterm.flush", exc)

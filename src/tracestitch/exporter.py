"""Where finished runs go: the ``Exporter`` protocol and the process-wide exporter slot.

The core only hands runs over (``RunTree.post``/``patch`` call :func:`dispatch`); shipping them
out of the process is ``tracestitch.export``'s job, which installs a real exporter with
:func:`set_exporter`. Until one is configured the slot holds a :class:`NoopExporter`, so an
unconfigured process keeps nothing in memory.

Run listeners see every *finished* run handed to any exporter in the process, whatever its
exporter: that is how ``RunCollector`` used as a context manager captures runs from all threads
and tasks, including those of in-process "services" that each have their own exporter.

**At exit** one hook, registered when this module is imported (so before any run exists),
shuts down the slot's exporter and every exporter passed to :func:`shutdown_at_exit`, all at
once, so the exit waits for the slowest of them rather than their sum. A process that makes its
runs and exits at once therefore still delivers them (or spools them) within its exporters'
shutdown timeout, even when the exporter is still being built from the environment.
"""

from __future__ import annotations

import atexit
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from tracestitch._guard import guard, report

if TYPE_CHECKING:
    from tracestitch.run_tree import RunTree

__all__ = [
    "LOCAL_ONLY",
    "Exporter",
    "NoopExporter",
    "Op",
    "add_listener",
    "dispatch",
    "exit_bound",
    "flush_all",
    "flush_bound",
    "get_exporter",
    "remove_listener",
    "replace_exporter",
    "set_exporter",
    "set_exporter_factory",
    "shutdown_all",
    "shutdown_at_exit",
]

Op = Literal["post", "patch"]


@runtime_checkable
class Exporter(Protocol):
    """Receives runs from ``RunTree.post``/``patch``.

    ``submit`` is called on the request path: it must be O(1), never block and never raise.
    The exporter reads the run's fields later (on its own worker), via ``RunTree.to_wire``; a
    ``post`` of a run that has since ended therefore already carries its end state.
    ``submit`` may return ``False`` to say it did not keep the run (dropped, counted);
    anything else counts as kept (``open_runs`` relies on it).
    """

    def submit(self, op: Op, run: RunTree) -> bool | None: ...

    def flush(self, timeout: float | None = None) -> bool: ...

    def shutdown(self, timeout: float | None = None) -> bool: ...


class NoopExporter:
    """Drops every run: the default until an exporter is configured."""

    def submit(self, op: Op, run: RunTree) -> None:
        return None

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def shutdown(self, timeout: float | None = None) -> bool:
        return True

    def __repr__(self) -> str:
        return "NoopExporter()"


#: The exporter of runs made in ``"local"`` mode (a capture while tracing is off, or
#: ``tracing_context(enabled="local")``): they reach the listeners, never a destination.
LOCAL_ONLY: Exporter = NoopExporter()

_exporter: Exporter = NoopExporter()
_exporter_factory: Callable[[], Exporter] | None = None
_factory_lock = threading.Lock()


def set_exporter(exporter: Exporter | None) -> Exporter:
    """Install the process-wide exporter (``None`` restores the no-op); returns the previous one."""
    global _exporter, _exporter_factory
    previous = _exporter
    _exporter = exporter if exporter is not None else NoopExporter()
    _exporter_factory = None
    return previous


def set_exporter_factory(factory: Callable[[], Exporter] | None) -> None:
    """Build the exporter lazily on first use (so importing tracestitch starts no thread)."""
    global _exporter_factory
    _exporter_factory = factory


def replace_exporter(expected: Exporter, new: Exporter) -> bool:
    """Install ``new`` only if the slot still holds ``expected`` (an exporter built in the
    background takes the place of its stand-in, unless the app installed another meanwhile)."""
    global _exporter
    with _factory_lock:
        if _exporter is not expected or _exporter_factory is not None:
            return False
        _exporter = new
        return True


def get_exporter() -> Exporter:
    """The process-wide exporter; one registered lazily from the environment is built on
    this first call."""
    global _exporter, _exporter_factory
    factory = _exporter_factory
    if factory is not None:
        with _factory_lock:
            if _exporter_factory is factory:
                with guard("exporter.factory"):
                    _exporter = factory()
                _exporter_factory = None
    return _exporter


# Listeners: a tuple swapped atomically, so dispatch reads it without a lock.
_listeners: tuple[Callable[[RunTree], None], ...] = ()
_listeners_lock = threading.Lock()


def add_listener(callback: Callable[[RunTree], None]) -> None:
    """Call ``callback`` with every run as it is handed to export (local captures use it)."""
    global _listeners
    with _listeners_lock:
        _listeners = (*_listeners, callback)


def remove_listener(callback: Callable[[RunTree], None]) -> None:
    """Stop calling ``callback`` (compared with ``==``)."""
    global _listeners
    with _listeners_lock:
        # ==, not `is`: a bound method (RunCollector._persist_run) is a new object on every
        # attribute access, so identity never matches and the listener would leak.
        _listeners = tuple(cb for cb in _listeners if cb != callback)


def dispatch(op: Op, run: RunTree, exporter: Exporter | None = None) -> None:
    """Hand ``run`` to ``exporter`` (default: the process-wide one) and to the listeners."""
    # try/except rather than guard(): this runs twice per traced call, and a context manager
    # costs more than the submit itself.
    if exporter is None:
        exporter = _exporter if _exporter_factory is None else get_exporter()
    try:
        exporter.submit(op, run)
    except Exception as exc:
        report("exporter.submit", exc)
    listeners = _listeners
    if listeners and run.end_time_us is not None:
        for callback in listeners:
            try:
                callback(run)
            except Exception as exc:
                report("exporter.listener", exc)


# ---------------------------------------------------------------------- exit

# Exporters to shut down at exit besides the slot's: every BatchExporter (one built for a
# single run, or by configure(install=False), is in no slot) and stand-ins still building.
_at_exit: weakref.WeakSet[Any] = weakref.WeakSet()


def shutdown_at_exit(exporter: Exporter) -> None:
    """Have ``exporter`` shut down (delivering or spooling what it holds) when the process
    exits, alongside the process-wide one. Held weakly: a dropped exporter is forgotten."""
    _at_exit.add(exporter)


def shutdown_all(timeout: float | None = None) -> bool:
    """Shut down the process-wide exporter and every one registered with
    :func:`shutdown_at_exit`, concurrently; each gets ``timeout`` (default: its own
    policy: at most ``shutdown_max``, less once the sink stalls). Returns whether all of them
    delivered everything. Runs at exit."""
    # An exporter still being built from the environment (a DeferredExporter: it has
    # ``wait``) hands the runs it holds to the real one once built, and the real one registers
    # here as it is made: shut nothing down before that, or the real one would refuse them as
    # closed. The wait is bounded by the exporter's own ``build_wait``.
    for target in [_exporter, *list(_at_exit)]:
        wait = getattr(target, "wait", None)
        if callable(wait):
            wait(timeout if timeout is not None else _own_bound(target, "build_wait"))
    targets: list[Exporter] = [_exporter]
    targets.extend(e for e in list(_at_exit) if e is not _exporter)
    results: list[bool] = []

    def close(target: Exporter) -> None:
        try:
            results.append(bool(target.shutdown(timeout)))
        except Exception as exc:
            results.append(False)
            report("exporter.shutdown", exc)

    if len(targets) == 1:
        close(targets[0])
        return all(results)
    threads = [
        threading.Thread(target=close, args=(t,), name="tracestitch-shutdown", daemon=True)
        for t in targets
    ]
    for thread in threads:
        thread.start()
    # Each shutdown bounds itself; the join only guards against one that does not.
    for thread, target in zip(threads, targets, strict=True):
        bound = _own_bound(target, "shutdown_timeout", "shutdown_max", "build_wait")
        thread.join((timeout if timeout is not None else bound) + 1.0)
    return len(results) == len(threads) and all(results)


def flush_all(timeout: float | None = None) -> bool:
    """Flush the process-wide exporter and every one registered with :func:`shutdown_at_exit`
    (they stay open), all within ``timeout`` seconds together (default: :func:`flush_bound`).
    Returns whether everything handed on so far went out. What a
    process that is asked to stop, but is not exiting yet, calls (see :mod:`tracestitch.sigterm`).
    """
    targets = _targets()
    if timeout is None:
        timeout = flush_bound()
    deadline = time.monotonic() + timeout
    done = True
    for target in targets:
        try:
            done = bool(target.flush(max(0.0, deadline - time.monotonic()))) and done
        except Exception as exc:
            done = False
            report("exporter.flush", exc)
    return done


def flush_bound() -> float:
    """How long :func:`flush_all` waits with no timeout given (seconds): the longest of the
    exporters' ``shutdown_timeout`` (``TRACESTITCH_SHUTDOWN_TIMEOUT``)."""
    return max((_own_bound(t, "shutdown_timeout") for t in _targets()), default=0.0)


def exit_bound() -> float:
    """The longest :func:`shutdown_all` may take with no timeout given (seconds): the longest
    of the exporters' own bounds, plus the second its guard allows."""
    bounds = [_own_bound(t, "shutdown_timeout", "shutdown_max", "build_wait") for t in _targets()]
    return max(bounds, default=0.0) + 1.0


def _targets() -> list[Exporter]:
    """The slot's exporter (not built if it is still a factory: no run was made) and every
    one registered for exit, each once."""
    slot = _exporter
    return [slot, *(e for e in list(_at_exit) if e is not slot)]


def _own_bound(target: Exporter, *names: str) -> float:
    """The longest of ``target``'s durations ``names`` (seconds), as far as it has them."""
    bounds = [getattr(target, name, None) for name in names]
    return max([b for b in bounds if isinstance(b, float | int)], default=2.0)


def _shutdown_at_exit() -> None:
    try:
        shutdown_all()
    except Exception:  # never turn an exit into a traceback
        return


atexit.register(_shutdown_at_exit)

"""The instrumentation API: what an integration needs from tracestitch, and all it uses.

A server middleware, an HTTP client hook, a task-queue hook and ``@traceable`` itself do the
same four things with a run, and they do them through this module only:

- **start** one (:func:`start_run`) under a parent: the current run (the default), a
  ``RunTree``, the caller's run read from incoming headers (:func:`remote_parent` gives a
  stand-in ``RunTree``; :func:`tracestitch.propagation.extract` the bare
  :class:`~tracestitch.propagation.RemoteParent`, which a server's request path passes as it
  is), or ``None`` for a new trace. It answers ``None`` when nothing is to be recorded here: tracing
  is off in this context (see :func:`tracing_on`), or the parent's trace is not recorded.
- **activate** it as the current run while the instrumented code runs (:class:`activate`
  as a context manager; :func:`attach` / :func:`detach` with a token where the code that
  runs is not one block, as a WSGI response iterated by the server);
- **finish** it (:func:`finish_run`, with outputs or the error), which hands it on to export;
- keep every internal error away from the host code (:func:`report`, in ``except`` blocks),
  and :func:`flush` what is still queued when the host shuts down (:func:`flush_if_stopping`
  after each request once SIGTERM came, for servers that give the app no shutdown hook).

A run that enters a service (a request, a task execution) names that service in its metadata
(``{SERVICE_KEY: service_name(app)}``, unless the user named it): its children inherit it, and
it never travels downstream.

Headers travel through carriers (:mod:`tracestitch.carriers`): :func:`remote_parent` reads the
caller's run from any of them and :func:`inject` writes the current one for the next service.

A Celery hook, say, is then::

    def on_task_prerun(task_id, task, **_):
        run = start_run(task.name, "chain", parent=remote_parent(task.request.headers or {}))
        if run is not None:
            runs[task_id] = (run, attach(run))

    def on_task_postrun(task_id, retval, **_):
        run, token = runs.pop(task_id, (None, None))
        if run is not None:
            detach(token)
            finish_run(run, {"output": retval})

The local capture mode (``tracing_context(enabled="local")``, ``RunCollector``) is respected:
runs started while it is on are seen by local listeners and never exported.
"""

from __future__ import annotations

import enum
import os
import sys
from collections.abc import Mapping, Sequence
from contextvars import Token
from types import TracebackType
from typing import Any, Final, Literal

from tracestitch import ids
from tracestitch._guard import report
from tracestitch.exporter import LOCAL_ONLY, get_exporter
from tracestitch.open_runs import ship, watch
from tracestitch.propagation import RemoteParent, inject
from tracestitch.propagation.baggage import SERVICE_KEY
from tracestitch.run_context import LOCAL, _config, _current_run, tracing_enabled, tracing_mode
from tracestitch.run_tree import RunTree, new_run
from tracestitch.settings import read_env
from tracestitch.sigterm import flush_if_stopping, stopping

__all__ = [
    "CURRENT",
    "SERVICE_KEY",
    "Parent",
    "activate",
    "attach",
    "current_run",
    "detach",
    "finish_run",
    "flush",
    "flush_if_stopping",
    "inject",
    "remote_parent",
    "report",
    "service_name",
    "start_run",
    "stopping",
    "tracing_on",
]


class Parent(enum.Enum):
    """Parents named rather than given (an enum, so that type checkers know the sentinel)."""

    #: The run current in this context, or a new trace if there is none.
    CURRENT = "current"


#: ``start_run``'s default parent: the run current in this context, or a new trace if none.
CURRENT: Final = Parent.CURRENT

#: The run new runs in this context attach to, if any.
current_run = _current_run.get
#: Make ``run`` (or ``None``: no run) current in this context; returns the token for
#: :func:`detach`. Pair every ``attach`` with a ``detach`` in a ``finally``.
attach = _current_run.set
#: Restore the current run that was there before the :func:`attach` that gave ``token``.
detach = _current_run.reset
#: Read the caller's run from incoming headers (any carrier shape; untrusted, never raises):
#: a stand-in ``RunTree`` to pass as ``start_run(parent=...)``, never exported itself, or
#: ``None``. ``trust`` says what the caller's baggage may set here (see
#: :func:`tracestitch.propagation.extract`).
remote_parent = RunTree.from_headers


#: Whether runs are recorded in this context at all (exported, or only captured locally:
#: ``tracing_context(enabled="local")``, an active ``RunCollector``).
tracing_on = tracing_enabled


class activate:
    """Make ``run`` the current run for a block, sync or async code alike::

    with activate(run):
        handler(request)
    """

    __slots__ = ("_run", "_token")

    def __init__(self, run: RunTree | None) -> None:
        self._run = run
        self._token: Token[RunTree | None] | None = None

    def __enter__(self) -> RunTree | None:
        self._token = _current_run.set(self._run)
        return self._run

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is not None:
            _current_run.reset(self._token)
            self._token = None


def start_run(
    name: str,
    run_type: str = "chain",
    parent: RunTree | RemoteParent | Literal[Parent.CURRENT] | None = CURRENT,
    inputs: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    tags: Sequence[str] | None = None,
    project_name: str | None = None,
    kind: str | None = None,
    new_id: tuple[ids.RunId, str, int] | None = None,
) -> RunTree | None:
    """A new run, started now and not yet handed to export (:func:`finish_run` does that), or
    ``None`` when nothing is recorded here (tracing off in this context, or a parent whose
    trace is not recorded: a sampled-out caller). Never raises (see :func:`report`).

    Metadata and tags set by an enclosing ``tracing_context`` are added, and a child inherits
    its parent's. ``kind`` is the run's role for exporters that have span kinds (OTLP):
    ``"server"``, ``"client"``, ``"producer"``, ``"consumer"``; it is not inherited.
    A run open for long is posted open meanwhile by the export worker (:mod:`.open_runs`).
    The arguments may be given in order (the request path of the built-in integrations does,
    to save the keyword matching); integrations are clearer with keywords.
    ``new_id``: for a new trace, its root's id as :func:`tracestitch.ids.new_run_id` drew it
    beforehand (to decide the trace's sampling by it, :mod:`tracestitch.sampling`).
    """
    try:
        config = _config.get()
        mode = tracing_mode(config)
        if mode is False:
            return None
        if parent is CURRENT:
            parent = _current_run.get()
        if config.metadata:
            metadata = {**config.metadata, **(metadata or {})}
        if config.tags:
            tags = [*config.tags, *(tags or ())]
        if isinstance(parent, RunTree):
            if not parent.tracing_enabled:
                return None
        elif isinstance(parent, RemoteParent):
            if not parent.sampled:
                return None
        else:
            parent = None
        run = new_run(name, run_type, parent, inputs, metadata, tags, project_name, new_id)
        if mode is LOCAL and run.exporter is None:
            run.exporter = LOCAL_ONLY  # and its children: they inherit it
        if kind is not None:
            # In extra, not metadata: metadata is inherited by children and sent downstream.
            run.extra = {"span_kind": kind}
        watch(run)
        return run
    except Exception as exc:  # the instrumented code runs on, untraced
        report("instrument.start_run", exc)
        return None


def finish_run(
    run: RunTree,
    outputs: Mapping[str, Any] | None = None,
    error: BaseException | str | None = None,
) -> None:
    """End ``run`` now (with ``outputs`` and/or ``error``, when given) and hand it to export,
    once and complete; a run already ended (by the instrumented code) is only handed on.
    Never raises (see :func:`report`)."""
    try:
        if run.end_time_us is None or outputs is not None or error is not None:
            run.end(outputs, error)
        ship(run)
    except Exception as exc:
        report("instrument.finish_run", exc)


def flush(timeout: float | None = None) -> bool:
    """Wait until the runs handed on so far are exported (at most ``timeout`` seconds):
    what an integration calls as its app or worker shuts down. ``True`` when all went out."""
    return get_exporter().flush(timeout)


def service_name(app: Any = None) -> str:
    """The name of the service this process runs, as its runs record it in
    ``metadata["service"]`` (:data:`SERVICE_KEY`; never sent downstream):
    ``TRACESTITCH_SERVICE_NAME`` / ``OTEL_SERVICE_NAME``, else ``app``'s own name (its
    ``title`` or ``name``: FastAPI's title, Flask's name), else the script's name. What an
    integration uses when its user names no service (``service=``)."""
    configured = read_env(os.environ, warn=False).service_name
    if configured:
        return configured
    for attr in ("title", "name"):
        value = getattr(app, attr, None)
        # FastAPI's default title and a module run as a script say nothing about the service.
        if isinstance(value, str) and value and value not in ("FastAPI", "__main__"):
            return value
    script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    script = os.path.splitext(script)[0]
    if script in ("", "-c", "__main__"):
        return "python"
    return script

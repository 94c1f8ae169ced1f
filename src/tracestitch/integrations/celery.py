"""Celery: a task joins the trace of the run that published it.

One line wires an app in (no class or method of Celery is replaced; Celery's documented
signals carry it)::

    from tracestitch.integrations.celery import instrument_celery

    instrument_celery(app)

- **Publishing** (``delay``, ``apply_async``, ``send_task``, canvas): the current run's trace
  headers (``langsmith-trace``, ``baggage``, ``traceparent``) go into the task message's
  headers. Outside any run nothing is added. Celery signals are process-wide and a publish
  does not say which app sent it, so once one app is instrumented, every publish in the
  process carries the current run.
- **Executing** (in the worker, for tasks of the instrumented app): one run per execution,
  named after the task, a child of the run that published it (a new trace when the message
  carried none, or carried one not to be believed: hostile headers get the same as none).
  The run is current while the task runs, so the task's own traced calls nest under it.
- **Retries** republish the message with the headers it came with, so every attempt is a
  sibling under the publishing run; ``extra["celery"]["attempt"]`` numbers them from 1. A
  retried attempt ends with the retry's reason as its error, a failed one with the exception
  and its traceback.
- ``countdown`` / ``eta``: the run starts when the worker executes the task (the ``eta`` is
  recorded), so the time it waited is the gap after the publishing run's start.
- The task's run names the worker's service in ``metadata["service"]`` (``service=``, else
  ``TRACESTITCH_SERVICE_NAME`` / ``OTEL_SERVICE_NAME``, else the app's ``main`` name), as a
  server middleware names its request runs; the runs made inside the task inherit it. An
  eager task, run inside a run of the caller's that names a service, keeps the caller's.
- Each prefork child flushes its runs as it shuts down (it exits without ``atexit``).

Nothing here can fail a task or a publish: an internal error is reported
(:func:`tracestitch.instrument.report`) and the task runs as if untraced.
"""

from __future__ import annotations

import types
from collections.abc import Collection, Mapping
from contextvars import Token
from dataclasses import dataclass
from typing import Any

try:
    from celery import Celery, signals
except ImportError as exc:  # pragma: no cover - exercised by the missing-extra test
    raise ImportError(
        "tracestitch.integrations.celery needs celery: pip install 'tracestitch[celery]'"
    ) from exc

from tracestitch import RunTree
from tracestitch.instrument import (
    SERVICE_KEY,
    attach,
    current_run,
    detach,
    finish_run,
    flush,
    inject,
    remote_parent,
    report,
    service_name,
    start_run,
)

__all__ = ["instrument_celery", "uninstrument_celery"]

#: How long a prefork child waits for its runs to go out as it shuts down.
_SHUTDOWN_FLUSH_S = 5.0


@dataclass
class _Attempt:
    """One execution in progress: its run, the token that made it current, and the parent
    the run was started under (a retry run inside its attempt is started under it too)."""

    run: RunTree | None
    token: Token[RunTree | None] | None
    parent: RunTree | None
    metadata: dict[str, Any] | None  # the service's name, or None: the parent's is kept
    error: BaseException | str | None = None


@dataclass(frozen=True)
class _Options:
    record_args: bool
    trust: bool | Collection[str]
    metadata: dict[str, Any]  # the worker's own facts: its service


# The apps instrumented and their options, and the executions in progress by task id (a list:
# older Celery versions run an eager retry inside the attempt that retried, under the same id).
_apps: dict[int, tuple[Celery, _Options]] = {}
_active: dict[str, list[_Attempt]] = {}
_UID = "tracestitch.integrations.celery"


def instrument_celery(
    app: Celery,
    *,
    service: str | None = None,
    record_args: bool = True,
    trust: bool | Collection[str] = True,
) -> Celery:
    """Trace ``app``'s tasks and carry the trace over their messages; returns ``app``.

    ``service``: the name a task's run records in ``metadata["service"]`` (default:
    ``TRACESTITCH_SERVICE_NAME`` / ``OTEL_SERVICE_NAME``, else ``app.main``).
    ``record_args``: record the task's ``args`` and ``kwargs`` as the run's inputs (turn off
    for tasks that receive secrets). ``trust``: what the publisher's baggage may set here
    (metadata, tags, project; :func:`tracestitch.propagation.extract`). Calling it again for
    the same app replaces the options; it connects each signal once.
    """
    # Celery names an app by its "main"; service_name reads an app's "name".
    name = service or service_name(types.SimpleNamespace(name=app.main))
    _apps[id(app)] = (app, _Options(record_args, trust, {SERVICE_KEY: name}))
    for signal, receiver in _receivers():
        signal.connect(receiver, weak=False, dispatch_uid=_UID)
    return app


def uninstrument_celery(app: Celery) -> None:
    """Stop tracing ``app`` (the signals are disconnected once no app is left)."""
    _apps.pop(id(app), None)
    if _apps:
        return
    for signal, _receiver in _receivers():
        signal.disconnect(dispatch_uid=_UID)


def _receivers() -> list[tuple[Any, Any]]:
    """Each Celery signal this module listens to, and its receiver."""
    return [
        (signals.before_task_publish, _on_publish),
        (signals.task_prerun, _on_prerun),
        (signals.task_failure, _on_failure),
        (signals.task_retry, _on_retry),
        (signals.task_postrun, _on_postrun),
        (signals.worker_process_shutdown, _on_process_shutdown),
    ]


def _on_publish(headers: dict[str, Any] | None = None, **_: Any) -> None:
    try:
        run = current_run()
        if run is None or not isinstance(headers, dict):
            return
        if headers.get("id") in _active:
            # The running task republishing itself (retry, replace): the message keeps the
            # headers it came with, so the next attempt is a sibling, not a child.
            return
        inject(run, headers)
    except Exception as exc:
        report("celery.publish", exc)


def _options(task: Any) -> _Options | None:
    entry = _apps.get(id(getattr(task, "app", None)))
    return entry[1] if entry is not None else None


def _on_prerun(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    try:
        options = _options(task)
        if options is None or task_id is None:
            return
        request = task.request
        stack = _active.setdefault(task_id, [])
        metadata: dict[str, Any] | None = options.metadata
        if stack:  # a retry run inside its attempt: a sibling of that attempt
            parent: RunTree | None = stack[-1].parent
            metadata = stack[-1].metadata
        else:
            headers = request.headers
            carrier = headers if isinstance(headers, Mapping) else {}
            parent = remote_parent(carrier, trust=options.trust)
            if parent is None:
                # Untraced or hostile headers: a new trace in a worker; under the caller's run
                # when the task runs eagerly in the caller's context (and in its service).
                parent = current_run()
                if parent is not None and SERVICE_KEY in parent.metadata:
                    metadata = None
        run = start_run(
            task.name,
            "chain",
            parent=parent,
            inputs=_inputs(request, options),
            metadata=metadata,
            kind="consumer",
        )
        if run is not None:
            run.extra["celery"] = _facts(task_id, request)
        token = attach(run) if run is not None else None
        stack.append(_Attempt(run, token, parent, metadata))
    except Exception as exc:
        report("celery.prerun", exc)


def _inputs(request: Any, options: _Options) -> dict[str, Any]:
    if not options.record_args:
        return {}
    return {"args": list(request.args or ()), "kwargs": dict(request.kwargs or {})}


def _facts(task_id: str, request: Any) -> dict[str, Any]:
    retries = request.retries or 0
    delivery = request.delivery_info or {}
    facts: dict[str, Any] = {"task_id": task_id, "attempt": retries + 1, "retries": retries}
    if delivery.get("routing_key"):
        facts["queue"] = delivery["routing_key"]
    if request.eta:
        facts["eta"] = str(request.eta)
    if request.hostname:
        facts["hostname"] = request.hostname
    return facts


def _top(task_id: str | None) -> _Attempt | None:
    stack = _active.get(task_id) if task_id is not None else None
    return stack[-1] if stack else None


def _on_failure(task_id: str | None = None, exception: Any = None, **_: Any) -> None:
    try:
        attempt = _top(task_id)
        if attempt is not None and isinstance(exception, BaseException):
            attempt.error = exception
    except Exception as exc:
        report("celery.failure", exc)


def _on_retry(request: Any = None, reason: Any = None, **_: Any) -> None:
    try:
        attempt = _top(getattr(request, "id", None))
        if attempt is not None:
            cause = getattr(reason, "exc", None)
            # The exception that made the task retry, with its traceback; else the reason.
            attempt.error = cause if isinstance(cause, BaseException) else f"Retry: {reason}"
    except Exception as exc:
        report("celery.retry", exc)


def _on_postrun(
    task_id: str | None = None, retval: Any = None, state: str | None = None, **_: Any
) -> None:
    try:
        stack = _active.get(task_id) if task_id is not None else None
        if not stack:
            return
        attempt = stack.pop()
        if not stack:
            del _active[task_id]  # type: ignore[arg-type]  # stack was found under it
        if attempt.token is not None:
            detach(attempt.token)
        if attempt.run is None:
            return
        outputs: dict[str, Any] = {"state": state}
        if attempt.error is None and state == "SUCCESS":
            outputs["output"] = retval
        finish_run(attempt.run, outputs, attempt.error or _state_error(state))
    except Exception as exc:
        report("celery.postrun", exc)


def _state_error(state: str | None) -> str | None:
    # A task that failed without a task_failure signal (a rejected or ignored state).
    return None if state in ("SUCCESS", "IGNORED", None) else f"Celery task state {state}"


def _on_process_shutdown(**_: Any) -> None:
    # A prefork child leaves with os._exit: atexit, and so the exporter's own flush, never runs.
    try:
        flush(_SHUTDOWN_FLUSH_S)
    except Exception as exc:
        report("celery.shutdown", exc)

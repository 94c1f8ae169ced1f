"""The current run and the tracing settings of the code running now: the public module.

The state (the two ``ContextVar`` s, the process defaults, the tracing mode) lives in
:mod:`tracestitch.run_context`, below :mod:`tracestitch.run_tree`; this module adds what needs
runs too, :func:`tracing_context` (whose ``parent`` may be incoming headers), and the helpers
that carry the context into threads.

asyncio tasks copy the context when they are created (``create_task``, ``TaskGroup``), and so
does ``asyncio.to_thread``, so concurrent requests are isolated and their work nested for free;
threads and ``loop.run_in_executor`` do not, hence :func:`contextual`,
:class:`ContextThreadPoolExecutor` and :func:`install_context_executor`.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from tracestitch.run_context import (  # this module sets them
    LOCAL,
    TracingConfig,
    TracingMode,
    _config,
    _current_run,
    capture_started,
    capture_stopped,
    current_config,
    default_project,
    get_current_run_tree,
    set_defaults,
    tracing_enabled,
    tracing_mode,
)
from tracestitch.run_tree import RunTree

if TYPE_CHECKING:
    import asyncio

__all__ = [
    "LOCAL",
    "ContextThreadPoolExecutor",
    "TracingConfig",
    "TracingMode",
    "capture_started",
    "capture_stopped",
    "contextual",
    "current_config",
    "default_project",
    "get_current_run_tree",
    "install_context_executor",
    "set_defaults",
    "tracing_context",
    "tracing_enabled",
    "tracing_mode",
]

P = ParamSpec("P")
R = TypeVar("R")

_KEEP: Any = object()


def _resolve_parent(parent: Any) -> RunTree | None:
    if parent is None or isinstance(parent, RunTree):
        return parent
    if isinstance(parent, str):
        return RunTree.from_dotted_order(parent)
    if isinstance(parent, Mapping) or hasattr(parent, "get") or isinstance(parent, list):
        return RunTree.from_headers(parent)
    raise TypeError(
        "parent must be a RunTree, a headers mapping, a dotted order string, or None; "
        f"got {type(parent).__name__}"
    )


@contextmanager
def tracing_context(
    *,
    parent: RunTree | Mapping[str, Any] | str | None = _KEEP,
    project_name: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    tags: list[str] | tuple[str, ...] | None = None,
    enabled: TracingMode | None = None,
) -> Iterator[None]:
    """Set the tracing parent and settings for the code inside the block.

    ``parent`` may be a ``RunTree``, incoming request headers, a dotted order, or ``None`` (start
    new traces inside); omitted, the current parent is kept. Metadata and tags add to the ones set
    by enclosing contexts. ``enabled`` is ``True``, ``False``, or ``"local"``: runs are made and
    seen by ``RunCollector``/``capture_runs`` but never exported. Headers can only *link* runs:
    tracing disabled here stays disabled whatever a header says::

        with tracing_context(parent=request.headers, metadata={"tenant": "acme"}):
            handle(request)
    """
    if enabled not in (None, True, False, LOCAL):
        raise ValueError(f"enabled must be True, False, 'local' or None; got {enabled!r}")
    outer = _config.get()
    merged_meta: Mapping[str, Any] | None = outer.metadata
    if metadata:
        merged_meta = {**(outer.metadata or {}), **metadata}
    merged_tags = outer.tags
    if tags:
        merged_tags = (*(outer.tags or ()), *(t for t in tags if t not in (outer.tags or ())))
    config_token = _config.set(
        TracingConfig(
            enabled=outer.enabled if enabled is None else enabled,
            project_name=project_name or outer.project_name,
            metadata=merged_meta,
            tags=merged_tags,
        )
    )
    run_token = None if parent is _KEEP else _current_run.set(_resolve_parent(parent))
    try:
        yield
    finally:
        if run_token is not None:
            _current_run.reset(run_token)
        _config.reset(config_token)


def contextual(fn: Callable[P, R]) -> Callable[P, R]:
    """Wrap ``fn`` to run in a copy of the *current* context (for threads and callbacks).

    ``threading.Thread(target=contextual(work))`` keeps ``work``'s runs under the current run.
    """
    ctx = contextvars.copy_context()

    @functools.wraps(fn)
    def run_in_context(*args: P.args, **kwargs: P.kwargs) -> R:
        return ctx.run(fn, *args, **kwargs)

    return run_in_context


class ContextThreadPoolExecutor(ThreadPoolExecutor):
    """A ``ThreadPoolExecutor`` whose tasks run in the submitter's context."""

    def submit(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Future[R]:
        ctx = contextvars.copy_context()
        return super().submit(ctx.run, fn, *args, **kwargs)  # type: ignore[arg-type]

    def map(
        self,
        fn: Callable[..., R],
        *iterables: Any,
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> Iterator[R]:
        ctx = contextvars.copy_context()
        return super().map(
            lambda *a: ctx.copy().run(fn, *a), *iterables, timeout=timeout, chunksize=chunksize
        )


def install_context_executor(
    loop: asyncio.AbstractEventLoop | None = None, max_workers: int | None = None
) -> ContextThreadPoolExecutor:
    """Make ``loop``'s default executor (the running loop's when ``None``) a
    :class:`ContextThreadPoolExecutor`, and return it: ``loop.run_in_executor(None, fn)``, which
    does not copy the caller's context, then runs ``fn`` under the caller's current run.

    One explicit line where the loop starts (``main``, an ASGI lifespan); nothing global is
    patched, and the loop shuts the executor down as it would its own. ``max_workers`` as
    ``ThreadPoolExecutor`` takes it.
    """
    import asyncio  # here: importing tracestitch must not import asyncio (and ssl with it)

    executor = ContextThreadPoolExecutor(max_workers=max_workers)
    (loop or asyncio.get_running_loop()).set_default_executor(executor)
    return executor

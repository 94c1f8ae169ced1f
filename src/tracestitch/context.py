"""The current run, held in a standard ``ContextVar``, and the tracing settings around it.

Two context variables: ``_current_run`` (the run new child runs attach to) and ``_config``
(enabled / project / metadata / tags set by :func:`tracing_context`). They are separate so that
entering a ``@traceable`` function, by far the most common operation, sets one variable and
allocates nothing but its token. Every ``set`` is paired with ``reset(token)`` in a ``finally``.

asyncio tasks copy the context when they are created, so concurrent requests are isolated for
free; threads do not, hence :func:`contextual` and :class:`ContextThreadPoolExecutor`.
"""

from __future__ import annotations

import contextvars
import functools
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar

from tracestitch.settings import read_env

if TYPE_CHECKING:
    from tracestitch.run_tree import RunTree

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
    "set_defaults",
    "tracing_context",
    "tracing_enabled",
    "tracing_mode",
]

P = ParamSpec("P")
R = TypeVar("R")

# The process defaults, from the one settings reader (which also warns about bad values:
# export/config.py reads the environment again with warnings on, so each shows once).
_env = read_env(os.environ, warn=False)
_default_enabled = _env.enabled
_default_project = _env.project
del _env

#: The mode in which runs are made and handed to local listeners (``RunCollector``,
#: ``capture_runs``) but never exported, as the LangSmith SDK's ``enabled="local"``.
LOCAL: Literal["local"] = "local"
TracingMode = bool | Literal["local"]

# Explicit captures active in the process (RunCollector used as a context manager). While there
# is one, tracing that is off by default (environment or configure) runs locally, so a test
# sees its runs in a CI that switched tracing off precisely so that tests send nothing.
_captures = 0
_captures_lock = threading.Lock()


def capture_started() -> None:
    """An explicit capture began (see :data:`LOCAL`); pair with :func:`capture_stopped`."""
    global _captures
    with _captures_lock:
        _captures += 1


def capture_stopped() -> None:
    global _captures
    with _captures_lock:
        _captures = max(0, _captures - 1)


def set_defaults(*, enabled: bool | None = None, project_name: str | None = None) -> None:
    """Process-wide defaults; ``tracing_context`` overrides them per context."""
    global _default_enabled, _default_project
    if enabled is not None:
        _default_enabled = enabled
    if project_name is not None:
        _default_project = project_name


@dataclass(frozen=True, slots=True)
class TracingConfig:
    """What :func:`tracing_context` set for the current context (``None``: not set here)."""

    enabled: TracingMode | None = None
    project_name: str | None = None
    metadata: Mapping[str, Any] | None = None
    tags: tuple[str, ...] | None = None


_EMPTY = TracingConfig()
_current_run: contextvars.ContextVar[RunTree | None] = contextvars.ContextVar(
    "tracestitch_run", default=None
)
_config: contextvars.ContextVar[TracingConfig] = contextvars.ContextVar(
    "tracestitch_config", default=_EMPTY
)


def get_current_run_tree() -> RunTree | None:
    """The run that new child runs in this context attach to, if any."""
    return _current_run.get()


def current_config() -> TracingConfig:
    return _config.get()


def tracing_mode(config: TracingConfig | None = None) -> TracingMode:
    """Whether runs are made here: ``True`` (made and exported), :data:`LOCAL` (made and
    handed to local captures only) or ``False``. ``tracing_context(enabled=...)`` decides;
    else the process default, except that an active capture turns "off" into "local"."""
    enabled = (_config.get() if config is None else config).enabled
    if enabled is None:
        if _default_enabled:
            return True
        return LOCAL if _captures else False
    return enabled


def tracing_enabled() -> bool:
    """Whether runs are made here at all (exported or only captured locally): whether
    :func:`tracing_mode` is not ``False``, asked of every request by the middleware."""
    enabled = _config.get().enabled
    if enabled is None:
        return _default_enabled or _captures > 0
    return enabled is not False


def default_project() -> str:
    return _config.get().project_name or _default_project


_KEEP: Any = object()


def _resolve_parent(parent: Any) -> RunTree | None:
    from tracestitch.run_tree import RunTree

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

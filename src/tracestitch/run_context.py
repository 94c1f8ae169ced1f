"""The current run, held in a standard ``ContextVar``, and the tracing settings around it.

The state :mod:`tracestitch.context` (the public module, which re-exports these names) and
:mod:`tracestitch.run_tree` read; it sits below both, so neither needs the other to know it.
Two context variables: ``_current_run`` (the run new child runs attach to) and ``_config``
(enabled / project / metadata / tags set by :func:`tracing_context`). They are separate so that
entering a ``@traceable`` function, by far the most common operation, sets one variable and
allocates nothing but its token. Every ``set`` is paired with ``reset(token)`` in a ``finally``.
"""

from __future__ import annotations

import contextvars
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from tracestitch.settings import read_env

if TYPE_CHECKING:
    from tracestitch.run_tree import RunTree

__all__ = [
    "LOCAL",
    "TracingConfig",
    "TracingMode",
    "capture_started",
    "capture_stopped",
    "current_config",
    "default_project",
    "get_current_run_tree",
    "set_defaults",
    "tracing_enabled",
    "tracing_mode",
]

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
    """A local capture (``RunCollector``) ended: pairs with ``capture_started``."""
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
    """The ``tracing_context`` settings in force in this context."""
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
    """The project new runs here go to: this context's ``tracing_context`` project, else
    the process default."""
    return _config.get().project_name or _default_project

"""tracestitch: one trace tree across Python services, on the LangSmith run model.

The core API. Framework integrations live in ``tracestitch.middleware.*`` and
``tracestitch.clients.*`` and are imported explicitly; importing this package imports no web
framework, HTTP client or the collector.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tracestitch.context import (
    ContextThreadPoolExecutor,
    contextual,
    get_current_run_tree,
    install_context_executor,
    tracing_context,
)
from tracestitch.export.config import configure, install_from_env
from tracestitch.export.memory import RunCollector
from tracestitch.exporter import Exporter, NoopExporter, get_exporter, set_exporter
from tracestitch.ids import uuid7
from tracestitch.propagation import extract, inject
from tracestitch.run_tree import (
    RunTree,
    convert_to_dotted_order_format,  # noqa: F401 (compatibility helpers, outside __all__)
    is_run_tree,  # noqa: F401
    is_runnable_config_like,  # noqa: F401
)
from tracestitch.tracing import continue_trace, trace, traceable
from tracestitch.version import __version__

if TYPE_CHECKING:
    from tracestitch.schemas import Run, RunEvent


def __getattr__(name: str) -> Any:
    # The pydantic models cost more to import than the rest of the package together and are
    # needed only at the edges (RunCollector, the collector): load them on first use.
    if name in ("Run", "RunEvent"):
        from tracestitch import schemas

        return getattr(schemas, name)
    raise AttributeError(f"module 'tracestitch' has no attribute {name!r}")


# An app configured for tracestitch or LangSmith by environment (TRACESTITCH_ENDPOINT,
# LANGSMITH_ENDPOINT/LANGSMITH_API_KEY, ...) exports with no code change. This only registers a
# factory: the exporter and its threads are built on first use.
install_from_env()

# The LangSmith compatibility helpers (convert_to_dotted_order_format, is_run_tree,
# is_runnable_config_like) stay importable from here, as from the SDK, but are not the core API.
__all__ = [
    "ContextThreadPoolExecutor",
    "Exporter",
    "NoopExporter",
    "Run",
    "RunCollector",
    "RunEvent",
    "RunTree",
    "__version__",
    "configure",
    "contextual",
    "continue_trace",
    "extract",
    "get_current_run_tree",
    "get_exporter",
    "inject",
    "install_context_executor",
    "set_exporter",
    "trace",
    "traceable",
    "tracing_context",
    "uuid7",
]

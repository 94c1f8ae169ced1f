"""tracestitch: one trace tree across Python services, on the LangSmith run model.

The core API. Framework integrations live in ``tracestitch.middleware.*`` and
``tracestitch.clients.*`` and are imported explicitly; importing this package imports no web
framework, HTTP client or the collector.
"""

from __future__ import annotations

from tracestitch.context import (
    ContextThreadPoolExecutor,
    contextual,
    get_current_run_tree,
    tracing_context,
)
from tracestitch.export.memory import RunCollector
from tracestitch.exporter import Exporter, NoopExporter, get_exporter, set_exporter
from tracestitch.ids import uuid7
from tracestitch.propagation import extract, inject
from tracestitch.run_tree import (
    RunTree,
    convert_to_dotted_order_format,
    is_run_tree,
    is_runnable_config_like,
)
from tracestitch.schemas import Run, RunEvent
from tracestitch.tracing import trace, traceable

__version__ = "0.1.0"

__all__ = [
    "ContextThreadPoolExecutor",
    "Exporter",
    "NoopExporter",
    "Run",
    "RunCollector",
    "RunEvent",
    "RunTree",
    "__version__",
    "contextual",
    "convert_to_dotted_order_format",
    "extract",
    "get_current_run_tree",
    "get_exporter",
    "inject",
    "is_run_tree",
    "is_runnable_config_like",
    "set_exporter",
    "trace",
    "traceable",
    "tracing_context",
    "uuid7",
]

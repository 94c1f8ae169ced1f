"""The embedded collector: LangSmith-compatible ingest, SQLite store, query API and web viewer.

Needs the ``collector`` extra (``pip install 'tracestitch[collector]'``). Run it with
``tracestitch serve``, or embed it::

    from tracestitch.collector import Store, create_app

    app = create_app(Store("traces.db"), api_key="secret")
"""

from __future__ import annotations

try:
    import starlette  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "the tracestitch collector needs Starlette and uvicorn:"
        " pip install 'tracestitch[collector]'"
    ) from exc

from .app import create_app
from .store import Store
from .terminal import render_trace
from .trace_store import TraceStore, open_store

__all__ = ["Store", "TraceStore", "create_app", "open_store", "render_trace"]

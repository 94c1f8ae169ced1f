"""Trace headers in and out: ``langsmith-trace`` + ``baggage``, and W3C ``traceparent``.

:func:`extract` reads the caller's run from incoming headers of any shape (a
:class:`RemoteParent`, or ``None``; it never raises), :func:`inject` writes a run's headers for
the next service. ``RunTree.from_headers`` turns a remote parent into a stand-in run, and
:func:`tracestitch.run_tree.new_run` starts a run under one. Bad input is counted in
:func:`stats`.

The parts: :mod:`.codec` (extract, inject), :mod:`.model` (``RemoteParent``, ``Limits``),
:mod:`.headers` (finding the headers in any shape), :mod:`.baggage`, :mod:`.w3c`,
:mod:`.stats` (the counters). The package imports nothing above it: ``run_tree`` builds on it.
"""

from __future__ import annotations

from tracestitch.propagation.codec import extract, inject
from tracestitch.propagation.headers import BAGGAGE, LANGSMITH_TRACE, TRACEPARENT, TRACESTATE
from tracestitch.propagation.model import DEFAULT_LIMITS, Limits, RemoteParent
from tracestitch.propagation.stats import logger, reset_stats, stats

__all__ = [
    "BAGGAGE",
    "DEFAULT_LIMITS",
    "LANGSMITH_TRACE",
    "TRACEPARENT",
    "TRACESTATE",
    "Limits",
    "RemoteParent",
    "extract",
    "inject",
    "logger",
    "reset_stats",
    "stats",
]

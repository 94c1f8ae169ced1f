"""Whole traces as files: what ``tracestitch export`` writes and ``tracestitch import`` reads.

An export is one JSON document, ``{"format": FORMAT, "trace_id": ..., "runs": [...]}``, whose
runs are LangSmith wire runs (the fields ``POST /runs`` takes), so an export can be imported into
another collector, or posted to LangSmith's ``/runs/batch`` as it is. Attachments and feedback
are not exported.
"""

from __future__ import annotations

from typing import Any

from .ingest import IngestError, RunOp, validate_op

__all__ = ["FORMAT", "WIRE_FIELDS", "export_document", "import_ops"]

#: The ``format`` of an export document.
FORMAT = "tracestitch.trace.v1"

#: The fields of a run as it is sent on the wire (LangSmith's run create/update).
WIRE_FIELDS = (
    "id",
    "name",
    "run_type",
    "start_time",
    "end_time",
    "extra",
    "error",
    "serialized",
    "events",
    "inputs",
    "outputs",
    "reference_example_id",
    "parent_run_id",
    "tags",
    "trace_id",
    "dotted_order",
    "session_name",
)


def export_document(trace: dict[str, Any]) -> dict[str, Any]:
    """The export of a ``GET /api/traces/{id}`` document: its runs as wire runs, in tree order."""
    runs = [
        {key: run[key] for key in WIRE_FIELDS if run.get(key) is not None}
        for run in trace.get("runs") or []
    ]
    return {"format": FORMAT, "trace_id": trace.get("trace_id"), "runs": runs}


def import_ops(document: Any, where: str = "import") -> list[RunOp]:
    """The validated run posts of an export document (:class:`IngestError` if it is not one)."""
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise IngestError(f"{where}: not a tracestitch export (expected format {FORMAT!r})")
    runs = document.get("runs")
    if not isinstance(runs, list):
        raise IngestError(f"{where}: 'runs' is not a list")
    return [validate_op("post", run, f"{where}: runs[{i}]") for i, run in enumerate(runs)]

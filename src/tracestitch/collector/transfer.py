"""Whole traces as files: what ``tracestitch export`` writes and ``tracestitch import`` reads.

An export is one JSON document::

    {"format": FORMAT, "trace_id": ..., "runs": [...], "attachments": [...], "feedback": [...]}

whose runs are LangSmith wire runs (the fields ``POST /runs`` takes), so an export can be
imported into another collector, or its runs posted to LangSmith's ``/runs/batch`` as they are.
An attachment is ``{"run_id", "name", "content_type", "data_base64"}``; feedback documents are
``POST /feedback`` bodies as stored. A document written before attachments and feedback were
exported has neither key and imports as it did.

Into a running collector, an import goes as one ``/runs/multipart`` request
(:func:`multipart_body`): the form the LangSmith SDK sends runs, attachments and feedback in.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Callable
from typing import Any

import orjson

from .feedback import validate_feedback
from .ingest import IngestError, validate_op
from .multipart import Attachment, MultipartBatch

__all__ = [
    "FORMAT",
    "WIRE_FIELDS",
    "AttachmentLoader",
    "export_document",
    "import_batch",
    "multipart_body",
]

#: The ``format`` of an export document.
FORMAT = "tracestitch.trace.v1"

#: ``(run id, attachment name) -> (content type, bytes)``, or None when it is gone.
AttachmentLoader = Callable[[str, str], "tuple[str, bytes] | None"]

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


def export_document(
    trace: dict[str, Any], load_attachment: AttachmentLoader | None = None
) -> dict[str, Any]:
    """The export of a ``GET /api/traces/{id}`` document: its runs as wire runs, in tree order,
    their feedback, and their attachments' bytes read with ``load_attachment``."""
    stored = trace.get("runs") or []
    runs = [{key: run[key] for key in WIRE_FIELDS if run.get(key) is not None} for run in stored]
    feedback = [doc for run in stored for doc in run.get("feedback") or []]
    attachments = []
    for run in stored:
        for name in sorted(run.get("attachments") or {}):
            found = load_attachment(run["id"], name) if load_attachment else None
            if found is not None:
                content_type, data = found
                attachments.append(
                    {
                        "run_id": run["id"],
                        "name": name,
                        "content_type": content_type,
                        "data_base64": base64.b64encode(data).decode(),
                    }
                )
    return {
        "format": FORMAT,
        "trace_id": trace.get("trace_id"),
        "runs": runs,
        "attachments": attachments,
        "feedback": feedback,
    }


def _list(document: dict[str, Any], key: str, where: str) -> list[Any]:
    items = document.get(key, [])
    if not isinstance(items, list):
        raise IngestError(f"{where}: {key!r} is not a list")
    return items


def _attachment(item: Any, where: str) -> Attachment:
    if not isinstance(item, dict):
        raise IngestError(f"{where}: expected an object")
    run_id = validate_op("patch", {"id": item.get("run_id")}, f"{where}.run_id").run_id
    name, content_type = item.get("name"), item.get("content_type")
    if not isinstance(name, str) or not name or not isinstance(content_type, str):
        raise IngestError(f"{where}: needs a name and a content_type (strings)")
    try:
        data = base64.b64decode(str(item.get("data_base64")), validate=True)
    except (binascii.Error, ValueError):
        raise IngestError(f"{where}.data_base64: not base64") from None
    return Attachment(run_id, name, content_type, data)


def import_batch(document: Any, where: str = "import") -> MultipartBatch:
    """The validated run posts, attachments and feedback of an export document
    (:class:`IngestError` if it is not one)."""
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise IngestError(f"{where}: not a tracestitch export (expected format {FORMAT!r})")
    if not isinstance(document.get("runs"), list):
        raise IngestError(f"{where}: 'runs' is not a list")
    return MultipartBatch(
        ops=[
            validate_op("post", run, f"{where}: runs[{i}]")
            for i, run in enumerate(_list(document, "runs", where))
        ],
        attachments=[
            _attachment(item, f"{where}: attachments[{i}]")
            for i, item in enumerate(_list(document, "attachments", where))
        ],
        feedback=[
            validate_feedback(doc, f"{where}: feedback[{i}]")
            for i, doc in enumerate(_list(document, "feedback", where))
        ],
    )


def _header(text: str) -> str:
    # Names and content types come from a file: a quote or a line break would end the header
    # early (the collector reads a part's name up to the next quote).
    return "".join(" " if ch in '"\r\n' else ch for ch in text)


def multipart_body(batch: MultipartBatch) -> tuple[str, bytes]:
    """``(content type, body)`` of a ``/runs/multipart`` request carrying ``batch``: one
    ``post.{id}`` part per run, ``attachment.{run id}.{name}`` and ``feedback.{id}`` parts."""
    boundary = uuid.uuid4().hex
    parts: list[tuple[str, str, bytes]] = [
        (f"post.{op.run_id}", "application/json", orjson.dumps(op.data)) for op in batch.ops
    ]
    parts += [
        (f"attachment.{att.run_id}.{att.name}", att.content_type, att.data)
        for att in batch.attachments
    ]
    parts += [
        (f"feedback.{item.id}", "application/json", orjson.dumps(item.doc))
        for item in batch.feedback
    ]
    chunks = []
    for name, content_type, data in parts:
        chunks.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{_header(name)}"\r\n'
            f"Content-Type: {_header(content_type)}\r\n\r\n".encode()
            + data
            + b"\r\n"
        )
    chunks.append(f"--{boundary}--\r\n".encode())
    return f"multipart/form-data; boundary={boundary}", b"".join(chunks)

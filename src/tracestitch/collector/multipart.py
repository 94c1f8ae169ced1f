"""LangSmith's multipart ingest form (``/runs/multipart``), parsed into validated ops.

The body is already fully read, size-capped and decoded (:mod:`.bodies`) when it gets here, so
a small byte-level multipart parser is simpler and stricter than a streaming one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from .feedback import FeedbackOp, validate_feedback
from .ingest import IngestError, OpKind, RunOp, validate_op

__all__ = ["Attachment", "MultipartBatch", "parse_multipart"]

# Fields the SDK sends as separate parts (`post.{id}.inputs`, ...), merged into the run dict.
_FIELD_PARTS = {"inputs", "outputs", "events", "extra", "error", "serialized", "feedback"}
_NAME_RE = re.compile(rb'name="([^"]*)"', re.IGNORECASE)


@dataclass
class Attachment:
    """An ``attachment.{run_id}.{name}`` part."""

    run_id: str
    name: str
    content_type: str
    data: bytes


@dataclass
class MultipartBatch:
    """The ops, attachments and feedback of one ``/runs/multipart`` request."""

    ops: list[RunOp] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    feedback: list[FeedbackOp] = field(default_factory=list)


def _boundary(content_type: str) -> bytes:
    match = re.search(r'boundary="?([^";]+)"?', content_type or "", re.IGNORECASE)
    if not content_type.lower().startswith("multipart/form-data") or not match:
        raise IngestError("expected Content-Type multipart/form-data with a boundary")
    return match.group(1).encode("latin-1")


def _split_parts(body: bytes | bytearray, boundary: bytes) -> list[tuple[str, str, bytes]]:
    delim = b"--" + boundary
    start = body.find(delim)
    if start < 0:
        raise IngestError("multipart body has no boundary line")
    parts: list[tuple[str, str, bytes]] = []
    pos = start + len(delim)
    while True:
        if body.startswith(b"--", pos):
            return parts  # closing delimiter
        if not body.startswith(b"\r\n", pos):
            raise IngestError("malformed multipart boundary line")
        head_end = body.find(b"\r\n\r\n", pos + 2)
        if head_end < 0:
            raise IngestError("multipart part has no header terminator")
        headers = bytes(body[pos + 2 : head_end])
        nxt = body.find(b"\r\n" + delim, head_end + 4)
        if nxt < 0:
            raise IngestError("multipart body is truncated (no closing boundary)")
        # One copy of the part, whether the body is bytes or a (decompressed) bytearray.
        data = memoryview(body)[head_end + 4 : nxt].tobytes()
        name = _NAME_RE.search(headers)
        if name is None:
            raise IngestError("multipart part without a name")
        ctype = "application/octet-stream"
        for line in headers.split(b"\r\n"):
            key, _, value = line.partition(b":")
            if key.strip().lower() == b"content-type":
                ctype = value.strip().decode("latin-1")
        parts.append((name.group(1).decode("utf-8", "replace"), ctype, data))
        pos = nxt + 2 + len(delim)


def _json(data: bytes, where: str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise IngestError(f"{where}: invalid JSON ({exc})") from None


def parse_multipart(body: bytes | bytearray, content_type: str) -> MultipartBatch:
    """Parse LangSmith's multipart ingest form into validated ops and attachments.

    Part names: ``post.{id}`` / ``patch.{id}`` (the run minus its large fields),
    ``post.{id}.{field}`` for inputs/outputs/events/extra/error/serialized, and
    ``attachment.{id}.{name}``, and ``feedback.{id}`` (what the SDK sends once a server
    reports version 0.8.10 or later). Field parts may come before or after their main part.
    """
    mains: dict[tuple[str, str], dict[str, Any]] = {}
    fields: dict[tuple[str, str], dict[str, Any]] = {}
    batch = MultipartBatch()
    for name, ctype, data in _split_parts(body, _boundary(content_type)):
        pieces = name.split(".")
        if pieces[0] == "attachment" and len(pieces) >= 3:
            pieces = name.split(".", 2)  # the attachment's own name may hold dots ("a.png")
            run_id = validate_op("patch", {"id": pieces[1]}, f"part {name!r}").run_id
            ctype = ctype.split(";")[0].strip()
            batch.attachments.append(Attachment(run_id, pieces[2], ctype, data))
            continue
        if pieces[0] == "feedback" and len(pieces) == 2:
            doc = _json(data, f"part {name!r}")
            if isinstance(doc, dict) and doc.get("id") is None:
                doc = {**doc, "id": pieces[1]}
            item = validate_feedback(doc, f"part {name!r}")
            if item.id != validate_op("patch", {"id": pieces[1]}, f"part {name!r}").run_id:
                raise IngestError(f"part {name!r}: body id {item.id} does not match")
            batch.feedback.append(item)
            continue
        if pieces[0] not in ("post", "patch") or len(pieces) not in (2, 3):
            raise IngestError(f"unknown multipart part name {name!r}")
        key = (pieces[0], pieces[1])
        if len(pieces) == 2:
            obj = _json(data, f"part {name!r}")
            if not isinstance(obj, dict):
                raise IngestError(f"part {name!r}: expected a JSON object")
            mains[key] = obj
        elif pieces[2] in _FIELD_PARTS:
            fields.setdefault(key, {})[pieces[2]] = _json(data, f"part {name!r}")
        else:
            raise IngestError(f"part {name!r}: unknown run field {pieces[2]!r}")
    for key in fields:
        if key not in mains:
            raise IngestError(f"part '{key[0]}.{key[1]}' is missing for its field parts")
    for (kind, run_id), obj in mains.items():
        merged = {**obj, **fields.get((kind, run_id), {})}
        op_kind: OpKind = "post" if kind == "post" else "patch"
        batch.ops.append(validate_op(op_kind, merged, f"part '{kind}.{run_id}'", run_id=run_id))
    return batch

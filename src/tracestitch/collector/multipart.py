"""Request body decoding for the ingest API: Content-Encoding and LangSmith's multipart form.

The body is already fully read (and size-capped) when it gets here, so a small byte-level
multipart parser is simpler and stricter than a streaming one. Decompression is capped too: a
zstd or gzip bomb must not turn a 1 MB request into gigabytes of memory.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from typing import Any

import orjson

from .ingest import IngestError, OpKind, RunOp, validate_op

__all__ = [
    "Attachment",
    "BodyTooLarge",
    "MultipartBatch",
    "UnsupportedEncoding",
    "decode_body",
    "parse_multipart",
    "zstd_available",
]

# Fields the SDK sends as separate parts (`post.{id}.inputs`, ...), merged into the run dict.
_FIELD_PARTS = {"inputs", "outputs", "events", "extra", "error", "serialized", "feedback"}
_NAME_RE = re.compile(rb'name="([^"]*)"', re.IGNORECASE)


class BodyTooLarge(Exception):
    """The body, or what it decompresses to, exceeds the configured limit (answered with 413)."""


class UnsupportedEncoding(Exception):
    """A Content-Encoding the collector cannot decode (answered with 415)."""


def zstd_available() -> bool:
    """Whether zstd bodies can be decoded (the ``zstandard`` package is importable)."""
    try:
        import zstandard  # noqa: F401
    except ImportError:
        return False
    return True


def _unzstd(body: bytes, limit: int) -> bytes:
    import zstandard

    # The SDK streams its frame, so the header carries no content size: decompress in chunks
    # and stop at the limit instead of trusting a declared size.
    reader = zstandard.ZstdDecompressor().stream_reader(body)
    chunks: list[bytes] = []
    size = 0
    while chunk := reader.read(1 << 16):
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"decompressed body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _gunzip(body: bytes, limit: int) -> bytes:
    decomp = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = decomp.decompress(body, limit + 1)
    if len(out) > limit or decomp.unconsumed_tail:
        raise BodyTooLarge(f"decompressed body exceeds {limit} bytes")
    return out


def decode_body(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo ``Content-Encoding`` (identity, gzip, zstd), refusing output beyond ``limit`` bytes."""
    enc = (encoding or "identity").strip().lower()
    try:
        if enc in ("", "identity"):
            return body
        if enc in ("gzip", "x-gzip"):
            return _gunzip(body, limit)
        if enc == "zstd":
            if not zstd_available():
                raise UnsupportedEncoding("zstd bodies need the 'zstandard' package installed")
            return _unzstd(body, limit)
    except (BodyTooLarge, UnsupportedEncoding):
        raise
    except Exception as exc:  # zlib.error, zstandard.ZstdError: corrupt stream
        raise IngestError(f"body is not valid {enc}: {exc}") from None
    raise UnsupportedEncoding(f"unsupported Content-Encoding {encoding!r}; use gzip or zstd")


@dataclass
class Attachment:
    """An ``attachment.{run_id}.{name}`` part."""

    run_id: str
    name: str
    content_type: str
    data: bytes


@dataclass
class MultipartBatch:
    """The ops and attachments of one ``/runs/multipart`` request."""

    ops: list[RunOp] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)


def _boundary(content_type: str) -> bytes:
    match = re.search(r'boundary="?([^";]+)"?', content_type or "", re.IGNORECASE)
    if not content_type.lower().startswith("multipart/form-data") or not match:
        raise IngestError("expected Content-Type multipart/form-data with a boundary")
    return match.group(1).encode("latin-1")


def _split_parts(body: bytes, boundary: bytes) -> list[tuple[str, str, bytes]]:
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
        headers = body[pos + 2 : head_end]
        nxt = body.find(b"\r\n" + delim, head_end + 4)
        if nxt < 0:
            raise IngestError("multipart body is truncated (no closing boundary)")
        data = body[head_end + 4 : nxt]
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


def parse_multipart(body: bytes, content_type: str) -> MultipartBatch:
    """Parse LangSmith's multipart ingest form into validated ops and attachments.

    Part names: ``post.{id}`` / ``patch.{id}`` (the run minus its large fields),
    ``post.{id}.{field}`` for inputs/outputs/events/extra/error/serialized, and
    ``attachment.{id}.{name}``. Field parts may come before or after their main part.
    """
    mains: dict[tuple[str, str], dict[str, Any]] = {}
    fields: dict[tuple[str, str], dict[str, Any]] = {}
    batch = MultipartBatch()
    for name, ctype, data in _split_parts(body, _boundary(content_type)):
        pieces = name.split(".")
        if pieces[0] == "attachment" and len(pieces) == 3:
            run_id = validate_op("patch", {"id": pieces[1]}, f"part {name!r}").run_id
            ctype = ctype.split(";")[0].strip()
            batch.attachments.append(Attachment(run_id, pieces[2], ctype, data))
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

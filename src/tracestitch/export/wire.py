"""The export wire format: runs turned into bytes, bodies built, bodies compressed.

Everything here runs on the export worker, never on the request path. A run becomes a
:class:`WireOp`: its LangSmith ingest dict serialized the way the LangSmith SDK splits it (a
``main`` object plus ``inputs``/``outputs``/``events``/``extra``/``error``/``serialized`` as
separate JSON blobs), so the same bytes can be spliced into a ``/runs/batch`` body, laid out as
``/runs/multipart`` parts, written to the spool and read back without being parsed again.

Example::

    op = serialize_run("post", run)
    body = batch_body([op])               # b'{"post":[{...}]}'
    body, ctype = multipart_body([op])    # parts post.{id}, post.{id}.inputs, ...
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import decimal
import enum
import os
import pathlib
import uuid
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import orjson

from tracestitch.ids import split_segment

if TYPE_CHECKING:
    from tracestitch.run_tree import RunTree

__all__ = [
    "FIELD_PARTS",
    "UnserializableRun",
    "WireOp",
    "batch_body",
    "compress",
    "dumps",
    "multipart_body",
    "remap_for_project",
    "serialize_run",
    "split_wire",
    "zstd_available",
]

#: Fields the LangSmith SDK sends as their own multipart parts (``post.{id}.inputs`` ...), in its
#: order; everything else goes in the main ``post.{id}`` part.
FIELD_PARTS = ("inputs", "outputs", "events", "extra", "error", "serialized")

_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY
_MAX_REPR = 1_000
_MAX_SANITIZE_DEPTH = 64
#: How deep a run may nest, the run object itself counting as one: what ``tracestitch serve``
#: accepts (``collector.ingest.MAX_RUN_DEPTH``). orjson writes up to 254 levels, so a run
#: between the two is cut down to ``_MAX_SANITIZE_DEPTH`` rather than refused with its batch.
MAX_RUN_DEPTH = 200
_ORJSON_MAX_DEPTH = 254


def _default(obj: Any) -> Any:
    """What orjson cannot encode natively. Never raises: user objects end up as their repr,
    because one odd value in a run's inputs must not cost the whole batch."""
    try:
        dump = getattr(obj, "model_dump", None)
        if callable(dump) and not isinstance(obj, type):
            return dump(mode="json")
        if isinstance(obj, (set, frozenset)):
            return list(obj)
        if isinstance(obj, (bytes, bytearray, memoryview)):
            raw = bytes(obj)
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                return base64.b64encode(raw).decode("ascii")
        if isinstance(obj, decimal.Decimal):
            return int(obj) if obj == obj.to_integral_value() else float(obj)
        if isinstance(obj, _dt.timedelta):
            return obj.total_seconds()
        if isinstance(obj, (pathlib.PurePath, uuid.UUID, complex)):
            return str(obj)
        if isinstance(obj, BaseException):
            return {"error": type(obj).__name__, "message": str(obj)}
        if isinstance(obj, enum.Enum):
            return obj.value
        if isinstance(obj, Mapping):
            return dict(obj)
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return dataclasses.asdict(obj)
        dict_method = getattr(obj, "dict", None)
        if callable(dict_method) and not isinstance(obj, type):  # pydantic v1 style
            result = dict_method()
            if isinstance(result, dict):
                return result
    except Exception:  # a broken model_dump or dict() falls through to repr
        pass
    return _safe_repr(obj)


def _safe_repr(obj: Any) -> str:
    try:
        text = repr(obj)
    except Exception:
        text = f"<unrepresentable {type(obj).__name__}>"
    return text if len(text) <= _MAX_REPR else text[:_MAX_REPR] + "..."


def _text(value: str) -> str:
    """``value`` as valid Unicode text: a lone surrogate (from ``surrogateescape``-decoded
    bytes, or a ``\\ud800`` JSON escape) cannot be encoded as UTF-8, so JSON cannot carry it.
    Surrogate pairs are joined into the character they stand for, lone ones become U+FFFD."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return value


def _sanitize(obj: Any, depth: int = 0) -> Any:
    """A JSON-safe copy for the rare value orjson refuses even with ``default`` (text with lone
    surrogates, integers beyond 64 bits, cycles, nesting deeper than orjson's limit)."""
    if depth > _MAX_SANITIZE_DEPTH:
        return "<max depth>"
    if obj is None or isinstance(obj, (bool, float)):
        return obj
    if isinstance(obj, str):
        return _text(obj)
    if isinstance(obj, int):
        return obj if -(2**63) <= obj < 2**64 else str(obj)
    if isinstance(obj, Mapping):
        return {_text(str(k)): _sanitize(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_sanitize(v, depth + 1) for v in obj]
    try:
        return orjson.loads(orjson.dumps(obj, default=_default, option=_OPTIONS))
    except Exception:
        # Whatever a user object turns into (its repr, a dict it returned) is sanitized too.
        converted = _default(obj)
        if isinstance(converted, str):
            return _text(converted)
        if converted is obj:
            return _text(_safe_repr(obj))
        return _sanitize(converted, depth + 1)


def dumps(obj: Any) -> bytes:
    """JSON bytes for anything: orjson with a safe ``default``; never raises. Text that is not
    valid Unicode is repaired (lone surrogates become U+FFFD), and a mapping always gives a JSON
    object.

    >>> dumps({"n": 1, "when": datetime.date(2024, 1, 1), "s": {1}})
    b'{"n":1,"when":"2024-01-01","s":[1]}'
    """
    try:
        data = orjson.dumps(obj, default=_default, option=_OPTIONS)
    except Exception:
        try:
            return orjson.dumps(_sanitize(obj), default=_default, option=_OPTIONS)
        except Exception:
            # Unreachable for what _sanitize returns; kept so that dumps never raises.
            if isinstance(obj, Mapping):
                return b"{}"
            return orjson.dumps(_text(_safe_repr(obj)))
    # orjson returns small results in a 4 KiB allocation; queued ops would then take ~10x their
    # counted size and break the byte bound. An exact-size copy costs ~50 ns.
    return memoryview(data).tobytes() if len(data) < 2048 else data


_NO_ATTACHMENTS: Mapping[str, tuple[str, bytes]] = MappingProxyType({})


class WireOp:
    """One run operation, serialized: what batches, spool records and sinks carry.

    ``body`` is the whole run as one JSON object (one orjson call: the ``/runs/batch``
    element as is). :meth:`split` gives the SDK's multipart layout when that is wanted, which
    is rarer (attachments) and so pays the re-parse. ``weight`` is how many submitted
    operations this one settles (a post merged with its patch settles two; a replica's copy
    settles none). ``size`` (body plus attachments, the bytes it holds) is computed once: the
    worker reads it several times per op.

    A hand-written slots class rather than a dataclass: one is built per exported run, on the
    worker's hottest path.
    """

    __slots__ = ("attachments", "body", "kind", "run_id", "size", "trace_id", "weight")

    def __init__(
        self,
        kind: str,
        run_id: str,
        trace_id: str,
        body: bytes,
        attachments: Mapping[str, tuple[str, bytes]] = _NO_ATTACHMENTS,
        weight: int = 1,
    ) -> None:
        self.kind = kind
        self.run_id = run_id
        self.trace_id = trace_id
        self.body = body
        self.attachments = attachments
        self.weight = weight
        size = len(body)
        if attachments:
            for name, (mime, data) in attachments.items():
                size += len(name) + len(mime) + len(data)
        self.size = size

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, WireOp):
            return NotImplemented
        return (
            self.kind == other.kind
            and self.run_id == other.run_id
            and self.trace_id == other.trace_id
            and self.body == other.body
            and dict(self.attachments) == dict(other.attachments)
            and self.weight == other.weight
        )

    __hash__ = None  # type: ignore[assignment]  # mutable (weight), compared by value

    def __repr__(self) -> str:
        return (
            f"WireOp(kind={self.kind!r}, run_id={self.run_id!r}, size={self.size}, "
            f"attachments={list(self.attachments)!r}, weight={self.weight})"
        )

    def json(self) -> bytes:
        """The whole run as one JSON object (the ``/runs/batch`` element)."""
        return self.body

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = orjson.loads(self.body)
        return data

    def split(self) -> tuple[bytes, dict[str, bytes]]:
        """The main part (without :data:`FIELD_PARTS`) and each field part, in the SDK's
        order (inputs, outputs, events, extra, error, serialized)."""
        data = self.to_dict()
        fields = {k: dumps(data.pop(k)) for k in FIELD_PARTS if data.get(k) is not None}
        return dumps({k: v for k, v in data.items() if k not in FIELD_PARTS}), fields


class UnserializableRun(ValueError):
    """A run that cannot be serialized as a JSON object (never sent: it would take its whole
    batch down with it)."""


def split_wire(kind: str, wire: dict[str, Any], weight: int = 1) -> WireOp:
    """A :class:`WireOp` from a LangSmith ingest dict (``None`` values left out, as the SDK's
    ``exclude_none`` dump does)."""
    if None in wire.values() or "attachments" in wire:
        wire = {k: v for k, v in wire.items() if v is not None and k != "attachments"}
    return WireOp(kind, str(wire.get("id")), str(wire.get("trace_id")), dumps(wire), weight=weight)


def serialize_run(kind: str, run: RunTree, weight: int = 1) -> list[WireOp]:
    """The run's ops: its own, plus one per header replica (written to that replica's project,
    with ids remapped so the copy cannot collide with the original)."""
    wire = run.to_wire("post" if kind == "post" else "patch")
    # to_wire leaves None values out and its ids are text already, so this is split_wire
    # without its checks: one op per exported run, on the worker's hottest path.
    attachments = dict(run.attachments) if run.attachments else _NO_ATTACHMENTS
    body = dumps(wire)
    # Nesting is at most the number of brackets: two C-speed counts clear every usual run.
    if body.count(b"{") + body.count(b"[") > MAX_RUN_DEPTH and _too_deep(wire):
        body = dumps(_sanitize(wire))
    if body[:1] != b"{" or len(body) < 3:
        # An op that is no run object makes the collector refuse its whole batch (422): this
        # run alone is dropped instead (the worker counts it as "serialization failed").
        raise UnserializableRun(f"run {wire.get('id')} did not serialize to a JSON object")
    op = WireOp(kind, wire["id"], wire["trace_id"], body, attachments, weight)
    if not run.replicas:
        return [op]
    ops = [op]
    for replica in run.replicas:
        project = replica.get("project_name")
        if not isinstance(project, str) or not project:
            continue
        updates = replica.get("updates")
        copy = remap_for_project(wire, project, updates if isinstance(updates, dict) else None)
        if copy is wire:
            continue  # the replica is the run's own project: the original covers it
        rop = split_wire(kind, copy, weight=0)
        ops.append(WireOp(kind, rop.run_id, rop.trace_id, rop.body, attachments, 0))
    return ops


def _too_deep(wire: dict[str, Any]) -> bool:
    """Whether ``wire`` nests deeper than :data:`MAX_RUN_DEPTH`: orjson refuses to write past
    254 levels, so wrapped in the difference it fails exactly then."""
    value: Any = wire
    for _ in range(_ORJSON_MAX_DEPTH - MAX_RUN_DEPTH):
        value = [value]
    try:
        orjson.dumps(value, default=_default, option=_OPTIONS)
    except Exception:
        return True
    return False


def _derive(original: str, key: str) -> str:
    """A stable id for ``original`` in project ``key``: keeps a UUIDv7's timestamp (so replicas
    still sort by time), the rest from a hash of the pair."""
    import hashlib

    source = uuid.UUID(original)
    digest = int.from_bytes(hashlib.sha256(source.bytes + key.encode()).digest()[:16], "big")
    ts = source.int >> 80 if source.version == 7 else digest >> 80
    rand_a = (digest >> 64) & 0xFFF
    rand_b = digest & ((1 << 62) - 1)
    value = (ts << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    return str(uuid.UUID(int=value))


def remap_for_project(
    wire: dict[str, Any], project: str, updates: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The copy of ``wire`` written to a replica project: ``wire`` itself when the project is
    the run's own and there is nothing to update, else ids, trace and dotted order derived
    deterministically (every service of the trace derives the same ones)."""
    if project == wire.get("session_name") and not updates:
        return wire
    dup = dict(wire)
    dup["session_name"] = project
    if project != wire.get("session_name"):
        dup["id"] = _derive(str(wire["id"]), project)
        dup["trace_id"] = _derive(str(wire["trace_id"]), project)
        if wire.get("parent_run_id"):
            dup["parent_run_id"] = _derive(str(wire["parent_run_id"]), project)
        order = wire.get("dotted_order")
        if isinstance(order, str) and order:
            parts = (split_segment(seg) for seg in order.split("."))
            dup["dotted_order"] = ".".join(stamp + _derive(rid, project) for stamp, rid in parts)
    if updates:
        extra = dict(dup.get("extra") or {})
        meta = updates.get("metadata")
        if isinstance(meta, Mapping):
            extra["metadata"] = {**(extra.get("metadata") or {}), **meta}
            dup["extra"] = extra
        tags = updates.get("tags")
        if isinstance(tags, list):
            dup["tags"] = [*(dup.get("tags") or []), *(t for t in tags if isinstance(t, str))]
    return dup


def batch_body(ops: Iterable[WireOp]) -> bytes:
    """``{"post": [...], "patch": [...]}`` for ``POST /runs/batch``, spliced from the ops'
    bytes (attachments cannot travel this way; use :func:`multipart_body`)."""
    posts: list[bytes] = []
    patches: list[bytes] = []
    for op in ops:
        (posts if op.kind == "post" else patches).append(op.json())
    # Like the SDK, leave out an empty list rather than send it.
    members = [
        b'"%s":[%s]' % (k, b",".join(v)) for k, v in ((b"post", posts), (b"patch", patches)) if v
    ]
    return b"{" + b",".join(members) + b"}"


def _part(boundary: bytes, name: str, ctype: str, data: bytes) -> bytes:
    return b"".join(
        (
            b"--",
            boundary,
            b'\r\nContent-Disposition: form-data; name="',
            name.encode(),
            b'"\r\nContent-Type: ',
            ctype.encode(),
            b"\r\nContent-Length: ",
            str(len(data)).encode(),
            b"\r\n\r\n",
            data,
            b"\r\n",
        )
    )


def multipart_body(ops: Sequence[WireOp], boundary: str | None = None) -> tuple[bytes, str]:
    """The ``POST /runs/multipart`` body and its content type, parts laid out as the LangSmith
    SDK lays them: ``{kind}.{id}``, ``{kind}.{id}.{field}``, ``attachment.{id}.{name}``.

    An attachment whose name holds a ``.`` cannot be addressed in a part name and is left out,
    as the SDK does.
    """
    b = (boundary or os.urandom(16).hex()).encode()
    chunks: list[bytes] = []
    for op in ops:
        main, fields = op.split()
        chunks.append(_part(b, f"{op.kind}.{op.run_id}", "application/json", main))
        for key, value in fields.items():
            chunks.append(_part(b, f"{op.kind}.{op.run_id}.{key}", "application/json", value))
        for name, (mime, data) in op.attachments.items():
            if "." not in name:
                chunks.append(_part(b, f"attachment.{op.run_id}.{name}", mime, data))
    chunks.append(b"--" + b + b"--\r\n")
    return b"".join(chunks), f"multipart/form-data; boundary={b.decode()}"


def zstd_available() -> bool:
    """Whether the optional ``zstandard`` package is installed (found, not imported: a sink
    may be built on a request's path, and the import happens on the worker when it compresses).
    """
    import importlib.util

    try:
        return importlib.util.find_spec("zstandard") is not None
    except (ImportError, ValueError):
        return False


def compress(body: bytes, encoding: str) -> bytes:
    """``body`` encoded for ``Content-Encoding: encoding`` (``gzip``, ``zstd`` or identity).

    gzip at level 1: run JSON compresses ~5x even there, and level 6 costs 4x the CPU.
    """
    if encoding == "gzip":
        import gzip

        return gzip.compress(body, compresslevel=1, mtime=0)
    if encoding == "zstd":
        import zstandard

        data: bytes = zstandard.ZstdCompressor(level=3).compress(body)
        return data
    return body

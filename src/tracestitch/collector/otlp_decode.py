"""OTLP trace requests, protobuf or OTLP/JSON, decoded into :class:`Span` records (ids as
lowercase hex, attributes as plain JSON values), checked as they are read: a malformed body is an
:class:`~tracestitch.collector.ingest.IngestError` naming where. What the spans become is
:mod:`.otlp_spans`'s business."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from .ingest import IngestError

__all__ = [
    "SPAN_ID_RE",
    "SPAN_KINDS",
    "STATUS_CODES",
    "TRACE_ID_RE",
    "Span",
    "decode_json",
    "decode_protobuf",
    "protobuf_available",
]

#: A trace id and a span id in hex, as decoded.
TRACE_ID_RE = re.compile("[0-9a-f]{32}")
SPAN_ID_RE = re.compile("[0-9a-f]{16}")
#: OTLP's span kinds and status codes by number (their names without the enum prefix).
SPAN_KINDS = {
    0: "UNSPECIFIED",
    1: "INTERNAL",
    2: "SERVER",
    3: "CLIENT",
    4: "PRODUCER",
    5: "CONSUMER",
}
STATUS_CODES = {0: "UNSET", 1: "OK", 2: "ERROR"}


@dataclass
class Span:
    """One OTLP span, decoded (ids as lowercase hex, attributes as plain JSON values)."""

    trace_hex: str
    span_hex: str
    parent_hex: str | None
    name: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    events: list[tuple[str, int, dict[str, Any]]] = field(default_factory=list)
    status_code: int = 0
    status_message: str = ""
    resource: dict[str, Any] = field(default_factory=dict)
    scope: str | None = None

    @property
    def where(self) -> str:
        return f"span {self.trace_hex}/{self.span_hex}"


def protobuf_available() -> bool:
    """Whether OTLP protobuf can be decoded (``opentelemetry-proto`` is installed)."""
    try:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2  # noqa: F401
    except ImportError:
        return False
    return True


def _pb_value(value: Any) -> Any:
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [_pb_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _pb_value(kv.value) for kv in value.kvlist_value.values}
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return getattr(value, which)


def _pb_attrs(attrs: Any) -> dict[str, Any]:
    return {kv.key: _pb_value(kv.value) for kv in attrs}


def decode_protobuf(body: bytes | bytearray) -> list[Span]:
    """The spans of an ``ExportTraceServiceRequest`` in protobuf; IngestError if malformed."""
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

    request = trace_service_pb2.ExportTraceServiceRequest()
    try:
        request.ParseFromString(bytes(body))
    except (DecodeError, RecursionError) as exc:
        raise IngestError(f"body is not an OTLP ExportTraceServiceRequest: {exc}") from None
    spans: list[Span] = []
    for resource_spans in request.resource_spans:
        resource = _pb_attrs(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope.name or None
            for sp in scope_spans.spans:
                spans.append(
                    Span(
                        trace_hex=sp.trace_id.hex(),
                        span_hex=sp.span_id.hex(),
                        parent_hex=sp.parent_span_id.hex() or None,
                        name=sp.name,
                        kind=sp.kind,
                        start_ns=sp.start_time_unix_nano,
                        end_ns=sp.end_time_unix_nano,
                        attributes=_pb_attrs(sp.attributes),
                        events=[
                            (e.name, e.time_unix_nano, _pb_attrs(e.attributes)) for e in sp.events
                        ],
                        status_code=sp.status.code,
                        status_message=sp.status.message,
                        resource=resource,
                        scope=scope,
                    )
                )
    return spans


def _obj(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise IngestError(f"{where}: expected an object")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise IngestError(f"{where}: expected a list")
    return value


def _json_value(value: Any, where: str) -> Any:
    obj = _obj(value, where)
    if not obj:
        return None
    key, item = next(iter(obj.items()))
    if key == "stringValue":
        return str(item)
    if key == "boolValue":
        return bool(item)
    if key == "intValue":
        return _int(item, where)
    if key == "doubleValue":
        if isinstance(item, (int, float)) and not isinstance(item, bool):
            return float(item)
        raise IngestError(f"{where}.doubleValue: expected a number")
    if key == "bytesValue":
        return str(item)
    if key == "arrayValue":
        values = _list(_obj(item, where).get("values"), f"{where}.arrayValue.values")
        return [_json_value(v, f"{where}.arrayValue.values[{i}]") for i, v in enumerate(values)]
    if key == "kvlistValue":
        return _json_attrs(_obj(item, where).get("values"), f"{where}.kvlistValue.values")
    raise IngestError(f"{where}: unknown AnyValue field {key!r}")


def _json_attrs(items: Any, where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for i, kv in enumerate(_list(items, where)):
        kv = _obj(kv, f"{where}[{i}]")
        key = kv.get("key")
        if not isinstance(key, str):
            raise IngestError(f"{where}[{i}].key: expected a string")
        out[key] = _json_value(kv.get("value"), f"{where}[{i}].value")
    return out


def _int(value: Any, where: str) -> int:
    # OTLP JSON writes 64-bit integers as strings; some encoders write numbers.
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    raise IngestError(f"{where}: expected an integer")


def _enum(value: Any, names: dict[int, str], prefix: str, where: str) -> int:
    if value is None:
        return 0
    if isinstance(value, str) and not value.isdigit():
        for number, name in names.items():
            if value in (f"{prefix}{name}", name):
                return number
        raise IngestError(f"{where}: unknown value {value[:40]!r}")
    return _int(value, where)


def _hex_id(value: Any, pattern: re.Pattern[str], where: str, *, optional: bool) -> str | None:
    if optional and value in (None, ""):
        return None
    if isinstance(value, str) and pattern.fullmatch(value.lower()):
        return value.lower()
    size = 32 if pattern is TRACE_ID_RE else 16
    raise IngestError(f"{where}: expected {size} hex digits (OTLP JSON writes ids in hex)")


def decode_json(body: bytes | bytearray) -> list[Span]:
    """The spans of an OTLP/JSON ``ExportTraceServiceRequest``; IngestError if malformed."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise IngestError(f"body is not valid JSON: {exc}") from None
    spans: list[Span] = []
    for i, rs in enumerate(_list(_obj(doc, "body").get("resourceSpans"), "resourceSpans")):
        where_rs = f"resourceSpans[{i}]"
        rs = _obj(rs, where_rs)
        resource = _json_attrs(
            _obj(rs.get("resource"), f"{where_rs}.resource").get("attributes"),
            f"{where_rs}.resource.attributes",
        )
        # "instrumentationLibrarySpans": the name before OTLP 0.15.
        scopes = rs.get("scopeSpans", rs.get("instrumentationLibrarySpans"))
        for j, ss in enumerate(_list(scopes, f"{where_rs}.scopeSpans")):
            where_ss = f"{where_rs}.scopeSpans[{j}]"
            ss = _obj(ss, where_ss)
            scope = _obj(ss.get("scope"), f"{where_ss}.scope").get("name") or None
            for k, sp in enumerate(_list(ss.get("spans"), f"{where_ss}.spans")):
                where = f"{where_ss}.spans[{k}]"
                sp = _obj(sp, where)
                status = _obj(sp.get("status"), f"{where}.status")
                events = []
                for n, event in enumerate(_list(sp.get("events"), f"{where}.events")):
                    event = _obj(event, f"{where}.events[{n}]")
                    events.append(
                        (
                            str(event.get("name") or ""),
                            _int(event.get("timeUnixNano", 0), f"{where}.events[{n}].time"),
                            _json_attrs(event.get("attributes"), f"{where}.events[{n}].attributes"),
                        )
                    )
                spans.append(
                    Span(
                        trace_hex=str(
                            _hex_id(
                                sp.get("traceId"), TRACE_ID_RE, f"{where}.traceId", optional=False
                            )
                        ),
                        span_hex=str(
                            _hex_id(sp.get("spanId"), SPAN_ID_RE, f"{where}.spanId", optional=False)
                        ),
                        parent_hex=_hex_id(
                            sp.get("parentSpanId"),
                            SPAN_ID_RE,
                            f"{where}.parentSpanId",
                            optional=True,
                        ),
                        name=str(sp.get("name") or ""),
                        kind=_enum(sp.get("kind"), SPAN_KINDS, "SPAN_KIND_", f"{where}.kind"),
                        start_ns=_int(sp.get("startTimeUnixNano", 0), f"{where}.startTimeUnixNano"),
                        end_ns=_int(sp.get("endTimeUnixNano", 0), f"{where}.endTimeUnixNano"),
                        attributes=_json_attrs(sp.get("attributes"), f"{where}.attributes"),
                        events=events,
                        status_code=_enum(
                            status.get("code"), STATUS_CODES, "STATUS_CODE_", f"{where}.status.code"
                        ),
                        status_message=str(status.get("message") or ""),
                        resource=resource,
                        scope=scope,
                    )
                )
    return spans

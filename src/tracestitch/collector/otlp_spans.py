"""OTLP trace data (protobuf or JSON) turned into LangSmith run posts.

Ids, so that every exporter's spans land where the rest of their trace is:

- the trace id is the 32-hex OTLP trace id as a UUID (as tracestitch's W3C propagation and OTLP
  export, and the LangSmith SDKs' OTel export, all map it);
- a span carrying its run's id (``langsmith.span.id``, set by the LangSmith JS SDK, or
  ``langsmith.run.id``, set by tracestitch's OTLP export) becomes that run, with its dotted
  order (``langsmith.span.dotted_order``) and parent (``langsmith.span.parent_id``);
- any other span becomes the run :func:`tracestitch.ids.uuid_from_w3c` names for its trace and
  span id: the UUID tracestitch's propagation gives a ``traceparent`` parent, so a tracestitch
  service called by an OpenTelemetry one links to that span's run, whichever arrives first;
- a parent span is the run that answers to that span id in the trace (the request's own spans
  first, then the store: a tracestitch run answers to its UUID's low 64 bits, the span id it
  sends in ``traceparent``), else the run its span id names as above, which the store re-points
  to the real run once that arrives (the span ids are kept in ``extra.otel`` too);
- the LangSmith Python SDK's OTel export parents each root span on a span id made of the
  trace's first 8 bytes that it never exports: such a span is a root.

Everything else maps as LangSmith's own OTel conventions say: ``langsmith.span.kind`` (run
type), ``langsmith.trace.name``, ``langsmith.trace.session_name`` (project),
``langsmith.metadata.*``, ``langsmith.span.tags``, ``gen_ai.prompt``/``gen_ai.completion``
(inputs/outputs) and ``gen_ai.usage.*`` (tokens); other attributes become metadata, the span's
status and exception events its error, its events the run's events, the resource's
``service.name`` the run's service.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import orjson

from tracestitch.ids import uuid_from_w3c

from .ingest import IngestError, RunOp, format_time_us, validate_op
from .otlp_decode import (
    SPAN_ID_RE,
    SPAN_KINDS,
    STATUS_CODES,
    TRACE_ID_RE,
    Span,
    decode_json,
    decode_protobuf,
    protobuf_available,
)

# Span and the decoders live in otlp_decode.py; importable from here as before.
__all__ = ["Span", "decode_json", "decode_protobuf", "protobuf_available", "spans_to_ops"]

_RUN_TYPES = {"tool", "chain", "llm", "retriever", "embedding", "prompt", "parser"}
_GEN_AI_RUN_TYPES = {
    "chat": "llm",
    "text_completion": "llm",
    "generate_content": "llm",
    "embeddings": "embedding",
    "execute_tool": "tool",
}
_OPENINFERENCE_RUN_TYPES = {
    "LLM": "llm",
    "TOOL": "tool",
    "RETRIEVER": "retriever",
    "EMBEDDING": "embedding",
    "CHAIN": "chain",
    "AGENT": "chain",
}
# Attributes that become run fields rather than metadata.
_RUN_ID_ATTRS = ("langsmith.span.id", "langsmith.run.id")
_CONSUMED = {
    *_RUN_ID_ATTRS,
    "langsmith.trace.id",
    "langsmith.span.parent_id",
    "langsmith.span.dotted_order",
    "langsmith.is_root",
    "langsmith.span.kind",
    "langsmith.trace.name",
    "langsmith.trace.session_name",
    "langsmith.trace.session_id",
    "langsmith.span.tags",
    "langsmith.usage_metadata",
    "langsmith.reference_example_id",
    "gen_ai.prompt",
    "gen_ai.completion",
    "input.value",
    "output.value",
}
_PROJECT_RESOURCE_ATTRS = ("langsmith.project", "openinference.project.name")


def _uuid_attr(attrs: dict[str, Any], *names: str) -> str | None:
    for name in names:
        value = attrs.get(name)
        if isinstance(value, str):
            try:
                return str(uuid.UUID(value))
            except ValueError:
                continue
    return None


def _json_text(value: Any, key: str) -> dict[str, Any]:
    """Inputs or outputs from an attribute holding them as JSON text (or plain text)."""
    if isinstance(value, str):
        try:
            parsed = orjson.loads(value)
        except orjson.JSONDecodeError:
            return {key: value}
        return parsed if isinstance(parsed, dict) else {key: parsed}
    return value if isinstance(value, dict) else {key: value}


def _unpacked(value: Any) -> Any:
    # The SDKs write a metadata value that is not a scalar as JSON text: read it back.
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


def _run_type(attrs: dict[str, Any]) -> str:
    run_type = attrs.get("langsmith.span.kind")
    if isinstance(run_type, str) and run_type in _RUN_TYPES:
        return run_type
    operation = attrs.get("gen_ai.operation.name")
    if isinstance(operation, str) and operation in _GEN_AI_RUN_TYPES:
        return _GEN_AI_RUN_TYPES[operation]
    kind = attrs.get("openinference.span.kind")
    if isinstance(kind, str) and kind.upper() in _OPENINFERENCE_RUN_TYPES:
        return _OPENINFERENCE_RUN_TYPES[kind.upper()]
    return "chain"


def _usage(attrs: dict[str, Any]) -> dict[str, Any] | None:
    text = attrs.get("langsmith.usage_metadata")
    if isinstance(text, str):
        try:
            usage = orjson.loads(text)
        except orjson.JSONDecodeError:
            usage = None
        if isinstance(usage, dict):
            return usage
    found: dict[str, Any] = {}
    for key, names in (
        ("input_tokens", ("gen_ai.usage.input_tokens", "llm.token_count.prompt")),
        ("output_tokens", ("gen_ai.usage.output_tokens", "llm.token_count.completion")),
        ("total_tokens", ("gen_ai.usage.total_tokens", "llm.token_count.total")),
    ):
        for name in names:
            if isinstance(attrs.get(name), int):
                found[key] = attrs[name]
                break
    return found or None


def _tags(value: Any) -> list[str] | None:
    if isinstance(value, str):
        return [tag.strip() for tag in value.split(",") if tag.strip()]
    if isinstance(value, list):
        return [str(tag) for tag in value]
    return None


def _error(span: Span) -> str | None:
    if span.status_code != 2:
        return None
    for name, _time, attrs in span.events:
        if name == "exception":
            message = attrs.get("exception.message")
            kind = attrs.get("exception.type")
            if message:
                return str(message)
            if kind:
                return str(kind)
    return span.status_message or "error"


def _time(ns: int, where: str) -> str:
    micros = ns // 1000
    try:
        return format_time_us(micros)
    except OverflowError:
        raise IngestError(f"{where}: time {ns} ns is out of range") from None


def _run(span: Span, run_id: str, parent_id: str | None, project: str | None) -> dict[str, Any]:
    attrs = span.attributes
    metadata: dict[str, Any] = {}
    for key, value in attrs.items():
        if key.startswith("langsmith.metadata."):
            metadata[key[len("langsmith.metadata.") :]] = _unpacked(value)
        elif key not in _CONSUMED:
            metadata[key] = value
    service = span.resource.get("service.name")
    if isinstance(service, str) and "service" not in metadata:
        metadata["service"] = service
    usage = _usage(attrs)
    run_type = _run_type(attrs)
    inputs = attrs.get("gen_ai.prompt", attrs.get("input.value"))
    outputs = attrs.get("gen_ai.completion", attrs.get("output.value"))
    out_doc = _json_text(outputs, "output") if outputs is not None else None
    if usage and not (out_doc and isinstance(out_doc.get("usage_metadata"), dict)):
        metadata["usage_metadata"] = usage
    model = attrs.get("gen_ai.response.model") or attrs.get("gen_ai.request.model")
    if run_type == "llm" and isinstance(model, str):
        metadata.setdefault("ls_model_name", model)
    otel: dict[str, Any] = {
        "span_id": span.span_hex,
        "kind": SPAN_KINDS.get(span.kind, str(span.kind)),
        "status": STATUS_CODES.get(span.status_code, str(span.status_code)),
    }
    if span.parent_hex:
        otel["parent_span_id"] = span.parent_hex
    if span.status_message:
        otel["status_message"] = span.status_message
    if span.scope:
        otel["scope"] = span.scope
    resource = {k: v for k, v in span.resource.items() if k != "service.name"}
    if resource:
        otel["resource"] = resource
    name = attrs.get("langsmith.trace.name")
    trace_id = _uuid_attr(attrs, "langsmith.trace.id") or str(uuid.UUID(span.trace_hex))
    run: dict[str, Any] = {
        "id": run_id,
        "trace_id": trace_id,
        "parent_run_id": parent_id,
        "name": name if isinstance(name, str) and name else (span.name or "span"),
        "run_type": run_type,
        "start_time": _time(span.start_ns, f"{span.where}.startTimeUnixNano"),
        "end_time": _time(span.end_ns, f"{span.where}.endTimeUnixNano") if span.end_ns else None,
        "inputs": _json_text(inputs, "input") if inputs is not None else {},
        "outputs": out_doc,
        "error": _error(span),
        "extra": {"metadata": metadata, "otel": otel},
        "tags": _tags(attrs.get("langsmith.span.tags")),
        "events": [
            {"name": event_name, "time": _time(ns, f"{span.where}.events"), "kwargs": event_attrs}
            for event_name, ns, event_attrs in span.events
        ]
        or None,
        "session_name": attrs.get("langsmith.trace.session_name") or project,
        "session_id": _uuid_attr(attrs, "langsmith.trace.session_id"),
        "reference_example_id": _uuid_attr(attrs, "langsmith.reference_example_id"),
    }
    order = attrs.get("langsmith.span.dotted_order")
    if isinstance(order, str) and order:
        run["dotted_order"] = order
    return run


SpanLookup = Callable[[str, list[str]], dict[str, str]]


def spans_to_ops(spans: list[Span], lookup: SpanLookup, project: str | None) -> list[RunOp]:
    """Validated run posts for ``spans``. ``lookup(trace_id, span_ids)`` finds stored runs by
    span id; ``project`` is the project of spans that name none (the ``Langsmith-Project``
    header, or the resource's ``langsmith.project``/``openinference.project.name``)."""
    own: dict[tuple[str, str], str] = {}
    for span in spans:
        run_id = _uuid_attr(span.attributes, *_RUN_ID_ATTRS)
        own[(span.trace_hex, span.span_hex)] = run_id or str(
            uuid_from_w3c(span.trace_hex, span.span_hex)
        )
    missing: dict[str, set[str]] = {}
    for span in spans:
        if span.parent_hex and (span.trace_hex, span.parent_hex) not in own:
            missing.setdefault(span.trace_hex, set()).add(span.parent_hex)
    stored: dict[tuple[str, str], str] = {}
    for trace_hex, span_ids in missing.items():
        for span_id, run_id in lookup(str(uuid.UUID(trace_hex)), sorted(span_ids)).items():
            stored[(trace_hex, span_id)] = run_id
    ops = []
    for span in spans:
        if not TRACE_ID_RE.fullmatch(span.trace_hex) or span.trace_hex == "0" * 32:
            raise IngestError(f"{span.where}: the trace id must be 16 bytes, not all zero")
        if not SPAN_ID_RE.fullmatch(span.span_hex) or span.span_hex == "0" * 16:
            raise IngestError(f"{span.where}: the span id must be 8 bytes, not all zero")
        attrs = span.attributes
        parent = _uuid_attr(attrs, "langsmith.span.parent_id")
        key = (span.trace_hex, span.parent_hex or "")
        if parent is not None or attrs.get("langsmith.span.dotted_order"):
            pass  # the run's own ids (or its dotted order, which validation reads) say
        elif attrs.get("langsmith.is_root") is True or not span.parent_hex:
            parent = None
        elif key in own:
            parent = own[key]
        elif key in stored:
            parent = stored[key]
        elif span.parent_hex == span.trace_hex[:16] and any(
            name.startswith("langsmith.") for name in attrs
        ):
            parent = None  # the LangSmith SDK's root, parented on a span it never exports
        else:
            parent = str(uuid_from_w3c(span.trace_hex, span.parent_hex))
        resource_project = next(
            (
                span.resource[name]
                for name in _PROJECT_RESOURCE_ATTRS
                if isinstance(span.resource.get(name), str)
            ),
            None,
        )
        run = _run(span, own[(span.trace_hex, span.span_hex)], parent, project or resource_project)
        ops.append(validate_op("post", run, span.where))
    return ops

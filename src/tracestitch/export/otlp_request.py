"""Ended runs (LangSmith wire dicts) as one OTLP ``ExportTraceServiceRequest``: what
:class:`tracestitch.export.otlp.OTLPSink` sends, shaped so that Jaeger, Tempo, Phoenix,
Langfuse and Logfire each find what they look for. Needs ``opentelemetry-proto``
(``pip install 'tracestitch[otlp]'``), imported on first use.

What a span carries:

- **Resource**: one per (service, project). ``service.name`` is the run's own service (the
  middleware's ``service=``, which defaults to ``OTEL_SERVICE_NAME`` or the app's name, is in
  every run of the request as ``metadata["service"]``), else the sink's ``service_name``
  (``OTEL_SERVICE_NAME``, or ``service.name`` in ``OTEL_RESOURCE_ATTRIBUTES``), else the
  spec's ``unknown_service:<executable>``. ``OTEL_RESOURCE_ATTRIBUTES`` (``service.version``,
  ``deployment.environment`` ...) go on every resource, with ``telemetry.sdk.*``;
  ``openinference.project.name`` (Phoenix's project) is the run's LangSmith project unless
  the resource attributes name one, and ``langsmith.project`` is kept.
- **Kind**: ``SERVER`` for the middleware's request runs, ``CLIENT`` for the client hooks'
  calls, ``INTERNAL`` otherwise (:mod:`tracestitch.export.otlp_http`), with the stable HTTP
  conventions on the first two.
- **LLM runs**: GenAI conventions and OpenInference's (:mod:`tracestitch.export.otlp_genai`);
  every span has ``openinference.span.kind`` and ``input.value`` / ``output.value`` with
  their MIME types.
- the ``langsmith.*`` attributes the LangSmith SDK's own OTel export writes; run events as
  span events; an error as status ``ERROR``, ``error.type`` and an ``exception`` event.

**Ids.** The trace id is the trace UUID's 128 bits. A span id is the run UUID's *low* 64 bits
(:func:`tracestitch.ids.span_id_from_run_id`), the same mapping :func:`tracestitch.propagation.
inject` writes into ``traceparent``, so an OpenTelemetry service called by this one names our
span as its parent, and a span an OpenTelemetry caller sent us (its id kept in the low 64 bits
of the stand-in parent's UUID, :func:`tracestitch.ids.uuid_from_w3c`) is our span's parent.
It is also LangSmith's own mapping between OTel span ids and run ids (its OTel ingest and the
JS SDK's OTel mode: the span id right-aligned, zero-padded). Why not the first 8 bytes, as the
LangSmith Python SDK uses for the OTel context it makes current inside a run: see
``docs/architecture.md`` ("OTLP span ids"); in short, for UUIDv7 the first 8 bytes are the
millisecond and a counter (LangSmith's own ids collide there for every run made in the same
millisecond), and the Python SDK's exported spans do not carry those ids anyway.
"""

from __future__ import annotations

import os
import re
import sys
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from tracestitch import ids
from tracestitch.export.otlp_genai import genai_attributes, openinference_kind
from tracestitch.export.otlp_http import (
    CLIENT,
    CONSUMER,
    PRODUCER,
    SERVER,
    http_attributes,
    http_error_type,
    span_role,
)
from tracestitch.export.wire import dumps
from tracestitch.version import __version__

__all__ = [
    "DEFAULT_MAX_ATTRIBUTE_BYTES",
    "build_request",
    "decode_request",
    "default_service_name",
    "import_proto",
]

#: Cap on each input/output/metadata attribute value: spans are not a payload store.
DEFAULT_MAX_ATTRIBUTE_BYTES = 8192
#: Per-span caps (beyond them, counted in ``dropped_*_count``), as OTel SDKs bound spans.
MAX_SPAN_ATTRIBUTES = 256
MAX_SPAN_EVENTS = 128
MAX_EVENT_ATTRIBUTES = 32

# "ValueError: boom" / "pkg.mod.Error: boom": the "Type: message" first line format_error writes.
_EXC_HEAD_RE = re.compile(r"([A-Za-z_][\w.]*)(?::\s?(.*))?", re.DOTALL)
_TRACEBACK = "Traceback (most recent call last):"
_HTTP_STATUS_ERROR_RE = re.compile(r"HTTP \d{3}\b.*")


def default_service_name() -> str:
    """The spec's fallback ``service.name``: ``unknown_service:`` + the executable's name."""
    exe = os.path.basename(sys.executable or "")
    return f"unknown_service:{exe}" if exe else "unknown_service"


def import_proto() -> Any:
    """The OTLP protobuf modules (service, common, resource, trace); an ImportError naming
    the ``otlp`` extra when ``opentelemetry-proto`` is missing."""
    try:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
        from opentelemetry.proto.common.v1 import common_pb2
        from opentelemetry.proto.resource.v1 import resource_pb2
        from opentelemetry.proto.trace.v1 import trace_pb2
    except ImportError as exc:
        raise ImportError(
            "OTLPSink needs the opentelemetry-proto package: pip install 'tracestitch[otlp]'"
        ) from exc
    return trace_service_pb2, common_pb2, resource_pb2, trace_pb2


def _micros(value: Any) -> int | None:
    if not value:
        return None
    try:
        return ids.to_micros(value if isinstance(value, (int, float)) else str(value))
    except (ValueError, TypeError, OverflowError):
        return None


def _capped(text: str, limit: int) -> tuple[str, bool]:
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text, False
    return raw[:limit].decode("utf-8", "ignore"), True


def _exception(error: str) -> tuple[str | None, str, str | None]:
    """(type, message, stacktrace) from a run's error text (``format_error``'s
    ``"Type: message\\n\\nTraceback ..."``, or whatever text a caller gave)."""
    head, sep, tail = error.partition(_TRACEBACK)
    stack = (sep + tail).rstrip() if sep else None
    head = head.strip()
    match = _EXC_HEAD_RE.fullmatch(head)
    if match is not None and (match.group(2) is not None or "." in head or head[:1].isupper()):
        return match.group(1), (match.group(2) or "").strip(), stack
    return None, head, stack


class _Proto:
    """The protobuf modules and the value conversions, bound once per request built."""

    def __init__(self, max_bytes: int) -> None:
        self.service, self.common, self.resource, self.trace = import_proto()
        self.max_bytes = max_bytes

    def value(self, v: Any) -> Any:
        common = self.common
        if isinstance(v, bool):
            return common.AnyValue(bool_value=v)
        if isinstance(v, int) and -(2**63) <= v < 2**63:
            return common.AnyValue(int_value=v)
        if isinstance(v, float):
            return common.AnyValue(double_value=v)
        if isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v):
            array = common.ArrayValue(
                values=[common.AnyValue(string_value=_capped(x, self.max_bytes)[0]) for x in v]
            )
            return common.AnyValue(array_value=array)
        text = v if isinstance(v, str) else dumps(v).decode()
        return common.AnyValue(string_value=_capped(text, self.max_bytes)[0])

    def kv(self, key: str, v: Any) -> Any:
        return self.common.KeyValue(key=key, value=self.value(v))

    def kvs(self, pairs: Sequence[tuple[str, Any]], limit: int) -> tuple[list[Any], int]:
        kept = [self.kv(k, v) for k, v in pairs[:limit]]
        return kept, max(len(pairs) - limit, 0)


def _run_service(run: Mapping[str, Any]) -> str | None:
    extra = run.get("extra")
    meta = extra.get("metadata") if isinstance(extra, Mapping) else None
    service = meta.get("service") if isinstance(meta, Mapping) else None
    return service if isinstance(service, str) and service else None


def _attributes(
    run: dict[str, Any], run_id: uuid.UUID, role: str, start: int, max_bytes: int
) -> list[tuple[str, Any]]:
    run_type = str(run.get("run_type") or "chain")
    name = str(run.get("name") or "run")
    project = str(run.get("session_name") or "default")
    attrs: list[tuple[str, Any]] = [
        # What the LangSmith SDK's own OTel export writes, so LangSmith's OTel ingest (and
        # anyone reading those names) sees the same run either way.
        ("langsmith.span.kind", run_type),
        ("langsmith.trace.name", name),
        ("langsmith.run.id", str(run_id)),
        ("langsmith.trace.session_name", project),
        ("openinference.span.kind", openinference_kind(run_type)),
    ]
    if run.get("dotted_order"):
        attrs.append(("langsmith.span.dotted_order", str(run["dotted_order"])))
    tags = [str(t) for t in run.get("tags") or () if t is not None]
    if tags:
        attrs.append(("langsmith.span.tags", ", ".join(tags)))
        attrs.append(("tag.tags", tags))
    extra = run.get("extra")
    meta = extra.get("metadata") if isinstance(extra, Mapping) else None
    if isinstance(meta, Mapping) and meta:
        for key, item in meta.items():
            if item is not None:
                attrs.append((f"langsmith.metadata.{key}", item))
        attrs.append(("metadata", dict(meta)))  # OpenInference: one JSON string
    for field, attr in (("inputs", "input"), ("outputs", "output")):
        if run.get(field) is not None:
            text, truncated = _capped(dumps(run[field]).decode(), max_bytes)
            attrs.append((f"{attr}.value", text))
            attrs.append((f"{attr}.mime_type", "application/json"))
            if truncated:
                attrs.append((f"{attr}.value.truncated", True))
    attrs.extend(http_attributes(run, role))
    attrs.extend(genai_attributes(run, start))
    return attrs


def _events(
    proto: _Proto, run: Mapping[str, Any], start: int, end: int, role: str, attrs: list[Any]
) -> tuple[list[Any], int, Any]:
    """Span events (the run's, then an ``exception`` event), dropped count, and status."""
    trace_pb2 = proto.trace
    events: list[Any] = []
    raw_events = [e for e in run.get("events") or () if isinstance(e, Mapping)]
    for event in raw_events[:MAX_SPAN_EVENTS]:
        when = _micros(event.get("time")) or start
        kwargs = event.get("kwargs")
        pairs = list(kwargs.items()) if isinstance(kwargs, Mapping) else []
        ev_attrs, dropped = proto.kvs([(str(k), v) for k, v in pairs], MAX_EVENT_ATTRIBUTES)
        events.append(
            trace_pb2.Span.Event(
                name=str(event.get("name", "event")),
                time_unix_nano=when * 1000,
                attributes=ev_attrs,
                dropped_attributes_count=dropped,
            )
        )
    dropped_events = max(len(raw_events) - MAX_SPAN_EVENTS, 0)
    error = run.get("error")
    status_error = http_error_type(run, role) if role in (SERVER, CLIENT) else None
    if error:
        text = str(error)
        if status_error is not None and _HTTP_STATUS_ERROR_RE.fullmatch(text.strip()):
            # The response's status, not an exception: no exception event to show.
            attrs.append(proto.kv("error.type", status_error))
        else:
            kind, message, stack = _exception(text)
            ex_attrs = []
            if kind:
                ex_attrs.append(proto.kv("exception.type", kind))
            ex_attrs.append(proto.kv("exception.message", message))
            if stack:
                ex_attrs.append(proto.kv("exception.stacktrace", stack))
            exception = trace_pb2.Span.Event(
                name="exception", time_unix_nano=end * 1000, attributes=ex_attrs
            )
            events.append(exception)
            attrs.append(proto.kv("error.type", kind or status_error or "_OTHER"))
        status = trace_pb2.Status(
            code=trace_pb2.Status.STATUS_CODE_ERROR,
            message=_capped(text.split("\n", 1)[0], 1024)[0],
        )
    elif status_error is not None:
        # A client's 4xx: an error on the calling side (semconv), though the run has no error.
        attrs.append(proto.kv("error.type", status_error))
        status = trace_pb2.Status(
            code=trace_pb2.Status.STATUS_CODE_ERROR, message=f"HTTP {status_error}"
        )
    else:
        status = trace_pb2.Status(code=trace_pb2.Status.STATUS_CODE_OK)
    return events, dropped_events, status


def build_request(
    runs: Sequence[Mapping[str, Any]],
    *,
    service_name: str | None = None,
    resource_attributes: Mapping[str, str] | None = None,
    max_attribute_bytes: int = DEFAULT_MAX_ATTRIBUTE_BYTES,
) -> Any:
    """An ``ExportTraceServiceRequest`` for complete run dicts (LangSmith wire shape): one
    resource per (service, project), ``service_name`` for runs that carry no service."""
    proto = _Proto(max_attribute_bytes)
    trace_pb2 = proto.trace
    fallback_service = service_name or default_service_name()
    extra_resource = dict(resource_attributes or {})
    extra_resource.pop("service.name", None)
    kinds = {
        SERVER: trace_pb2.Span.SPAN_KIND_SERVER,
        CLIENT: trace_pb2.Span.SPAN_KIND_CLIENT,
        CONSUMER: trace_pb2.Span.SPAN_KIND_CONSUMER,
        PRODUCER: trace_pb2.Span.SPAN_KIND_PRODUCER,
    }
    by_resource: dict[tuple[str, str], list[Any]] = {}
    for raw in runs:
        run = dict(raw)
        run_id = uuid.UUID(str(run["id"]))
        trace_id = uuid.UUID(str(run.get("trace_id") or run_id))
        start = _micros(run.get("start_time")) or 0
        end = _micros(run.get("end_time")) or start
        role = span_role(run)
        pairs = _attributes(run, run_id, role, start, max_attribute_bytes)
        attrs, dropped_attrs = proto.kvs(pairs, MAX_SPAN_ATTRIBUTES)
        events, dropped_events, status = _events(proto, run, start, end, role, attrs)
        parent = run.get("parent_run_id")
        span = trace_pb2.Span(
            trace_id=trace_id.bytes,
            span_id=bytes.fromhex(ids.span_id_from_run_id(run_id)),
            parent_span_id=(
                bytes.fromhex(ids.span_id_from_run_id(uuid.UUID(str(parent)))) if parent else b""
            ),
            name=str(run.get("name") or "run"),
            kind=kinds.get(role, trace_pb2.Span.SPAN_KIND_INTERNAL),
            start_time_unix_nano=start * 1000,
            end_time_unix_nano=max(end, start) * 1000,
            attributes=attrs,
            dropped_attributes_count=dropped_attrs,
            events=events,
            dropped_events_count=dropped_events,
            status=status,
        )
        key = (_run_service(run) or fallback_service, str(run.get("session_name") or "default"))
        by_resource.setdefault(key, []).append(span)
    scope = proto.common.InstrumentationScope(name="tracestitch", version=__version__)
    resource_spans = []
    for (service, project), spans in by_resource.items():
        resource = {
            **extra_resource,
            "service.name": service,
            "telemetry.sdk.name": "tracestitch",
            "telemetry.sdk.language": "python",
            "telemetry.sdk.version": __version__,
            "langsmith.project": project,
            # Phoenix files spans by this; a deployment that names it keeps its choice.
            "openinference.project.name": extra_resource.get("openinference.project.name", project),
        }
        resource_spans.append(
            trace_pb2.ResourceSpans(
                resource=proto.resource.Resource(
                    attributes=[proto.kv(k, v) for k, v in resource.items()]
                ),
                scope_spans=[trace_pb2.ScopeSpans(scope=scope, spans=spans)],
            )
        )
    return proto.service.ExportTraceServiceRequest(resource_spans=resource_spans)


def decode_request(body: bytes) -> Any:
    """Parse an OTLP body back into an ``ExportTraceServiceRequest`` (for tests and tools)."""
    trace_service_pb2 = import_proto()[0]
    request = trace_service_pb2.ExportTraceServiceRequest()
    request.ParseFromString(body)
    return request

"""``OTLPSink``: runs as OpenTelemetry spans, OTLP/HTTP protobuf, shaped so that Jaeger, Tempo,
Phoenix, Langfuse and Logfire each find what they look for.

Needs the ``opentelemetry-proto`` package (``pip install 'tracestitch[otlp]'``), imported
when the sink is created, so ``import tracestitch`` never pays for protobuf.

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

OTLP spans are immutable, so a run is exported once, when it has ended; the inputs of a run
posted at start are kept (bounded) until its patch arrives.

Example::

    exporter = BatchExporter(OTLPSink("http://otel-collector:4318"))
    exporter = BatchExporter(OTLPSink.from_settings(otlp_settings_from_env(os.environ)))
"""

from __future__ import annotations

import os
import re
import sys
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from tracestitch import ids
from tracestitch.export._http import HTTPTarget
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
from tracestitch.export.wire import WireOp, compress, dumps
from tracestitch.version import __version__

if TYPE_CHECKING:
    from tracestitch.export.otel_env import OTLPSettings

__all__ = ["OTLPSink", "build_request", "decode_request", "default_service_name"]

#: Cap on each input/output/metadata attribute value: spans are not a payload store.
DEFAULT_MAX_ATTRIBUTE_BYTES = 8192
#: Per-span caps (beyond them, counted in ``dropped_*_count``), as OTel SDKs bound spans.
MAX_SPAN_ATTRIBUTES = 256
MAX_SPAN_EVENTS = 128
MAX_EVENT_ATTRIBUTES = 32
_PENDING_LIMIT = 10_000
_TRACES_PATH = "/v1/traces"
_USER_AGENT = f"tracestitch-otlp-exporter-python/{__version__}"

# "ValueError: boom" / "pkg.mod.Error: boom": the "Type: message" first line format_error writes.
_EXC_HEAD_RE = re.compile(r"([A-Za-z_][\w.]*)(?::\s?(.*))?", re.DOTALL)
_TRACEBACK = "Traceback (most recent call last):"
_HTTP_STATUS_ERROR_RE = re.compile(r"HTTP \d{3}\b.*")


def default_service_name() -> str:
    """The spec's fallback ``service.name``: ``unknown_service:`` + the executable's name."""
    exe = os.path.basename(sys.executable or "")
    return f"unknown_service:{exe}" if exe else "unknown_service"


def _import_proto() -> Any:
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
        self.service, self.common, self.resource, self.trace = _import_proto()
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


def _split_url(url: str) -> tuple[str, str]:
    """(``scheme://host:port``, path with query) of a traces URL; an empty path is ``/``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    host = parts.hostname
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    origin = f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")
    path = parts.path or "/"
    return origin, f"{path}?{parts.query}" if parts.query else path


class OTLPSink:
    """Sends ended runs as spans to an OTLP/HTTP endpoint.

    ``endpoint`` is a base URL (``http://host:4318``: ``/v1/traces`` is added unless the URL
    already ends with it, like ``OTEL_EXPORTER_OTLP_ENDPOINT``); ``traces_endpoint`` is the
    full traces URL, used as is (like ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``). Give one.
    ``service_name`` names the service of runs that carry none; ``resource_attributes`` go on
    every resource. :meth:`from_settings` builds one from the OTel environment variables.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        traces_endpoint: str | None = None,
        headers: Mapping[str, str] | None = None,
        service_name: str | None = None,
        resource_attributes: Mapping[str, str] | None = None,
        compression: bool = True,
        timeout: float = 10.0,
        max_attribute_bytes: int = DEFAULT_MAX_ATTRIBUTE_BYTES,
    ) -> None:
        _import_proto()  # fail here, at configuration, with the install hint
        if (endpoint is None) == (traces_endpoint is None):
            raise TypeError("OTLPSink needs exactly one of endpoint and traces_endpoint")
        if traces_endpoint is None:
            assert endpoint is not None
            base = endpoint.rstrip("/")
            traces_endpoint = base if base.endswith(_TRACES_PATH) else base + _TRACES_PATH
        origin, self._path = _split_url(traces_endpoint)
        self._target = HTTPTarget(origin, timeout=timeout)
        self._headers = dict(headers or {})  # may hold credentials: never in the repr
        self.service_name = service_name
        self.resource_attributes = dict(resource_attributes or {})
        self.compression = compression
        self.max_attribute_bytes = max_attribute_bytes
        # Inputs of runs posted at start, until their patch brings the end (bounded LRU).
        self._pending: OrderedDict[str, dict[str, Any]] = OrderedDict()

    @classmethod
    def from_settings(cls, settings: OTLPSettings, **options: Any) -> OTLPSink:
        """A sink for what :func:`tracestitch.export.otel_env.otlp_settings_from_env` read;
        ``options`` (``max_attribute_bytes`` ...) go to the constructor."""
        return cls(
            traces_endpoint=settings.traces_endpoint,
            headers=settings.headers,
            service_name=settings.service_name,
            resource_attributes=settings.resource_attributes,
            compression=settings.compression != "none",
            timeout=settings.timeout,
            **options,
        )

    @property
    def url(self) -> str:
        """Where spans are POSTed."""
        return f"{self._target.url}{self._path}"

    def __repr__(self) -> str:
        return f"OTLPSink({self.url})"

    def _complete_runs(self, ops: Sequence[WireOp]) -> list[dict[str, Any]]:
        complete: list[dict[str, Any]] = []
        for op in ops:
            run = op.to_dict()
            earlier = self._pending.pop(op.run_id, None)
            if earlier is not None:
                run = {**earlier, **{k: v for k, v in run.items() if v is not None}}
            if run.get("end_time"):
                complete.append(run)
            else:
                self._pending[op.run_id] = run
                if len(self._pending) > _PENDING_LIMIT:
                    self._pending.popitem(last=False)
        return complete

    def send(self, ops: Sequence[WireOp]) -> None:
        runs = self._complete_runs(ops)
        if not runs:
            return
        request = build_request(
            runs,
            service_name=self.service_name,
            resource_attributes=self.resource_attributes,
            max_attribute_bytes=self.max_attribute_bytes,
        )
        body = request.SerializeToString()
        headers = {
            "User-Agent": _USER_AGENT,
            **self._headers,
            "Content-Type": "application/x-protobuf",
        }
        if self.compression:
            body = compress(body, "gzip")
            headers["Content-Encoding"] = "gzip"
        resp = self._target.post(self._path, body, headers)
        # OTLP/HTTP: 429, 502, 503, 504 are the retryable ones; 500 is not, but one more
        # attempt costs little, so the shared rule (5xx retryable) applies.
        resp.raise_for_status()

    def close(self) -> None:
        self._target.close()

    def reset_after_fork(self) -> None:
        self._target.reset_after_fork()


def decode_request(body: bytes) -> Any:
    """Parse an OTLP body back into an ``ExportTraceServiceRequest`` (for tests and tools)."""
    trace_service_pb2 = _import_proto()[0]
    request = trace_service_pb2.ExportTraceServiceRequest()
    request.ParseFromString(body)
    return request

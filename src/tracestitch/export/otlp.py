"""``OTLPSink``: runs as OpenTelemetry spans, OTLP/HTTP protobuf to ``{endpoint}/v1/traces``.

Needs the ``opentelemetry-proto`` package (``pip install 'tracestitch[otlp]'``), imported
when the sink is created, so ``import tracestitch`` never pays for protobuf.

Ids match what :func:`tracestitch.propagation.inject` writes in ``traceparent``: the trace id
is the trace UUID's 128 bits and a span id is :func:`tracestitch.ids.span_id_from_run_id` (the
run UUID's low 64 bits), parents likewise, so spans from OpenTelemetry-instrumented hops link
with ours. OTLP spans are immutable, so a run is exported once, when it has ended; the inputs
of a run posted at start are kept (bounded) until its patch arrives.

Example::

    exporter = BatchExporter(OTLPSink("http://otel-collector:4318"))
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from tracestitch import ids
from tracestitch.export._http import HTTPTarget
from tracestitch.export.wire import WireOp, compress, dumps

__all__ = ["OTLPSink", "build_request"]

#: Cap on each input/output/metadata attribute value: spans are not a payload store.
DEFAULT_MAX_ATTRIBUTE_BYTES = 8192
_PENDING_LIMIT = 10_000


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
        return ids.to_micros(str(value))
    except (ValueError, TypeError):
        return None


def _capped(text: str, limit: int) -> tuple[str, bool]:
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text, False
    return raw[:limit].decode("utf-8", "ignore"), True


def build_request(
    runs: Sequence[Mapping[str, Any]],
    *,
    service_name: str = "tracestitch",
    max_attribute_bytes: int = DEFAULT_MAX_ATTRIBUTE_BYTES,
) -> Any:
    """An ``ExportTraceServiceRequest`` for complete run dicts (LangSmith wire shape), one
    resource per project (``service.name`` = ``service_name``, ``langsmith.project``)."""
    trace_service_pb2, common_pb2, resource_pb2, trace_pb2 = _import_proto()

    def value(v: Any) -> Any:
        if isinstance(v, bool):
            return common_pb2.AnyValue(bool_value=v)
        if isinstance(v, int) and -(2**63) <= v < 2**63:
            return common_pb2.AnyValue(int_value=v)
        if isinstance(v, float):
            return common_pb2.AnyValue(double_value=v)
        text = v if isinstance(v, str) else dumps(v).decode()
        return common_pb2.AnyValue(string_value=_capped(text, max_attribute_bytes)[0])

    def kv(key: str, v: Any) -> Any:
        return common_pb2.KeyValue(key=key, value=value(v))

    by_project: dict[str, list[Any]] = {}
    for run in runs:
        run_id = uuid.UUID(str(run["id"]))
        trace_id = uuid.UUID(str(run.get("trace_id") or run_id))
        start = _micros(run.get("start_time")) or 0
        end = _micros(run.get("end_time")) or start
        attrs = [
            kv("langsmith.span.kind", run.get("run_type") or "chain"),
            kv("langsmith.run.id", str(run_id)),
            kv("langsmith.trace.session_name", run.get("session_name") or "default"),
        ]
        if run.get("dotted_order"):
            attrs.append(kv("langsmith.span.dotted_order", run["dotted_order"]))
        tags = run.get("tags") or []
        if tags:
            array = common_pb2.ArrayValue(values=[value(str(t)) for t in tags])
            attrs.append(
                common_pb2.KeyValue(
                    key="langsmith.span.tags", value=common_pb2.AnyValue(array_value=array)
                )
            )
        meta = (run.get("extra") or {}).get("metadata") or {}
        for key, item in meta.items():
            attrs.append(kv(f"langsmith.metadata.{key}", item))
        for field, attr in (("inputs", "input.value"), ("outputs", "output.value")):
            if run.get(field) is not None:
                text, truncated = _capped(dumps(run[field]).decode(), max_attribute_bytes)
                attrs.append(kv(attr, text))
                if truncated:
                    attrs.append(kv(f"{attr}.truncated", True))
        events = []
        for event in run.get("events") or []:
            if not isinstance(event, Mapping):
                continue
            when = _micros(event.get("time")) or start
            ev_attrs = [kv(str(k), v) for k, v in (event.get("kwargs") or {}).items()]
            events.append(
                trace_pb2.Span.Event(
                    name=str(event.get("name", "event")),
                    time_unix_nano=when * 1000,
                    attributes=ev_attrs,
                )
            )
        error = run.get("error")
        status = trace_pb2.Status(
            code=trace_pb2.Status.STATUS_CODE_ERROR if error else trace_pb2.Status.STATUS_CODE_OK,
            message=_capped(str(error).split("\n", 1)[0], 1024)[0] if error else "",
        )
        parent = run.get("parent_run_id")
        span = trace_pb2.Span(
            trace_id=trace_id.bytes,
            span_id=bytes.fromhex(ids.span_id_from_run_id(run_id)),
            parent_span_id=(
                bytes.fromhex(ids.span_id_from_run_id(uuid.UUID(str(parent)))) if parent else b""
            ),
            name=str(run.get("name") or "run"),
            kind=trace_pb2.Span.SPAN_KIND_INTERNAL,
            start_time_unix_nano=start * 1000,
            end_time_unix_nano=end * 1000,
            attributes=attrs,
            events=events,
            status=status,
        )
        by_project.setdefault(str(run.get("session_name") or "default"), []).append(span)
    resource_spans = [
        trace_pb2.ResourceSpans(
            resource=resource_pb2.Resource(
                attributes=[kv("service.name", service_name), kv("langsmith.project", project)]
            ),
            scope_spans=[
                trace_pb2.ScopeSpans(
                    scope=common_pb2.InstrumentationScope(name="tracestitch"), spans=spans
                )
            ],
        )
        for project, spans in by_project.items()
    ]
    return trace_service_pb2.ExportTraceServiceRequest(resource_spans=resource_spans)


class OTLPSink:
    """Sends ended runs as spans to an OTLP/HTTP endpoint (``http://host:4318``; the
    ``/v1/traces`` path is added unless the URL already ends with it)."""

    def __init__(
        self,
        endpoint: str,
        *,
        headers: Mapping[str, str] | None = None,
        service_name: str = "tracestitch",
        compression: bool = True,
        timeout: float = 10.0,
        max_attribute_bytes: int = DEFAULT_MAX_ATTRIBUTE_BYTES,
    ) -> None:
        _import_proto()  # fail here, at configuration, with the install hint
        base = endpoint.rstrip("/")
        if base.endswith("/v1/traces"):
            base = base[: -len("/v1/traces")]
        self._target = HTTPTarget(base, timeout=timeout)
        self._headers = dict(headers or {})  # may hold credentials: never in the repr
        self.service_name = service_name
        self.compression = compression
        self.max_attribute_bytes = max_attribute_bytes
        # Inputs of runs posted at start, until their patch brings the end (bounded LRU).
        self._pending: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def __repr__(self) -> str:
        return f"OTLPSink({self._target.url}/v1/traces)"

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
            runs, service_name=self.service_name, max_attribute_bytes=self.max_attribute_bytes
        )
        body = request.SerializeToString()
        headers = {**self._headers, "Content-Type": "application/x-protobuf"}
        if self.compression:
            body = compress(body, "gzip")
            headers["Content-Encoding"] = "gzip"
        resp = self._target.post("/v1/traces", body, headers)
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

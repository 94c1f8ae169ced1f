"""OTLP span ids against the LangSmith SDK's own OpenTelemetry export, run for real in-process
(its ``Client(tracing_mode="otel")`` exporter over the OTel SDK's OTLP/HTTP exporter) and
decoded from what a receiver on 127.0.0.1 got.

tracestitch maps a run UUID to a span id by its low 64 bits (``ids.span_id_from_run_id``), in
``traceparent`` and in the OTLP sink alike. docs/architecture.md ("OTLP span ids") gives the
reasons; the premises the decision rests on are checked here too, so a LangSmith release that
changes them fails a test rather than silently unlinking traces.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Iterator
from typing import Any

import langsmith
import pytest
from export_helpers import IngestServer, ingest_server
from langsmith._internal._otel_utils import get_otel_span_id_from_uuid
from langsmith.integrations.otel import langsmith_run_id_from_otel_span_id
from langsmith.uuid import uuid7_from_datetime
from opentelemetry import context as otel_context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from tracestitch import RunTree, ids
from tracestitch.export.otlp import OTLPSink, decode_request
from tracestitch.export.worker import BatchExporter

W3C = TraceContextTextMapPropagator()


def _spans(server: IngestServer) -> dict[str, tuple[str, Any]]:
    """name -> (service.name, span) of everything the receiver got, from both exporters."""
    found: dict[str, tuple[str, Any]] = {}
    for body in list(server.capture.otlp):
        for rs in decode_request(body).resource_spans:
            service = next(
                a.value.string_value for a in rs.resource.attributes if a.key == "service.name"
            )
            for ss in rs.scope_spans:
                for span in ss.spans:
                    assert span.name not in found, span.name
                    found[span.name] = (service, span)
    return found


def _span_id(run_id: uuid.UUID) -> bytes:
    return bytes.fromhex(ids.span_id_from_run_id(run_id))


@pytest.fixture
def receiver() -> Iterator[IngestServer]:
    with ingest_server() as server:
        yield server


@pytest.fixture
def langsmith_otel(
    receiver: IngestServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[langsmith.Client, TracerProvider]]:
    """A LangSmith SDK client in OTel-only mode, its spans going over the OTel SDK's real
    OTLP/HTTP exporter to the receiver (nothing is sent to a LangSmith API)."""
    # Should any SDK path fall back to a default client, it stays on this machine.
    monkeypatch.setenv("LANGSMITH_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("LANGSMITH_API_KEY", "unused")
    provider = TracerProvider(resource=Resource.create({"service.name": "langsmith-service"}))
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{receiver.url}/v1/traces", timeout=10))
    )
    client = langsmith.Client(
        api_url="http://127.0.0.1:9", api_key="unused", tracing_mode="otel",
        otel_tracer_provider=provider,
    )  # fmt: skip
    try:
        yield client, provider
    finally:
        client.flush()
        provider.shutdown()


def test_langsmith_service_links_under_our_client_span_through_traceparent(
    receiver: IngestServer, langsmith_otel: tuple[langsmith.Client, TracerProvider]
) -> None:
    client, provider = langsmith_otel
    exporter = BatchExporter(OTLPSink(receiver.url, service_name="gateway"), flush_interval=5)
    root = RunTree(name="GET /ask", exporter=exporter)
    call = root.create_child("GET assistant/chat", "tool")
    headers = call.to_headers()
    their_ids: dict[str, uuid.UUID] = {}

    @langsmith.traceable(client=client, name="chat-service")
    def service() -> str:
        their_ids["chat-service"] = langsmith.get_current_run_tree().id
        return model()

    @langsmith.traceable(client=client, run_type="llm", name="model")
    def model() -> str:
        their_ids["model"] = langsmith.get_current_run_tree().id
        return "hello"

    # The LangSmith-SDK service as an OTel-instrumented server runs it: the OTel context from
    # the request's traceparent, the LangSmith parent from its langsmith-trace (bound to the
    # OTel-mode client: a parent from headers would otherwise get the default client).
    their_parent = langsmith.RunTree.from_headers(headers, client=client)
    token = otel_context.attach(W3C.extract(headers))
    try:
        with langsmith.tracing_context(enabled=True, parent=their_parent, client=client):
            assert service() == "hello"
    finally:
        otel_context.detach(token)
    client.flush()
    provider.force_flush()
    call.end()
    call.post()
    root.end()
    root.post()
    assert exporter.flush(5)
    exporter.shutdown()

    spans = _spans(receiver)
    assert {spans[n][0] for n in ("GET /ask", "GET assistant/chat")} == {"gateway"}
    assert {spans[n][0] for n in ("chat-service", "model")} == {"langsmith-service"}
    ours, theirs, their_child = (
        spans[n][1] for n in ("GET assistant/chat", "chat-service", "model")
    )
    # Our exported client span is the one the traceparent named, so their span hangs under it.
    assert ours.span_id == _span_id(call.id)
    assert headers["traceparent"].split("-")[2] == ours.span_id.hex()
    assert theirs.parent_span_id == ours.span_id
    assert theirs.trace_id == ours.trace_id == root.trace_id.bytes
    assert their_child.parent_span_id == theirs.span_id
    # The premise: LangSmith's exported spans carry OTel's own random ids, not the first
    # 8 bytes of their run ids (get_otel_span_id_from_uuid, which it only uses for the OTel
    # context it makes current inside a run). Were that to change, revisit the mapping.
    for name, run_id in their_ids.items():
        first8 = get_otel_span_id_from_uuid(run_id).to_bytes(8, "big")
        assert spans[name][1].span_id != first8, name


def test_otel_parent_from_traceparent_links_above_our_span(
    receiver: IngestServer, langsmith_otel: tuple[langsmith.Client, TracerProvider]
) -> None:
    _client, provider = langsmith_otel
    exporter = BatchExporter(OTLPSink(receiver.url, service_name="pricing"), flush_interval=5)
    with provider.get_tracer("caller").start_as_current_span("GET /quote") as caller:
        carrier: dict[str, str] = {}
        W3C.inject(carrier)  # what an OTel-instrumented client sends
    parent = RunTree.from_headers(carrier, exporter=exporter)
    assert parent is not None
    run = parent.create_child("GET /price", "chain")
    run.end()
    run.post()
    assert exporter.flush(5)
    exporter.shutdown()
    provider.force_flush()
    spans = _spans(receiver)
    ours, theirs = spans["GET /price"][1], spans["GET /quote"][1]
    assert theirs.span_id == caller.get_span_context().span_id.to_bytes(8, "big")
    assert ours.parent_span_id == theirs.span_id
    assert ours.trace_id == theirs.trace_id


def test_langsmith_run_ids_for_otel_spans_match_our_mapping(receiver: IngestServer) -> None:
    """LangSmith names the run of an OTel span by the span id right-aligned in a zeroed UUID
    (its OTel ingest; the JS SDK's OTel-mode roots), i.e. by the low 64 bits, like us."""
    span_id = 0x5A17C0FFEE15BEEF
    trace = uuid.UUID(int=0x0123456789ABCDEF0123456789ABCDEF)
    named = langsmith_run_id_from_otel_span_id(span_id)
    # A run so named, calling us with langsmith-trace: our span's parent is that OTel span.
    upstream = RunTree(name="otel-named", id=named, trace_id=trace)
    exporter = BatchExporter(OTLPSink(receiver.url), flush_interval=5)
    parent = RunTree.from_headers(upstream.to_headers(), exporter=exporter)
    assert parent is not None
    child = parent.create_child("ours", "chain")
    child.end()
    child.post()
    assert exporter.flush(5)
    exporter.shutdown()
    ours = _spans(receiver)["ours"][1]
    assert ours.parent_span_id == span_id.to_bytes(8, "big")  # first 8 bytes would be zeros
    assert ours.trace_id == trace.bytes
    # And LangSmith's ingest of our span names its run by the bits our traceparent carries.
    assert langsmith_run_id_from_otel_span_id(ours.span_id).int == child.id.int & (2**64 - 1)


def test_first_eight_bytes_collide_for_runs_started_in_one_millisecond() -> None:
    """Why not the first 8 bytes: in a UUIDv7 they are the millisecond and 12 more bits.
    LangSmith's RunTree ids (uuid7_from_datetime of the start) draw those 12 bits at random,
    so two runs started in the same millisecond share them with odds 1 in 4096; the low
    64 bits (variant + 62 random bits) stay distinct."""
    start = datetime.datetime.now(datetime.timezone.utc)
    made = [uuid7_from_datetime(start) for _ in range(600)]  # one millisecond, 600 runs
    first8 = {u.bytes[:8] for u in made}
    low8 = {u.bytes[8:] for u in made}
    assert len(low8) == len(made)
    # Birthday bound: P(no collision among 600 over 4096 values) = ~1e-19.
    assert len(first8) < len(made)

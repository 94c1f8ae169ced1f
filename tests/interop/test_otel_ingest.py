"""OTLP into the real ``tracestitch serve``: the LangSmith SDK's OTel-only mode (every run
arrives), and OpenTelemetry services chained with a tracestitch service in both directions (one
trace, parent links right, whichever arrives first)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
from interop_helpers import API_KEY, Collector, clean_env
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import tracestitch
from servers import run_uvicorn
from tracestitch.clients.httpx import AsyncTracingTransport
from tracestitch.middleware.asgi import TracingMiddleware

HERE = Path(__file__).resolve().parent
W3C = TraceContextTextMapPropagator()


def test_langsmith_sdk_otel_only_mode_loses_no_run(collector: Collector) -> None:
    env = clean_env(
        LANGSMITH_TRACING="true",
        LANGSMITH_TRACING_MODE="otel",  # the SDK's OTel-only mode (LANGSMITH_OTEL_ONLY, legacy)
        LANGSMITH_ENDPOINT=collector.url,  # OTLP goes to {endpoint}/otel/v1/traces
        LANGSMITH_API_KEY=API_KEY,
        LANGSMITH_PROJECT="otel-proj",
        OTEL_EXPORTER_OTLP_COMPRESSION="gzip",
    )
    done = subprocess.run(
        [sys.executable, str(HERE / "sdk_otel_mode.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    runs = {(r["name"], r["status"]): r for r in collector.runs()}
    assert set(runs) == {
        ("otel-root", "success"),
        ("otel-llm", "success"),
        ("otel-tool", "success"),
        ("otel-tool", "error"),
    }
    root, llm = runs[("otel-root", "success")], runs[("otel-llm", "success")]
    failed = runs[("otel-tool", "error")]
    assert root["parent_run_id"] is None
    assert {r["trace_id"] for r in runs.values()} == {root["trace_id"]}
    assert {r["parent_run_id"] for r in runs.values() if r is not root} == {root["id"]}
    assert {r["project"] for r in runs.values()} == {"otel-proj"}
    assert (root["run_type"], llm["run_type"], failed["run_type"]) == ("chain", "llm", "tool")
    assert root["tags"] == ["otel-tag"] and root["extra"]["metadata"]["tenant"] == "acme"
    assert llm["inputs"] == {"p": "hi"} and llm["outputs"]["text"] == "hi"
    assert "otel tool failed" in failed["error"]
    # Sent once, as OTLP (gzip), and nothing else: no LangSmith ingest in OTel-only mode.
    assert collector.requests() == {"POST /otel/v1/traces 200": 1}
    assert collector.get(f"/api/runs/{llm['id']}")["total_tokens"] == 18
    assert collector.get("/api/stats")["ingest"]["otlp:gzip"] == 1


def _otel_provider(collector: Collector, service: str) -> TracerProvider:
    provider = TracerProvider(resource=Resource({"service.name": service}))
    exporter = OTLPSpanExporter(
        endpoint=collector.url + "/v1/traces", headers={"x-api-key": API_KEY}
    )
    # Exported as each span ends: the back span reaches the collector before the tracestitch
    # run it is the child of (exported once that run ends), the order that tests re-linking.
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def test_otel_services_and_a_tracestitch_service_make_one_trace(collector: Collector) -> None:
    front = _otel_provider(collector, "otel-front")
    back = _otel_provider(collector, "otel-back")
    back_tracer = back.get_tracer("interop")

    async def back_handler(request: Request) -> JSONResponse:
        context = W3C.extract(dict(request.headers))
        with back_tracer.start_as_current_span("otel-back", context=context, kind=SpanKind.SERVER):
            return JSONResponse({"ok": True})

    async def mid_handler(request: Request) -> JSONResponse:
        async with httpx.AsyncClient(transport=AsyncTracingTransport()) as client:
            reply = await client.get(request.query_params["back"] + "/back")
        return JSONResponse(reply.json())

    otel_app = Starlette(routes=[Route("/back", back_handler)])
    ts_app = Starlette(
        routes=[Route("/mid", mid_handler)],
        middleware=[Middleware(TracingMiddleware, service="ts-mid")],
    )
    exporter = tracestitch.configure(
        endpoint=collector.url, api_key=API_KEY, spool_dir=None, flush_interval=0.05
    )
    try:
        with run_uvicorn(otel_app) as back_url, run_uvicorn(ts_app) as mid_url:
            tracer = front.get_tracer("interop")
            with tracer.start_as_current_span("otel-front", kind=SpanKind.CLIENT) as span:
                headers: dict[str, str] = {}
                W3C.inject(headers)
                reply = httpx.get(f"{mid_url}/mid", params={"back": back_url}, headers=headers)
                assert reply.json() == {"ok": True}
                trace_hex = f"{span.get_span_context().trace_id:032x}"
        assert exporter.flush(10)
    finally:
        exporter.shutdown(5)
        front.shutdown()
        back.shutdown()
    by_name = collector.wait_for({"otel-front", "GET /mid", "otel-back"})
    runs = collector.runs()
    otel_front, mid, otel_back = by_name["otel-front"], by_name["GET /mid"], by_name["otel-back"]
    # One trace: the W3C trace id, as a UUID, everywhere.
    assert {r["trace_id"] for r in runs} == {str(uuid.UUID(trace_hex))}
    # OTel -> tracestitch: the server run's parent is the OTel span's run.
    assert mid["parent_run_id"] == otel_front["id"]
    assert otel_front["parent_run_id"] is None
    # tracestitch -> OTel: the OTel server span's parent is tracestitch's client run (its span
    # id is that run's UUID's low 64 bits), though the span arrived first.
    (client_run,) = [r for r in runs if r["parent_run_id"] == mid["id"]]
    assert otel_back["parent_run_id"] == client_run["id"]
    assert otel_back["extra"]["otel"]["parent_span_id"] == client_run["id"].replace("-", "")[16:]
    assert (otel_front["service"], mid["service"], otel_back["service"]) == (
        "otel-front",
        "ts-mid",
        "otel-back",
    )
    assert otel_back["extra"]["otel"]["kind"] == "SERVER"
    # The viewer's tree agrees: no orphan.
    tree = collector.get(f"/api/traces/{otel_front['trace_id']}")
    assert tree["summary"]["orphan_count"] == 0 and tree["root_run_ids"] == [otel_front["id"]]
    assert tree["summary"]["name"] == "otel-front"
    assert {k for k in collector.requests() if not k.endswith(" 200")} == set()
    assert json.dumps(tree)  # served whole

"""Real OpenTelemetry services (the OTel SDK with its FastAPI and httpx instrumentations, under
uvicorn) chained with tracestitch services, both ways: one trace id throughout, the W3C sampled
flag honoured and passed on, baggage read back through OTel's re-encoding, and the part of a
trace below an OTel hop placed in the collector's tree rather than left an orphan."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from interop_helpers import API_KEY, Collector
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased, Sampler
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import tracestitch
from servers import run_uvicorn
from tracestitch.clients.httpx import AsyncTracingTransport
from tracestitch.export.worker import BatchExporter
from tracestitch.middleware.asgi import TracingMiddleware


class OTelService:
    """A FastAPI service instrumented with OpenTelemetry only: ``GET /hop`` answers with the
    trace headers it received and, given ``?next=URL``, calls it with an instrumented httpx
    client first. Its spans are kept in memory (it exports nowhere near tracestitch)."""

    def __init__(self, name: str, sampler: Sampler | None = None) -> None:
        self.spans = InMemorySpanExporter()
        self.provider = TracerProvider(
            resource=Resource({"service.name": name}), sampler=sampler or ParentBased(ALWAYS_ON)
        )
        self.provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.app = FastAPI()
        provider = self.provider

        @self.app.get("/hop")
        async def hop(request: Request) -> dict[str, Any]:
            seen: dict[str, Any] = {k: request.headers.get(k) for k in _HEADERS}
            target = request.query_params.get("next")
            if target:
                async with httpx.AsyncClient() as client:
                    HTTPXClientInstrumentor.instrument_client(client, tracer_provider=provider)
                    seen["next"] = (await client.get(target)).json()
            return seen

        FastAPIInstrumentor.instrument_app(self.app, tracer_provider=provider)

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def one(self, kind: SpanKind) -> ReadableSpan:
        (span,) = [s for s in self.finished() if s.kind is kind]
        return span


_HEADERS = ("traceparent", "tracestate", "baggage", "langsmith-trace")


def _tracestitch_service(name: str, sample_rate: float | None = None) -> Starlette:
    """The same ``GET /hop`` as a tracestitch service (middleware plus the httpx transport);
    the first service of a chain sets the user's metadata and tags."""

    async def hop(request: Request) -> JSONResponse:
        seen: dict[str, Any] = {k: request.headers.get(k) for k in _HEADERS}
        target = request.query_params.get("next")
        if target:
            with tracestitch.tracing_context(metadata={"customer": "acme corp"}, tags=["vip"]):
                async with httpx.AsyncClient(transport=AsyncTracingTransport()) as client:
                    seen["next"] = (await client.get(target)).json()
        return JSONResponse(seen)

    rate = {} if sample_rate is None else {"sample_rate": sample_rate}
    return Starlette(
        routes=[Route("/hop", hop)],
        middleware=[Middleware(TracingMiddleware, service=name, **rate)],
    )


@contextmanager
def _serving(*apps: Any) -> Iterator[list[str]]:
    with ExitStack() as stack:
        yield [stack.enter_context(run_uvicorn(app)) for app in apps]


@pytest.fixture
def exporter(collector: Collector) -> Iterator[BatchExporter]:
    exporter = tracestitch.configure(
        endpoint=collector.url, api_key=API_KEY, spool_dir=None, flush_interval=0.05
    )
    yield exporter
    exporter.shutdown(5)


def _low64(run_id: str) -> str:
    return run_id.replace("-", "")[16:]


def test_tracestitch_to_otel_to_tracestitch(collector: Collector, exporter: BatchExporter) -> None:
    otel = OTelService("otel-mid")
    with _serving(_tracestitch_service("ts-front"), otel.app, _tracestitch_service("ts-back")) as (
        front,
        mid,
        back,
    ):
        reply = httpx.get(f"{front}/hop", params={"next": f"{mid}/hop?next={back}/hop"})
    assert reply.status_code == 200, reply.text
    assert exporter.flush(10)
    by_name = collector.wait_for({"GET /hop"})
    runs = collector.runs()
    servers = sorted((r for r in runs if r["name"] == "GET /hop"), key=lambda r: r["start_us"])
    front_run, back_run = servers
    (client_run,) = [r for r in runs if r["parent_run_id"] == front_run["id"]]
    assert by_name
    # One trace id, the OTel hop included.
    otel_server, otel_client = otel.one(SpanKind.SERVER), otel.one(SpanKind.CLIENT)
    assert {r["trace_id"] for r in runs} == {front_run["id"]}
    assert f"{otel_server.context.trace_id:032x}" == uuid.UUID(front_run["id"]).hex
    # Parent links across the hop: the OTel server span under our client run, our back
    # service's run under the OTel client span.
    assert otel_server.parent is not None
    assert f"{otel_server.parent.span_id:016x}" == _low64(client_run["id"])
    assert _low64(back_run["parent_run_id"]) == f"{otel_client.context.span_id:016x}"
    # Baggage through OTel: its propagator re-encoded it (quote_plus), we read it back right.
    seen_by_back = reply.json()["next"]["next"]
    assert "acme+corp" in seen_by_back["baggage"]
    assert back_run["extra"]["metadata"]["customer"] == "acme corp"
    assert "vip" in back_run["tags"]
    # The collector places the back service's run: under the run the OTel hop was called from
    # (the traceparent chain says which), marked as having its parent outside tracestitch.
    trace = collector.get(f"/api/traces/{front_run['id']}")
    views = {v["id"]: v for v in trace["runs"]}
    back_view = views[back_run["id"]]
    assert not back_view["orphan"]
    assert back_view["parent_outside"] is True
    assert back_run["id"] in views[client_run["id"]]["child_run_ids"]
    assert trace["root_run_ids"] == [front_run["id"]]


def test_otel_to_tracestitch_to_otel_follows_the_sampled_flag(
    collector: Collector, exporter: BatchExporter
) -> None:
    for sampled in (False, True):
        front = OTelService("otel-front", sampler=ALWAYS_ON if sampled else ALWAYS_OFF)
        back = OTelService("otel-back")
        with _serving(front.app, _tracestitch_service("ts-mid"), back.app) as (f, m, b):
            reply = httpx.get(f"{f}/hop", params={"next": f"{m}/hop?next={b}/hop"})
        assert reply.status_code == 200, reply.text
        assert exporter.flush(10)
        seen_by_back = reply.json()["next"]["next"]
        flag = seen_by_back["traceparent"][-2:]
        mid_runs = [r for r in collector.runs() if r.get("name") == "GET /hop"]
        if not sampled:
            # -00 from the caller: no runs here, and -00 passed on, so OTel records nothing.
            assert flag == "00"
            assert mid_runs == []
            assert back.finished() == []
            assert front.finished() == []
        else:
            assert flag == "01"
            (mid_run,) = mid_runs
            (client_run,) = [r for r in collector.runs() if r["parent_run_id"] == mid_run["id"]]
            back_server = back.one(SpanKind.SERVER)
            assert back_server.parent is not None
            assert f"{back_server.parent.span_id:016x}" == _low64(client_run["id"])
            front_client = front.one(SpanKind.CLIENT)
            assert _low64(mid_run["parent_run_id"]) == f"{front_client.context.span_id:016x}"
            assert f"{front_client.context.trace_id:032x}" == uuid.UUID(mid_run["trace_id"]).hex


def test_a_trace_sampled_out_by_tracestitch_is_recorded_by_no_one(
    collector: Collector, exporter: BatchExporter
) -> None:
    otel = OTelService("otel-mid")
    with _serving(
        _tracestitch_service("ts-front", sample_rate=0.0), otel.app, _tracestitch_service("ts")
    ) as (front, mid, back):
        reply = httpx.get(f"{front}/hop", params={"next": f"{mid}/hop?next={back}/hop"})
    assert reply.status_code == 200, reply.text
    assert exporter.flush(10)
    assert reply.json()["next"]["traceparent"].endswith("-00")
    assert reply.json()["next"]["next"]["traceparent"].endswith("-00")
    assert otel.finished() == []
    assert collector.runs() == []

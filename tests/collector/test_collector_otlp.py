"""OTLP/HTTP trace ingest (/v1/traces, /otel/v1/traces): protobuf and JSON, gzip; spans become
runs whose ids round-trip with tracestitch's own OTLP export and W3C propagation."""

from __future__ import annotations

import base64
import gzip
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from collector_helpers import API_KEY, ServerThread

import tracestitch
from tracestitch import traceable
from tracestitch.collector import Store
from tracestitch.ids import uuid_from_w3c
from tracestitch.testing import capture_runs

TRACE = "5b8efff798038103d269b633813fc60c"
ROOT_SPAN, CHILD_SPAN = "eee19b7ec3c1b174", "eee19b7ec3c1b173"
NS = 1_796_162_013_998_001_123  # 2026-12-01T21:53:33.998001123Z


@pytest.fixture
def http(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"x-api-key": API_KEY}) as client:
        yield client


def _kv(key: str, value: dict[str, Any]) -> dict[str, Any]:
    return {"key": key, "value": value}


def _foreign_request(**root_extra: Any) -> dict[str, Any]:
    """OTLP/JSON as the OpenTelemetry JS exporter writes it: hex ids, 64-bit ints as strings."""
    root = {
        "traceId": TRACE,
        "spanId": ROOT_SPAN,
        "name": "GET /checkout",
        "kind": 2,
        "startTimeUnixNano": str(NS),
        "endTimeUnixNano": str(NS + 5_000_000),
        "attributes": [
            _kv("http.request.method", {"stringValue": "GET"}),
            _kv("http.response.status_code", {"intValue": "500"}),
        ],
        "status": {"code": 2, "message": "upstream failed"},
        "events": [
            {
                "timeUnixNano": str(NS + 1000),
                "name": "exception",
                "attributes": [
                    _kv("exception.type", {"stringValue": "TimeoutError"}),
                    _kv("exception.message", {"stringValue": "payments timed out"}),
                ],
            }
        ],
        **root_extra,
    }
    child = {
        "traceId": TRACE,
        "spanId": CHILD_SPAN,
        "parentSpanId": ROOT_SPAN,
        "name": "chat gpt-4o",
        "kind": "SPAN_KIND_CLIENT",
        "startTimeUnixNano": NS + 1_000_000,
        "endTimeUnixNano": NS + 4_000_000,
        "attributes": [
            _kv("gen_ai.operation.name", {"stringValue": "chat"}),
            _kv("gen_ai.request.model", {"stringValue": "gpt-4o"}),
            _kv("gen_ai.usage.input_tokens", {"intValue": "11"}),
            _kv("gen_ai.usage.output_tokens", {"intValue": 7}),
            _kv("temperature", {"doubleValue": 0.5}),
            _kv("flags", {"arrayValue": {"values": [{"boolValue": True}]}}),
            _kv("nested", {"kvlistValue": {"values": [_kv("a", {"stringValue": "b"})]}}),
        ],
        "status": {},
    }
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [_kv("service.name", {"stringValue": "shop-js"})]},
                "scopeSpans": [{"scope": {"name": "manual"}, "spans": [root, child]}],
            }
        ]
    }


def test_foreign_otlp_json_becomes_runs(http: httpx.Client, store: Store) -> None:
    resp = http.post("/v1/traces", json=_foreign_request())
    assert resp.status_code == 200 and resp.json() == {}
    trace_id = str(uuid.UUID(TRACE))
    root_id = str(uuid_from_w3c(TRACE, ROOT_SPAN))
    child_id = str(uuid_from_w3c(TRACE, CHILD_SPAN))
    runs = {run["id"]: run for run in store.trace_runs(trace_id)}
    assert set(runs) == {root_id, child_id}
    root, child = runs[root_id], runs[child_id]
    assert root.get("parent_run_id") is None and child["parent_run_id"] == root_id
    assert root["name"] == "GET /checkout" and root["run_type"] == "chain"
    assert root["start_time"] == "2026-12-01T21:53:33.998001Z"  # nanoseconds kept to the µs
    assert root["error"] == "payments timed out"
    assert root["events"][0]["name"] == "exception"
    assert root["extra"]["metadata"]["http.response.status_code"] == 500
    assert root["extra"]["metadata"]["service"] == "shop-js"
    assert root["extra"]["otel"] == {
        "span_id": ROOT_SPAN,
        "kind": "SERVER",
        "status": "ERROR",
        "status_message": "upstream failed",
        "scope": "manual",
    }
    assert child["run_type"] == "llm"
    meta = child["extra"]["metadata"]
    assert meta["ls_model_name"] == "gpt-4o" and meta["temperature"] == 0.5
    assert meta["flags"] == [True] and meta["nested"] == {"a": "b"}
    view = http.get(f"/api/traces/{trace_id}").json()
    assert view["summary"]["name"] == "GET /checkout" and view["summary"]["status"] == "error"
    assert view["summary"]["total_tokens"] == 18 and view["summary"]["services"] == ["shop-js"]
    assert view["summary"]["orphan_count"] == 0
    # A repeat (an exporter retrying) changes nothing.
    assert http.post("/otel/v1/traces", json=_foreign_request()).status_code == 200
    assert store.count_runs() == 2


def test_gzip_and_protobuf(http: httpx.Client, store: Store) -> None:
    from google.protobuf import json_format
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

    body = orjson.dumps(_foreign_request())
    resp = http.post(
        "/v1/traces",
        content=gzip.compress(body),
        headers={"content-type": "application/json", "content-encoding": "gzip"},
    )
    assert resp.status_code == 200
    # The same request as protobuf (ids base64 in proto's own JSON mapping).
    doc = _foreign_request()
    for span in doc["resourceSpans"][0]["scopeSpans"][0]["spans"]:
        for key in ("traceId", "spanId", "parentSpanId"):
            if key in span:
                span[key] = base64.b64encode(bytes.fromhex(span[key])).decode()
    request = json_format.ParseDict(doc, trace_service_pb2.ExportTraceServiceRequest())
    request.resource_spans[0].scope_spans[0].spans[1].span_id = bytes.fromhex("00000000000000aa")
    resp = http.post(
        "/otel/v1/traces",
        content=request.SerializeToString(),
        headers={"content-type": "application/x-protobuf"},
    )
    assert resp.status_code == 200 and resp.content == b""
    assert resp.headers["content-type"] == "application/x-protobuf"
    assert store.count_runs() == 3  # the root again (same run) and a second child
    extra = store.get_run(str(uuid_from_w3c(TRACE, "00000000000000aa")))
    assert extra is not None and extra["parent_run_id"] == str(uuid_from_w3c(TRACE, ROOT_SPAN))


def test_tracestitch_otlp_export_round_trips(server: ServerThread, store: Store) -> None:
    """Runs exported by tracestitch's own OTLP sink come back as the same runs."""

    @traceable(run_type="llm")
    def answer(q: str) -> str:
        return q[::-1]

    @traceable
    def handle(q: str) -> str:
        return answer(q)

    exporter = tracestitch.configure(
        otlp_endpoint=server.url, otlp_headers={"x-api-key": API_KEY}, spool_dir=None
    )
    try:
        with capture_runs() as captured:
            handle("hello")
        assert exporter.flush(10)
    finally:
        exporter.shutdown(5)
    sent = {str(run.id): run for run in captured}
    stored = {run["id"]: run for run in store.trace_runs(str(captured.one("handle").trace_id))}
    assert set(stored) == set(sent)
    for run_id, run in sent.items():
        back = stored[run_id]
        assert back["name"] == run.name and back["run_type"] == run.run_type
        assert back.get("parent_run_id") == (str(run.parent_run_id) if run.parent_run_id else None)
        assert back["dotted_order"] == run.dotted_order
        # The span id the export used is the run UUID's low 64 bits: kept for linking.
        assert back["_span_id"] == run_id.replace("-", "")[16:]


def test_langsmith_attributes_name_the_run(http: httpx.Client, store: Store) -> None:
    """A span carrying its LangSmith run (the JS SDK's OTel export) becomes exactly that run."""
    run_id, trace_id = str(uuid.uuid4()), str(uuid.uuid4())
    order = f"20261201T215333998001Z{trace_id}.20261201T215334000000Z{run_id}"
    span = _foreign_request()["resourceSpans"][0]["scopeSpans"][0]["spans"][1]
    span["attributes"] += [
        _kv("langsmith.span.id", {"stringValue": run_id}),
        _kv("langsmith.trace.id", {"stringValue": trace_id}),
        _kv("langsmith.span.dotted_order", {"stringValue": order}),
        _kv("langsmith.span.kind", {"stringValue": "retriever"}),
        _kv("langsmith.trace.name", {"stringValue": "search"}),
        _kv("langsmith.trace.session_name", {"stringValue": "js-otel"}),
        _kv("langsmith.metadata.user", {"stringValue": "u1"}),
        _kv("langsmith.metadata.ctx", {"stringValue": '{"a": [1]}'}),
        _kv("langsmith.span.tags", {"stringValue": "x, y"}),
        _kv("gen_ai.prompt", {"stringValue": '{"query": "q"}'}),
        _kv("gen_ai.completion", {"stringValue": '{"docs": []}'}),
    ]
    doc = {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}
    assert http.post("/v1/traces", json=doc).status_code == 200
    run = store.get_run(run_id)
    assert run is not None
    assert (run["trace_id"], run["parent_run_id"], run["dotted_order"]) == (
        trace_id,
        trace_id,
        order,
    )
    assert (run["name"], run["run_type"], run["session_name"]) == ("search", "retriever", "js-otel")
    assert run["extra"]["metadata"]["user"] == "u1"
    assert run["extra"]["metadata"]["ctx"] == {"a": [1]}
    assert run["tags"] == ["x", "y"]
    assert run["inputs"] == {"query": "q"} and run["outputs"] == {"docs": []}


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"stringValue": "bottom"}
    for _ in range(depth):
        value = {"kvlistValue": {"values": [_kv("k", value)]}}
    return value


@pytest.mark.parametrize(
    ("body", "headers", "status", "problem"),
    [
        (b"{", {"content-type": "application/json"}, 400, "not valid JSON"),
        (b"\x0a\xff\xff", {"content-type": "application/x-protobuf"}, 400, "ExportTraceService"),
        (b"{}", {"content-type": "text/plain"}, 415, "application/x-protobuf"),
        (
            orjson.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "xyz"}]}]}]}),
            {"content-type": "application/json"},
            400,
            "spans[0].traceId: expected 32 hex digits",
        ),
        (
            orjson.dumps(_foreign_request(traceId="0" * 32)),
            {"content-type": "application/json"},
            400,
            "not all zero",
        ),
        (
            # The standard library's encoder: orjson itself refuses to write this deep.
            json.dumps(_foreign_request(attributes=[_kv("deep", _nested(210))])).encode(),
            {"content-type": "application/json"},
            400,
            "nested too deeply",
        ),
        (
            orjson.dumps(_foreign_request(startTimeUnixNano="soon")),
            {"content-type": "application/json"},
            400,
            "startTimeUnixNano: expected an integer",
        ),
    ],
)
def test_malformed_otlp_is_refused_whole(
    http: httpx.Client,
    store: Store,
    body: bytes,
    headers: dict[str, str],
    status: int,
    problem: str,
) -> None:
    resp = http.post("/v1/traces", content=body, headers=headers)
    assert resp.status_code == status
    assert problem in resp.json()["detail"]
    assert store.count_runs() == 0


def test_otlp_needs_the_key(server: ServerThread, store: Store) -> None:
    resp = httpx.post(server.url + "/v1/traces", json=_foreign_request())
    assert resp.status_code == 401
    assert store.count_runs() == 0

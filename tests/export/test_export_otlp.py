"""OTLPSink: what Jaeger, Tempo, Phoenix, Langfuse and Logfire read, decoded with
opentelemetry-proto from what a real OTLP/HTTP receiver on 127.0.0.1 got."""

from __future__ import annotations

import contextlib
import gzip
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from export_helpers import IngestServer, ingest_server, wait_for

from servers import run_uvicorn
from tracestitch import RunTree, get_current_run_tree, ids, traceable
from tracestitch.clients.httpx import AsyncTracingTransport
from tracestitch.export.otel_env import otlp_settings_from_env
from tracestitch.export.otlp import OTLPSink, decode_request
from tracestitch.export.worker import BatchExporter
from tracestitch.exporter import set_exporter

SERVER, CLIENT, INTERNAL, PRODUCER, CONSUMER = 2, 3, 1, 4, 5  # Span.SpanKind values
ERROR = 2  # Status.StatusCode


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


def _attrs(items: Any) -> dict[str, Any]:
    return {a.key: _value(a.value) for a in items}


def _spans(server: IngestServer) -> list[tuple[dict[str, Any], Any]]:
    """(resource attributes, span) for every span the receiver got."""
    return [
        (_attrs(rs.resource.attributes), span)
        for body in list(server.capture.otlp)
        for rs in decode_request(body).resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    ]


def test_payload_decodes_and_parent_links_form_the_run_tree() -> None:
    with ingest_server() as server:
        exporter = BatchExporter(OTLPSink(server.url, max_attribute_bytes=64), flush_interval=5)
        root = RunTree(
            name="root",
            inputs={"q": "x" * 500},
            tags=["a", "b"],
            metadata={"svc": "gw"},
            exporter=exporter,
        )
        root.post()  # at start: held until the patch brings the end
        child = root.create_child("llm", "llm", inputs={"p": 1})
        grandchild = child.create_child("tool", "tool")
        grandchild.end(error="ValueError: boom")
        grandchild.post()
        child.end(outputs={"a": 1})
        child.post()
        root.end(outputs={"ok": True})
        root.patch()
        assert exporter.flush(5)
        exporter.shutdown()
        spans = _spans(server)
    by_name = {s.name: s for _, s in spans}
    assert set(by_name) == {"root", "llm", "tool"}
    for span in by_name.values():
        assert span.trace_id == root.trace_id.bytes
        assert span.end_time_unix_nano >= span.start_time_unix_nano > 0
        assert span.kind == INTERNAL  # no role: neither a server's nor a client's run
    span_id = {
        name: bytes.fromhex(ids.span_id_from_run_id(r.id))
        for name, r in (("root", root), ("llm", child), ("tool", grandchild))
    }
    assert by_name["root"].parent_span_id == b""
    assert by_name["llm"].parent_span_id == span_id["root"] == by_name["root"].span_id
    assert by_name["tool"].parent_span_id == span_id["llm"] == by_name["llm"].span_id
    assert by_name["tool"].status.code == ERROR and "boom" in by_name["tool"].status.message
    attrs = _attrs(by_name["root"].attributes)
    assert attrs["langsmith.span.kind"] == "chain"
    assert attrs["openinference.span.kind"] == "CHAIN"
    assert attrs["langsmith.metadata.svc"] == "gw"
    # The LangSmith SDK's export joins tags into one string; OpenInference wants the list.
    assert attrs["langsmith.span.tags"] == "a, b" and attrs["tag.tags"] == ["a", "b"]
    assert len(attrs["input.value"]) <= 64 and attrs["input.value.truncated"] is True
    assert attrs["input.mime_type"] == attrs["output.mime_type"] == "application/json"
    # No service anywhere: the spec's fallback, one resource for the project.
    [resource] = {tuple(sorted(r.items())) for r, _ in spans}
    assert dict(resource)["service.name"].startswith("unknown_service")
    assert dict(resource)["telemetry.sdk.name"] == "tracestitch"


def test_task_runs_export_as_consumer_and_producer_spans() -> None:
    with ingest_server() as server:
        exporter = BatchExporter(OTLPSink(server.url), flush_interval=5)
        for kind in ("consumer", "producer", "bogus"):
            run = RunTree(name=kind, extra={"span_kind": kind}, exporter=exporter)
            run.end()
            run.post()
        assert exporter.flush(5)
        exporter.shutdown()
        kinds = {span.name: span.kind for _, span in _spans(server)}
    assert kinds == {"consumer": CONSUMER, "producer": PRODUCER, "bogus": INTERNAL}


def test_span_id_matches_traceparent() -> None:
    from tracestitch.propagation import inject

    run = RunTree(name="r")
    headers: dict[str, str] = {}
    inject(run, headers)
    _, trace_hex, span_hex, _ = headers["traceparent"].split("-")
    assert trace_hex == run.trace_id.hex and span_hex == ids.span_id_from_run_id(run.id)


# ---------------------------------------------------------------------------------------------
# Two real services (uvicorn), the real middleware and client hooks, exported over OTLP
# ---------------------------------------------------------------------------------------------


def assistant_app() -> Any:
    from fastapi import FastAPI

    from tracestitch.middleware.asgi import TracingMiddleware

    app = FastAPI(title="assistant")

    @traceable(
        run_type="llm",
        name="ChatOpenAI",
        metadata={"ls_provider": "openai", "ls_model_name": "gpt-4o-mini"},
    )
    async def chat(messages: list[dict[str, str]]) -> dict[str, Any]:
        run = get_current_run_tree()
        assert run is not None
        for token in ("Hel", "lo"):
            run.add_event("new_token", kwargs={"token": token})
        return {
            "choices": [
                {"message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}
            ],
            "model": "gpt-4o-mini-2024-07-18",
            "usage_metadata": {"input_tokens": 11, "output_tokens": 7, "total_tokens": 18},
        }

    @traceable(run_type="tool", name="lookup")
    async def lookup(q: str) -> str:
        raise KeyError(q)

    @app.get("/chat/{user}")
    async def chat_route(user: str, q: str) -> Any:
        with contextlib.suppress(KeyError):  # recorded on its run; the request goes on
            await lookup(q)
        return await chat([{"role": "user", "content": q}])

    app.add_middleware(TracingMiddleware, service="assistant")
    return app


def gateway_app(downstream: str) -> Any:
    from fastapi import FastAPI

    from tracestitch.middleware.asgi import TracingMiddleware

    app = FastAPI(title="gateway")

    @app.get("/ask/{user}")
    async def ask(user: str) -> Any:
        async with httpx.AsyncClient(transport=AsyncTracingTransport()) as client:
            url = f"{downstream}/chat/{user}?q=hi&api_key=sk-live-123"
            answer = (await client.get(url)).json()
            missing = await client.get(f"{downstream}/nowhere")
            return {"answer": answer, "missing": missing.status_code}

    app.add_middleware(TracingMiddleware, service="gateway")
    return app


@pytest.fixture
def otlp_receiver() -> Iterator[IngestServer]:
    with ingest_server() as server:
        yield server


def test_real_services_export_resources_kinds_and_conventions(
    otlp_receiver: IngestServer,
) -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.url,
        "OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Basic%20YWxhZGRpbg%3D%3D,x-tenant=acme",
        "OTEL_RESOURCE_ATTRIBUTES": "service.version=1.4.2,deployment.environment=stag%2Cing",
    }
    settings = otlp_settings_from_env(env)
    assert settings is not None and not settings.problems
    exporter = BatchExporter(OTLPSink.from_settings(settings), flush_interval=0.05)
    set_exporter(exporter)  # the conftest fixture puts the previous one back
    try:
        with (
            run_uvicorn(assistant_app()) as assistant_url,
            run_uvicorn(gateway_app(assistant_url)) as gateway_url,
        ):
            body = httpx.get(f"{gateway_url}/ask/ada", timeout=15).json()
            assert body["missing"] == 404
            # gateway server, 2 client calls, assistant server x2, lookup, ChatOpenAI
            assert wait_for(lambda: exporter.flush(1) and len(_spans(otlp_receiver)) >= 7, 15)
    finally:
        exporter.shutdown(2)
    spans = _spans(otlp_receiver)
    assert len(spans) == 7, [s.name for _, s in spans]

    # Headers from the environment, percent-decoded, on the wire.
    for path, headers, _ in otlp_receiver.capture.requests:
        assert path == "/v1/traces"
        assert headers["Authorization"] == "Basic YWxhZGRpbg=="
        assert headers["x-tenant"] == "acme"

    # One resource per service, with the environment's resource attributes.
    services = {r["service.name"] for r, _ in spans}
    assert services == {"gateway", "assistant"}
    for resource, _ in spans:
        assert resource["service.version"] == "1.4.2"
        assert resource["deployment.environment"] == "stag,ing"
        assert resource["telemetry.sdk.language"] == "python"
        assert resource["openinference.project.name"] == resource["langsmith.project"]
    service_of = {s.span_id: r["service.name"] for r, s in spans}
    by_id = {s.span_id: s for _, s in spans}

    [gw] = [s for r, s in spans if s.kind == SERVER and r["service.name"] == "gateway"]
    calls = [s for _, s in spans if s.kind == CLIENT]
    assert len(calls) == 2 and all(c.parent_span_id == gw.span_id for c in calls)
    assert {service_of[c.span_id] for c in calls} == {"gateway"}
    [chat_call] = [c for c in calls if "/chat/" in _attrs(c.attributes)["url.full"]]
    [missing_call] = [c for c in calls if c is not chat_call]
    assistant_servers = [s for r, s in spans if s.kind == SERVER and r["service.name"] != "gateway"]
    assert {s.parent_span_id for s in assistant_servers} == {c.span_id for c in calls}
    [asst] = [s for s in assistant_servers if s.parent_span_id == chat_call.span_id]
    assert {s.trace_id for _, s in spans} == {gw.trace_id}

    # HTTP semantic conventions: server side.
    gw_attrs = _attrs(gw.attributes)
    assert gw.name == "GET /ask/{user}"
    assert gw_attrs["http.request.method"] == "GET"
    assert gw_attrs["http.route"] == "/ask/{user}"
    assert gw_attrs["url.path"] == "/ask/ada"
    assert gw_attrs["http.response.status_code"] == 200
    assert gw_attrs["server.address"] == "127.0.0.1"
    assert gw_attrs["server.port"] == int(gateway_url.rsplit(":", 1)[1])
    assert gw_attrs["client.address"] == "127.0.0.1"
    asst_attrs = _attrs(asst.attributes)
    assert asst_attrs["http.route"] == "/chat/{user}"
    assert asst_attrs["url.query"] == "q=hi&api_key=[REDACTED]"
    # Client side: the URL redacted, the peer's address, the status; a 404 is the caller's error.
    call_attrs = _attrs(chat_call.attributes)
    assert call_attrs["http.request.method"] == "GET"
    assert call_attrs["url.full"] == f"{assistant_url}/chat/ada?q=hi&api_key=[REDACTED]"
    assert call_attrs["server.address"] == "127.0.0.1"
    assert call_attrs["server.port"] == int(assistant_url.rsplit(":", 1)[1])
    assert call_attrs["http.response.status_code"] == 200
    assert chat_call.status.code != ERROR
    missing_attrs = _attrs(missing_call.attributes)
    assert missing_attrs["http.response.status_code"] == 404
    assert missing_attrs["error.type"] == "404" and missing_call.status.code == ERROR
    [missing_server] = [s for s in assistant_servers if s is not asst]
    assert "http.route" not in _attrs(missing_server.attributes)  # no route matched
    assert missing_server.status.code != ERROR  # a 404 is not the server's error

    # The llm run: GenAI and OpenInference conventions, events, the first-chunk time.
    [llm] = [s for _, s in spans if s.name == "ChatOpenAI"]
    assert llm.kind == INTERNAL and llm.parent_span_id == asst.span_id
    assert service_of[llm.span_id] == "assistant"
    a = _attrs(llm.attributes)
    assert a["openinference.span.kind"] == "LLM"
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "openai" and a["llm.provider"] == "openai"
    assert a["gen_ai.request.model"] == "gpt-4o-mini"
    assert a["gen_ai.response.model"] == a["llm.model_name"] == "gpt-4o-mini-2024-07-18"
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (11, 7)
    assert (a["llm.token_count.prompt"], a["llm.token_count.completion"]) == (11, 7)
    assert a["llm.token_count.total"] == 18
    assert a["llm.input_messages.0.message.role"] == "user"
    assert a["llm.input_messages.0.message.content"] == "hi"
    assert a["llm.output_messages.0.message.content"] == "Hello"
    assert a["gen_ai.response.finish_reasons"] == ["stop"]
    assert a["gen_ai.request.stream"] is True
    tokens = [e for e in llm.events if e.name == "new_token"]
    assert [_attrs(e.attributes)["token"] for e in tokens] == ["Hel", "lo"]
    first = (tokens[0].time_unix_nano - llm.start_time_unix_nano) / 1e9
    assert a["gen_ai.response.time_to_first_chunk"] == pytest.approx(first, abs=2e-6)
    assert "langsmith.metadata.ls_model_name" in a  # the langsmith.* attributes are kept

    # The error: status, error.type and an exception event with the traceback.
    [tool] = [s for _, s in spans if s.name == "lookup"]
    assert tool.status.code == ERROR and tool.status.message.startswith("KeyError")
    assert _attrs(tool.attributes)["error.type"] == "KeyError"
    [exc] = [e for e in tool.events if e.name == "exception"]
    ex = _attrs(exc.attributes)
    assert ex["exception.type"] == "KeyError" and ex["exception.message"] == "'hi'"
    assert ex["exception.stacktrace"].startswith("Traceback (most recent call last):")
    assert "in lookup" in ex["exception.stacktrace"]
    assert by_id[tool.parent_span_id] is asst


def test_compression_none_and_traces_endpoint_used_as_is(otlp_receiver: IngestServer) -> None:
    settings = otlp_settings_from_env(
        {
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{otlp_receiver.url}/custom/v1/traces",
            "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "none",
            "OTEL_SERVICE_NAME": "batch-job",
        }
    )
    assert settings is not None
    sink = OTLPSink.from_settings(settings)
    exporter = BatchExporter(sink, flush_interval=5)
    run = RunTree(name="job", exporter=exporter)
    run.end()
    run.post()
    assert exporter.flush(5)
    exporter.shutdown()
    [(path, headers, body)] = otlp_receiver.capture.requests
    assert path == "/custom/v1/traces" and "Content-Encoding" not in headers
    assert headers["User-Agent"].startswith("tracestitch")
    [(resource, span)] = _spans(otlp_receiver)
    assert span.name == "job" and resource["service.name"] == "batch-job"
    assert decode_request(body).resource_spans  # sent uncompressed: protobuf as it is
    with pytest.raises(gzip.BadGzipFile):
        gzip.decompress(body)

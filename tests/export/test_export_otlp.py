"""OTLPSink: the payload decodes with opentelemetry-proto and its parent links form the tree."""

from __future__ import annotations

from export_helpers import ingest_server

from tracestitch import RunTree, ids
from tracestitch.export.otlp import OTLPSink, decode_request
from tracestitch.export.worker import BatchExporter


def test_otlp_payload_decodes_and_parent_links_form_the_run_tree() -> None:
    with ingest_server() as server:
        exporter = BatchExporter(OTLPSink(server.url, max_attribute_bytes=64), flush_interval=5)
        root = RunTree(
            name="root",
            inputs={"q": "x" * 500},
            tags=["a"],
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
        spans = [
            span
            for body in server.capture.otlp
            for rs in decode_request(body).resource_spans
            for ss in rs.scope_spans
            for span in ss.spans
        ]
    by_name = {s.name: s for s in spans}
    assert set(by_name) == {"root", "llm", "tool"}
    for span in spans:
        assert span.trace_id == root.trace_id.bytes
        assert span.end_time_unix_nano >= span.start_time_unix_nano > 0
    span_id = {
        name: bytes.fromhex(ids.span_id_from_run_id(r.id))
        for name, r in (("root", root), ("llm", child), ("tool", grandchild))
    }
    assert by_name["root"].parent_span_id == b""
    assert by_name["llm"].parent_span_id == span_id["root"] == by_name["root"].span_id
    assert by_name["tool"].parent_span_id == span_id["llm"] == by_name["llm"].span_id
    assert by_name["tool"].status.code == 2 and "boom" in by_name["tool"].status.message
    attrs = {a.key: a.value for a in by_name["root"].attributes}
    assert attrs["langsmith.span.kind"].string_value == "chain"
    assert attrs["langsmith.metadata.svc"].string_value == "gw"
    assert [v.string_value for v in attrs["langsmith.span.tags"].array_value.values] == ["a"]
    assert (
        len(attrs["input.value"].string_value) <= 64 and attrs["input.value.truncated"].bool_value
    )
    assert "output.value" in attrs


def test_span_id_matches_traceparent() -> None:
    from tracestitch.propagation import inject

    run = RunTree(name="r")
    headers: dict[str, str] = {}
    inject(run, headers)
    _, trace_hex, span_hex, _ = headers["traceparent"].split("-")
    assert trace_hex == run.trace_id.hex and span_hex == ids.span_id_from_run_id(run.id)

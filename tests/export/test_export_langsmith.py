"""LangSmithSink: field shapes as the langsmith SDK sends them, validated ingest, multipart with
attachments, replicas, compression fallbacks, and the embedded collector."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from export_helpers import Capture, _parse_multipart, ingest_server

from tracestitch import RunTree
from tracestitch.export.langsmith import LangSmithSink
from tracestitch.export.wire import serialize_run
from tracestitch.export.worker import BatchExporter


def _sdk_capture(multipart: bool) -> Capture:
    """What the real langsmith client sends for a root with one llm child."""
    import langsmith
    from langsmith.run_trees import RunTree as LSRunTree

    with ingest_server(multipart=multipart) as server:
        client = langsmith.Client(api_url=server.url, api_key="ls-key", auto_batch_tracing=True)
        root = LSRunTree(
            name="root",
            run_type="chain",
            inputs={"q": "hi"},
            client=client,
            project_name="proj",
            tags=["t1"],
            extra={"metadata": {"m": 1}},
        )
        root.post()
        child = root.create_child(name="llm", run_type="llm", inputs={"p": 1})
        child.post()
        child.end(outputs={"a": 2})
        child.patch()
        root.end(outputs={"x": 1})
        root.patch()
        client.flush()
        return server.capture


def _ours(multipart: bool) -> Capture:
    with ingest_server(multipart=multipart) as server:
        sink = LangSmithSink(server.url, "ts-key", mode="multipart" if multipart else "batch")
        exporter = BatchExporter(sink, flush_interval=5)
        root = RunTree(
            name="root",
            inputs={"q": "hi"},
            project_name="proj",
            tags=["t1"],
            metadata={"m": 1},
            exporter=exporter,
        )
        root.post()
        child = root.create_child("llm", "llm", inputs={"p": 1})
        child.post()
        child.end(outputs={"a": 2})
        child.patch()
        root.end(outputs={"x": 1})
        root.patch()
        assert exporter.flush(5)
        exporter.shutdown()
        return server.capture


def _shape(value: Any) -> Any:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        # ISO times and UUIDs are strings on both sides; compare their format too.
        if len(value) == 36 and value.count("-") == 4:
            return "uuid"
        if value[:4].isdigit() and value[4:5] == "-" and "T" in value:
            return "iso+00:00" if value.endswith("+00:00") else "iso?"
        return "str"
    return type(value).__name__


@pytest.mark.parametrize("multipart", [False, True], ids=["batch", "multipart"])
def test_field_shapes_match_the_langsmith_sdk(multipart: bool) -> None:
    sdk, ours = _sdk_capture(multipart), _ours(multipart)
    assert not sdk.errors and not ours.errors
    [(sdk_path, sdk_headers, sdk_body)] = sdk.requests
    [(our_path, our_headers, our_body)] = ours.requests
    assert sdk_path == our_path
    assert "x-api-key" in {k.lower() for k in our_headers}
    by_name_sdk = {r["name"]: r for r in sdk.runs.values()}
    by_name_ours = {r["name"]: r for r in ours.runs.values()}
    for name in ("root", "llm"):
        mine, theirs = by_name_ours[name], by_name_sdk[name]
        # The SDK adds runtime/environment details under extra, and an llm run's (empty)
        # ``serialized`` manifest; everything else must match key by key.
        assert set(mine) <= set(theirs) and set(theirs) - set(mine) <= {"serialized"}, name
        for key in mine:
            assert _shape(mine[key]) == _shape(theirs[key]), (name, key)
        assert set(mine["extra"]) <= set(theirs["extra"])
    # Both coalesce the finished child's post and patch into one post.
    assert sum(sdk.patches.values()) == sum(ours.patches.values())
    if multipart:
        ctype = dict((k.lower(), v) for k, v in sdk_headers.items())["content-type"]
        sdk_parts = [
            n.split(".", 2)[::2]
            for n, _, _ in _parse_multipart(sdk_body, ctype)
            if not n.endswith(".serialized")
        ]
        ctype = dict((k.lower(), v) for k, v in our_headers.items())["content-type"]
        our_parts = [n.split(".", 2)[::2] for n, _, _ in _parse_multipart(our_body, ctype)]
        assert our_parts == sdk_parts  # same parts, same order (ids differ)
    else:
        assert list(orjson.loads(our_body)) == list(orjson.loads(sdk_body))


def test_multipart_attachments_and_validation() -> None:
    with ingest_server(multipart=True) as server:
        exporter = BatchExporter(LangSmithSink(server.url), flush_interval=5)
        run = RunTree(
            name="with-files",
            inputs={"q": 1},
            attachments={"image": ("image/png", b"\x89PNG..."), "bad.name": ("text/plain", b"x")},
            exporter=exporter,
        )
        run.end(outputs={"ok": True})
        run.post()
        assert exporter.flush(5)
        exporter.shutdown()
        cap = server.capture
        assert not cap.errors
        assert cap.requests[0][0] == "/runs/multipart"
        assert cap.attachments == {(str(run.id), "image"): ("image/png", b"\x89PNG...")}


def test_multipart_404_falls_back_to_batch() -> None:
    with ingest_server() as server:
        server.script(404)
        exporter = BatchExporter(LangSmithSink(server.url), flush_interval=5)
        run = RunTree(name="r", attachments={"a": ("text/plain", b"x")}, exporter=exporter)
        run.end()
        run.post()
        assert exporter.flush(5)
        exporter.shutdown()
        paths = [p for p, _, _ in server.capture.requests]
        assert paths == ["/runs/multipart", "/runs/batch"]
        assert str(run.id) in server.capture.runs


def test_gzip_when_large_and_415_turns_it_off() -> None:
    with ingest_server() as server:
        server.script(415)
        exporter = BatchExporter(LangSmithSink(server.url, compression="gzip"), flush_interval=5)
        for _ in range(3):
            run = RunTree(name="r", inputs={"blob": "y" * 5000}, exporter=exporter)
            run.end()
            run.post()
        assert exporter.flush(5)
        exporter.shutdown()
        encodings = [h.get("Content-Encoding") for _, h, _ in server.capture.requests]
        assert encodings == ["gzip", None]
        assert len(server.capture.runs) == 3 and not server.capture.errors


def test_413_splits_the_batch() -> None:
    with ingest_server() as server:
        server.script(413)
        exporter = BatchExporter(LangSmithSink(server.url), flush_interval=5)
        for _ in range(4):
            run = RunTree(name="r", exporter=exporter)
            run.end()
            run.post()
        assert exporter.flush(5)
        exporter.shutdown()
        assert len(server.capture.runs) == 4
        assert len(server.capture.requests) == 3


def test_replicas_go_to_their_projects_with_derived_ids() -> None:
    run = RunTree(
        name="r",
        project_name="main",
        replicas=[{"project_name": "audit", "updates": {"metadata": {"copy": True}}}],
    )
    child = run.create_child("c")
    child.end()
    ops = serialize_run("post", child)
    assert [op.to_dict()["session_name"] for op in ops] == ["main", "audit"]
    original, replica = (op.to_dict() for op in ops)
    assert replica["id"] != original["id"] and replica["trace_id"] != original["trace_id"]
    assert replica["dotted_order"].endswith(replica["id"])
    assert replica["dotted_order"].split(".")[0].endswith(replica["trace_id"])
    assert replica["parent_run_id"] == replica["dotted_order"].split(".")[0][22:]
    assert replica["extra"]["metadata"]["copy"] is True
    # Deterministic: another service derives the same ids for the same run.
    assert serialize_run("post", child)[1].run_id == ops[1].run_id
    assert uuid.UUID(replica["id"]).version == 7


def test_extra_endpoints_each_get_the_batch() -> None:
    with ingest_server() as one, ingest_server() as two:
        sink = LangSmithSink(one.url, "k1", extra_endpoints={two.url: "k2"})
        exporter = BatchExporter(sink, flush_interval=5)
        run = RunTree(name="r", exporter=exporter)
        run.end()
        run.post()
        assert exporter.flush(5)
        exporter.shutdown()
        assert one.capture.received_ids() == two.capture.received_ids() == {str(run.id)}
        assert one.capture.requests[0][1]["x-api-key"] == "k1"
        assert two.capture.requests[0][1]["x-api-key"] == "k2"


def test_the_embedded_collector_accepts_and_stores_runs(tmp_path: Path) -> None:
    collector = pytest.importorskip("tracestitch.collector")
    from servers import run_uvicorn

    store = collector.Store(tmp_path / "t.db")
    app = collector.create_app(store, api_key="col-key")
    with run_uvicorn(app) as url:
        exporter = BatchExporter(LangSmithSink(url, "col-key"), flush_interval=5)
        root = RunTree(name="root", inputs={"q": 1}, exporter=exporter)
        root.post()
        child = root.create_child("child", attachments={"note": ("text/plain", b"hello")})
        child.end(outputs={"a": 1})
        child.post()
        root.end(outputs={"done": True})
        root.patch()
        assert exporter.flush(5)
        stats = exporter.stats()
        exporter.shutdown()
    assert stats["rejected"] == 0 and stats["sent"] == 3, stats
    runs = {r["name"]: r for r in store.trace_runs(str(root.id))}
    assert set(runs) == {"root", "child"}
    assert runs["root"]["outputs"] == {"done": True}
    assert store.get_attachment(str(child.id), "note") == ("text/plain", b"hello")
    store.close()

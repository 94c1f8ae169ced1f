"""One bad run never takes its batch down, through the real ``tracestitch serve``: text that is no
valid Unicode (a lone surrogate set by the app, bytes that are not UTF-8 in a request aiohttp
decoded with ``surrogateescape``) is repaired on the way out, U+FFFD in place of what cannot be
kept, and every other run of the batch is stored as sent."""

from __future__ import annotations

import http.client
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web

from servers import run_aiohttp
from tracestitch import propagation
from tracestitch.collector.ingest_api import batch_ops
from tracestitch.export import wire
from tracestitch.export.langsmith import LangSmithSink
from tracestitch.export.wire import batch_body, dumps, serialize_run
from tracestitch.export.worker import BatchExporter
from tracestitch.exporter import set_exporter
from tracestitch.middleware.aiohttp import tracing_middleware
from tracestitch.run_tree import RunTree
from tracestitch.testing import CollectorProcess, capture_runs

API_KEY = "hostile-key"
_CLI = (sys.executable, "-m", "tracestitch.cli")


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``tracestitch serve`` in a subprocess, as a user starts it."""
    db = tmp_path_factory.mktemp("hostile") / "traces.db"
    with CollectorProcess(db, api_key=API_KEY) as process:
        yield process.url


@pytest.fixture
def exporters() -> Iterator[list[BatchExporter]]:
    """Exporters a test makes, shut down even when it fails (none outlives the collector)."""
    made: list[BatchExporter] = []
    yield made
    for exporter in made:
        exporter.shutdown(5)


def _stored(url: str, run_id: Any) -> dict[str, Any]:
    response = httpx.get(f"{url}/api/runs/{run_id}", headers={"x-api-key": API_KEY})
    assert response.status_code == 200, (run_id, response.text)
    data: dict[str, Any] = response.json()
    return data


def test_a_lone_surrogate_in_one_run_does_not_take_its_batch_down(
    collector: str, exporters: list[BatchExporter]
) -> None:
    # Nothing goes out before the flush, so the ten runs travel in one batch.
    exporter = BatchExporter(
        LangSmithSink(collector, API_KEY, mode="batch"), spool=None, flush_interval=60
    )
    exporters.append(exporter)
    runs = [RunTree(f"run-{i}", inputs={"i": i}, exporter=exporter) for i in range(10)]
    bad = runs[4]
    bad.metadata["note"] = "a\ud800b"  # e.g. a file name decoded with surrogateescape
    bad.inputs["k\udcff"] = "pair \ud83d\udca5 kept"  # a pair held as two code points
    for run in runs:
        run.end(outputs={"ok": True})
        run.post()
    assert exporter.flush(10)
    stats = exporter.stats()
    exporter.shutdown(5)
    assert (stats["sent"], stats["rejected"], stats["dropped"]) == (10, 0, 0), stats
    for run in runs:
        assert _stored(collector, run.id)["name"] == run.name
    stored = _stored(collector, bad.id)
    assert stored["extra"]["metadata"]["note"] == "a\ufffdb"
    assert stored["inputs"] == {"i": 4, "k\ufffd": "pair \U0001f4a5 kept"}


def test_a_run_nested_deeper_than_the_collector_takes_is_cut_down_not_refused(
    collector: str, exporters: list[BatchExporter]
) -> None:
    exporter = BatchExporter(
        LangSmithSink(collector, API_KEY, mode="batch"), spool=None, flush_interval=60
    )
    exporters.append(exporter)
    deep: Any = "bottom"
    for _ in range(230):  # past the collector's 200 levels, within orjson's 254
        deep = {"d": deep}
    runs = [RunTree(f"nested-{i}", inputs={"i": i}, exporter=exporter) for i in range(5)]
    runs[2].inputs["deep"] = deep
    for run in runs:
        run.end(outputs={"ok": True})
        run.post()
    assert exporter.flush(10)
    stats = exporter.stats()
    assert (stats["sent"], stats["dropped"]) == (5, 0), stats
    for run in runs:
        assert _stored(collector, run.id)["name"] == run.name
    kept = _stored(collector, runs[2].id)["inputs"]["deep"]
    levels = 0
    while isinstance(kept, dict):
        kept, levels = kept["d"], levels + 1
    assert kept == "<max depth>" and 50 < levels < 200


def test_aiohttp_request_bytes_that_are_not_utf8_reach_the_collector(
    collector: str, exporters: list[BatchExporter]
) -> None:
    exporter = BatchExporter(LangSmithSink(collector, API_KEY), spool=None, flush_interval=60)
    exporters.append(exporter)
    set_exporter(exporter)

    async def item(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(middlewares=[tracing_middleware(trace_id_header="x-trace-id")])
    app.router.add_get("/items/{name}", item)
    trace_ids = []
    with capture_runs() as runs, run_aiohttp(app) as url:
        for value in (b"caf\xe9 \xff\xfe", b"ok/1.0"):
            conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=10)
            conn.putrequest("GET", "/items/x?q=1")
            conn.putheader("User-Agent", value)  # raw bytes, as a client may send them
            # A parent whose metadata holds a lone surrogate: the member is ignored, counted.
            conn.putheader("langsmith-trace", RunTree("caller").dotted_order)
            conn.putheader("baggage", "langsmith-metadata=%7B%22a%22%3A%22%5Cud800%22%7D")
            conn.endheaders()
            response = conn.getresponse()
            assert (response.status, response.read()) == (200, b"ok")
            trace_ids.append(response.getheader("x-trace-id"))
            conn.close()
    # The run itself holds valid text (whatever reads it: listeners, test helpers, any sink).
    recorded = [r.inputs["headers"]["user-agent"] for r in runs.named("GET /items/{name}")]
    assert recorded == ["caf\ufffd \ufffd\ufffd", "ok/1.0"]
    assert exporter.flush(10)
    stats = exporter.stats()
    exporter.shutdown(5)
    assert (stats["sent"], stats["rejected"], stats["dropped"]) == (2, 0, 0), stats
    assert propagation.stats()["metadata_invalid_json"] == 2
    agents = []
    for trace_id in trace_ids:
        response = httpx.get(f"{collector}/api/traces/{trace_id}", headers={"x-api-key": API_KEY})
        assert response.status_code == 200, response.text
        [run] = [r for r in response.json()["runs"] if r["name"] == "GET /items/{name}"]
        agents.append(run["inputs"]["headers"]["user-agent"])
    assert agents == ["caf\ufffd \ufffd\ufffd", "ok/1.0"]


# ------------------------------------------------------------------------------ the wire


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"a": "\ud800"}, {"a": "\ufffd"}),
        ({"\udcff": 1}, {"\ufffd": 1}),
        ({"pair": "\ud83d\udca5"}, {"pair": "\U0001f4a5"}),
        ({"n": 2**70, "s": ["x\udfff"]}, {"n": str(2**70), "s": ["x\ufffd"]}),
        ({"b": b"\xff\xfe"}, {"b": "//4="}),
    ],
)
def test_dumps_repairs_text_instead_of_giving_up(value: Any, expected: Any) -> None:
    assert orjson.loads(dumps(value)) == expected


def test_a_run_holding_invalid_text_serializes_to_an_object_the_collector_accepts() -> None:
    run = RunTree("n\ud800", inputs={"q": "\udcff"}, tags=["t\ud800"], metadata={"m": "\udfff"})
    run.end(outputs={"a": "\ud800"}, error="boom \udcff")
    ops = serialize_run("post", run)
    [validated] = batch_ops(orjson.loads(batch_body(ops)))
    assert validated.data["name"] == "n\ufffd" and validated.data["error"] == "boom \ufffd"


def test_a_run_that_still_cannot_be_an_object_is_dropped_alone_and_counted(
    monkeypatch: pytest.MonkeyPatch, exporters: list[BatchExporter]
) -> None:
    class Capture:
        def __init__(self) -> None:
            self.ops: list[wire.WireOp] = []

        def send(self, ops: list[wire.WireOp]) -> None:
            batch_ops(orjson.loads(batch_body(ops)))  # the collector's check: all or nothing
            self.ops.extend(ops)

        def close(self) -> None:
            pass

    real_dumps = wire.dumps

    def failing_dumps(obj: Any) -> bytes:
        # A serializer that gives up on one run (as wire.dumps did before it repaired text).
        if isinstance(obj, dict) and obj.get("name") == "doomed":
            return orjson.dumps(repr(obj))
        return real_dumps(obj)

    monkeypatch.setattr(wire, "dumps", failing_dumps)
    sink = Capture()
    exporter = BatchExporter(sink, spool=None, flush_interval=60)
    exporters.append(exporter)
    runs = [RunTree(n, exporter=exporter) for n in ("a", "doomed", "b")]
    for run in runs:
        run.end()
        run.post()
    assert exporter.flush(10)
    stats = exporter.stats()
    exporter.shutdown(5)
    assert sorted(op.run_id for op in sink.ops) == sorted(str(r.id) for r in (runs[0], runs[2]))
    assert stats["dropped"] == 1 and stats["drop_reasons"] == {"serialization failed": 1}, stats


def test_the_real_collector_stores_what_a_repaired_run_holds(
    collector: str, exporters: list[BatchExporter]
) -> None:
    # The same through the CLI's own reader: the stored run reads back as valid JSON.
    exporter = BatchExporter(LangSmithSink(collector, API_KEY), spool=None, flush_interval=60)
    exporters.append(exporter)
    run = RunTree("reader", inputs={"q": "x\ud800y"}, exporter=exporter)
    run.end()
    run.post()
    assert exporter.flush(10)
    exporter.shutdown(5)
    done = subprocess.run(
        [*_CLI, "show", str(run.trace_id), "--url", collector, "--api-key", API_KEY],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "reader" in done.stdout

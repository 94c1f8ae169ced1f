"""The real LangSmith SDK sending to the collector over a real socket."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import langsmith
import pytest
from collector_helpers import API_KEY, ServerThread
from langsmith import traceable

from tracestitch.collector import Store
from tracestitch.collector.query import TraceFilter
from tracestitch.collector.tree import build_trace

_CONFIG = {
    "size_limit": 100,
    "scale_up_qsize_trigger": 1000,
    "scale_up_nthreads_limit": 4,
    "scale_down_nempty_trigger": 4,
}
# (name, info override for the Client, stats key the collector must have seen)
PATHS = [
    ("multipart+zstd", None, "multipart:zstd"),
    (
        "multipart",
        {"batch_ingest_config": {**_CONFIG, "use_multipart_endpoint": True}, "instance_flags": {}},
        "multipart:identity",
    ),
    (
        "batch",
        {"batch_ingest_config": {**_CONFIG, "use_multipart_endpoint": False}},
        "batch",
    ),
]


@traceable(run_type="llm", name="llm_call")
def llm_call(prompt: str) -> dict[str, Any]:
    return {
        "text": prompt[::-1],
        "usage_metadata": {"input_tokens": 11, "output_tokens": 5, "total_tokens": 16},
    }


@traceable(name="failing_step")
def failing_step(x: int) -> None:
    llm_call(f"prompt {x}")
    raise ValueError(f"step {x} failed")


@traceable(name="pipeline")
def pipeline(x: int) -> str:
    with contextlib.suppress(ValueError):
        failing_step(x)
    return f"done {x}"


def _run_sdk(url: str, info: dict[str, Any] | None, n: int) -> None:
    client = langsmith.Client(api_url=url, api_key=API_KEY, info=info)
    if info is None:
        # The SDK's background thread reads /info and only then switches to zstd; runs queued
        # before that go uncompressed. Wait for the switch (a flag, bounded) to test zstd.
        deadline = time.monotonic() + 10
        while client.compressed_traces is None and time.monotonic() < deadline:
            time.sleep(0.005)
    with langsmith.tracing_context(enabled=True, client=client, project_name="sdk-test"):
        for i in range(n):
            pipeline(i)
    client.flush()
    client.cleanup()


@pytest.mark.parametrize(("label", "info", "stat"), PATHS, ids=[p[0] for p in PATHS])
def test_sdk_traces_stored_complete(
    server: ServerThread, store: Store, label: str, info: dict[str, Any] | None, stat: str
) -> None:
    _run_sdk(server.url, info, 3)
    assert server.app.state.stats[stat] >= 1, (label, server.app.state.stats)

    page = store.list_traces(TraceFilter(project="sdk-test"))
    assert page["total"] == 3
    for summary in page["traces"]:
        assert summary["name"] == "pipeline"
        assert summary["status"] == "success"  # the root caught the error
        assert summary["run_count"] == 3
        assert summary["error_count"] == 1
        assert summary["total_tokens"] == 16
        doc = build_trace(summary["trace_id"], store.trace_runs(summary["trace_id"]), summary)
        names = [(r["name"], r["depth"]) for r in doc["runs"]]
        assert names == [("pipeline", 0), ("failing_step", 1), ("llm_call", 2)]
        root, step, llm = doc["runs"]
        x = int(root["inputs"]["x"])
        assert root["outputs"] == {"output": f"done {x}"}
        assert root["end_time"] is not None
        assert root["status"] == "success"
        assert f"step {x} failed" in step["error"]
        assert "ValueError" in step["error"]
        assert step["status"] == "error"
        assert step["end_time"] is not None
        assert llm["inputs"] == {"prompt": f"prompt {x}"}
        assert llm["outputs"]["text"] == f"prompt {x}"[::-1]
        assert (llm["prompt_tokens"], llm["completion_tokens"], llm["total_tokens"]) == (11, 5, 16)
        assert llm["parent_run_id"] == step["id"]
        assert step["parent_run_id"] == root["id"]
        assert all(r["trace_id"] == root["id"] for r in doc["runs"])
        assert all(not r["orphan"] and not r["partial"] for r in doc["runs"])
        assert doc["summary"]["total_tokens"] == 16


def test_sdk_wrong_key_stores_nothing(server: ServerThread, store: Store) -> None:
    client = langsmith.Client(api_url=server.url, api_key="wrong")
    with langsmith.tracing_context(enabled=True, client=client, project_name="x"):
        pipeline(1)
    client.flush()
    client.cleanup()
    assert store.count_runs() == 0

"""The LangSmith Python SDK's ``Client`` beyond ingest, against the real ``tracestitch serve``:
read_run, list_runs with each filter and the cursor, projects, feedback; and whatever the
collector does not implement fails at once, without the SDK retrying."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import langsmith
import pytest
from interop_helpers import API_KEY, Collector
from langsmith import schemas as ls_schemas
from langsmith import traceable
from langsmith import utils as ls_utils

from tracestitch.collector.projects import project_id

PROJECT = "sdk-api"
# list_runs/read_run are deprecated for LangSmith's new API (which this collector does not serve)
# and feedback without a session id warns: the calls under test, warnings and all.
pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::langsmith.utils.LangSmithWarning"),
]


@traceable(run_type="llm", name="llm-step")
def llm_step(prompt: str) -> dict[str, Any]:
    return {"text": prompt.upper(), "usage_metadata": {"input_tokens": 4, "output_tokens": 2}}


@traceable(run_type="tool", name="tool-step")
def tool_step(x: int) -> int:
    if x < 0:
        raise ValueError("negative")
    return x + 1


@traceable(name="pipeline")
def pipeline(x: int, photo: ls_schemas.Attachment) -> str:
    llm_step(f"q{x}")
    tool_step(x)
    with contextlib.suppress(ValueError):
        tool_step(-1)
    return "ok"


@pytest.fixture
def client(collector: Collector) -> Iterator[langsmith.Client]:
    # Short timeouts: a call the collector answered wrongly must fail fast, not hang the test.
    sdk = langsmith.Client(api_url=collector.url, api_key=API_KEY, timeout_ms=(2000, 5000))
    yield sdk
    sdk.cleanup()


def _calls(collector: Collector, key: str) -> int:
    return collector.requests().get(key, 0)


def test_read_side_of_the_sdk(collector: Collector, client: langsmith.Client) -> None:
    started = datetime.now(timezone.utc)
    roots = []
    with langsmith.tracing_context(enabled=True, client=client, project_name=PROJECT):
        for i in range(3):
            with langsmith.trace("outer", inputs={"i": i}) as outer:
                photo = ls_schemas.Attachment(mime_type="image/png", data=b"\x89PNG" + bytes([i]))
                pipeline(i, photo)
                roots.append(outer)
    client.flush()
    trace0 = roots[0]

    # list_runs: by project (read_project turns the name into its id), then each filter.
    everything = list(client.list_runs(project_name=PROJECT))
    assert len(everything) == 3 * 5  # outer, pipeline, llm, tool and failing tool per trace
    assert {r.session_id for r in everything} == {client.read_project(project_name=PROJECT).id}
    by_trace = list(client.list_runs(project_name=PROJECT, trace_id=trace0.id))
    assert {r.name for r in by_trace} == {"outer", "pipeline", "llm-step", "tool-step"}
    assert all(r.trace_id == trace0.id for r in by_trace)
    roots_found = list(client.list_runs(project_name=PROJECT, is_root=True))
    assert {r.id for r in roots_found} == {r.id for r in roots}
    pipeline0 = next(r for r in by_trace if r.name == "pipeline")
    children = list(client.list_runs(parent_run_id=pipeline0.id))
    assert sorted(r.name for r in children) == ["llm-step", "tool-step", "tool-step"]
    errors = list(client.list_runs(project_name=PROJECT, error=True))
    assert len(errors) == 3 and all("negative" in (r.error or "") for r in errors)
    assert len(list(client.list_runs(project_name=PROJECT, error=False))) == 12
    picked = [everything[0].id, everything[5].id]
    assert {r.id for r in client.list_runs(run_ids=picked)} == set(picked)
    assert len(list(client.list_runs(project_name=PROJECT, run_type="llm"))) == 3
    assert len(list(client.list_runs(project_name=PROJECT, start_time=started))) == 15
    later = datetime.now(timezone.utc) + timedelta(hours=1)
    assert list(client.list_runs(project_name=PROJECT, start_time=later)) == []
    assert len(list(client.list_runs(project_name=PROJECT, limit=4))) == 4
    # The cursor, as the SDK follows it: pages of 5 until the last.
    queries_before = _calls(collector, "POST /runs/query 200")
    session = str(client.read_project(project_name=PROJECT).id)
    paged = list(
        client._get_cursor_paginated_list("/runs/query", body={"session": [session], "limit": 5})
    )
    assert sorted(r["id"] for r in paged) == sorted(str(r.id) for r in everything)
    assert _calls(collector, "POST /runs/query 200") - queries_before == 4  # 5, 5, 5, then none

    # read_run: the run as stored, its usage, and its attachment (a signed URL the SDK
    # downloads without credentials).
    llm = next(r for r in by_trace if r.name == "llm-step")
    read = client.read_run(llm.id)
    assert read.outputs == {"text": "Q0", "usage_metadata": {"input_tokens": 4, "output_tokens": 2}}
    assert read.total_tokens == 6 and read.parent_run_id == pipeline0.id
    assert read.dotted_order.startswith(trace0.dotted_order)
    with_photo = client.read_run(pipeline0.id)
    assert with_photo.attachments["photo"]["reader"].read() == b"\x89PNG\x00"
    assert with_photo.attachments["photo"]["mime_type"] == "image/png"
    loaded = client.read_run(trace0.id, load_child_runs=True)
    assert [c.name for c in loaded.child_runs or []] == ["pipeline"]

    # Projects.
    project = client.read_project(project_name=PROJECT, include_stats=True)
    assert project.name == PROJECT and project.run_count == 15
    assert client.read_project(project_id=project.id).name == PROJECT
    made = client.create_project("made-here", description="by the test", metadata={"team": "a"})
    assert made.id == client.read_project(project_name="made-here").id
    assert made.metadata == {"team": "a"}
    with pytest.raises(ls_utils.LangSmithConflictError):
        client.create_project("made-here")
    assert client.create_project("made-here", upsert=True).id == made.id
    names = {p.name for p in client.list_projects()}
    assert {PROJECT, "made-here"} <= names
    assert [p.name for p in client.list_projects(name_contains="made")] == ["made-here"]
    assert [p.name for p in client.list_projects(metadata={"team": "a"})] == ["made-here"]
    assert [p.name for p in client.list_projects(project_ids=[made.id])] == ["made-here"]
    assert client.has_project(PROJECT) and not client.has_project("never-made")
    with pytest.raises(ls_utils.LangSmithNotFoundError):
        client.read_project(project_name="never-made")

    # Feedback: stored, listed, on the run (feedback_stats), and before its run exists.
    fb = client.create_feedback(
        llm.id,
        "correctness",
        score=0.75,
        comment="close",
        trace_id=trace0.id,
        session_id=project.id,
    )
    client.create_feedback(
        llm.id, "tone", value="polite", trace_id=trace0.id, session_id=project.id
    )
    early_run = uuid.uuid4()
    client.create_feedback(early_run, "early", score=1, trace_id=early_run, session_id=project.id)
    listed = list(client.list_feedback(run_ids=[llm.id]))
    assert [(f.key, f.score, f.comment) for f in listed] == [
        ("correctness", 0.75, "close"),
        ("tone", None, None),
    ]
    assert listed[0].id == fb.id and client.read_feedback(fb.id).key == "correctness"
    assert [f.key for f in client.list_feedback(feedback_key=["tone"])] == ["tone"]
    assert [f.run_id for f in client.list_feedback(run_ids=[early_run])] == [early_run]
    stats = client.read_run(llm.id).feedback_stats
    assert stats is not None and stats["correctness"]["avg"] == 0.75
    assert stats["tone"]["values"] == {"polite": 1}
    # One POST per create_feedback: nothing was retried (a 404 here once meant 8 minutes).
    assert _calls(collector, "POST /feedback 200") == 3
    answered = collector.requests()
    assert answered["POST /sessions 409"] == 1
    assert {k: n for k, n in answered.items() if not k.endswith((" 200", " 409"))} == {}


def test_what_is_not_implemented_fails_at_once(
    collector: Collector, client: langsmith.Client
) -> None:
    calls = [
        ("POST /runs/query 501", lambda: list(client.list_runs(filter='eq(name, "x")'))),
        ("GET /datasets 501", lambda: client.read_dataset(dataset_name="d")),
        ("POST /datasets 501", lambda: client.create_dataset("d")),
        ("DELETE /sessions/{id} 501", lambda: client.delete_project(project_id=uuid.uuid4())),
        ("PATCH /feedback/{id} 501", lambda: client.update_feedback(uuid.uuid4(), score=1)),
    ]
    for key, call in calls:
        started = time.monotonic()
        with pytest.raises(ls_utils.LangSmithError) as caught:
            call()
        assert "501" in str(caught.value) and "does not implement" in str(caught.value)
        assert _calls(collector, key) == 1, (key, collector.requests())
        # No backoff happened (the SDK's first retry waits at least a second).
        assert time.monotonic() - started < 5, key


def test_feedback_parts_the_sdk_sends_to_a_newer_server_are_stored(collector: Collector) -> None:
    # Against a server reporting 0.8.10 or later, the SDK sends feedback that extends the
    # trace's retention as a feedback.{id} part of /runs/multipart, beside the runs. Our /info
    # says tracestitch's own version, so the SDK is told the newer one here to take that path.
    info = httpx.get(collector.url + "/info").json()
    info["version"] = "0.8.10"
    sdk = langsmith.Client(api_url=collector.url, api_key=API_KEY, info=info)
    try:
        run_id = uuid.uuid4()
        sdk.create_run(
            "rated",
            {"q": 1},
            "chain",
            id=run_id,
            trace_id=run_id,
            dotted_order=f"20260101T000000000000Z{run_id}",
            project_name="fb",
        )
        fb = sdk.create_feedback(
            run_id,
            "kept",
            score=1,
            trace_id=run_id,
            extend_trace_retention=True,
            session_id=project_id("fb"),
        )
        sdk.flush()
    finally:
        sdk.cleanup()
    assert _calls(collector, "POST /feedback 200") == 0  # it did take the multipart path
    assert _calls(collector, "POST /runs/multipart 200") >= 1
    (stored,) = collector.get("/feedback", run=str(run_id))
    assert stored["id"] == str(fb.id) and stored["key"] == "kept" and stored["score"] == 1

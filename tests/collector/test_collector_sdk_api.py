"""The collector's LangSmith API surface beyond ingest, over HTTP: /info, the schema migration
that brought projects and feedback, feedback in multipart, and 501 for what is not there."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from collector_helpers import API_KEY, MP_HEADERS, ServerThread, make_run, multipart_body, wire

import tracestitch
from tracestitch.collector import Store
from tracestitch.collector.migrations import MIGRATIONS
from tracestitch.collector.projects import project_id


@pytest.fixture
def http(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"x-api-key": API_KEY}) as client:
        yield client


def test_info_reports_the_real_version_and_what_the_sdks_read(http: httpx.Client) -> None:
    info = httpx.get(http.base_url.join("/info")).json()  # no key needed
    assert info["version"] == tracestitch.__version__
    assert info["batch_ingest_config"]["use_multipart_endpoint"] is True
    assert info["batch_ingest_config"]["size_limit_bytes"] == 256 * 1024
    flags = info["instance_flags"]
    assert flags["zstd_compression_enabled"] is True and flags["gzip_body_enabled"] is True
    # The v1 query routes (what read_run/list_runs use), not LangSmith's SmithDB-only API.
    assert flags["ch_query_enabled"] is True and flags["sdb_query_enabled"] is False


def test_version_1_database_migrates(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    for statement in MIGRATIONS[0].split(";"):
        if statement.strip():
            conn.execute(statement)
    run_id = str(uuid.uuid4())
    conn.execute(
        "INSERT INTO runs(id, trace_id, name, project, status, received_us)"
        " VALUES (?, ?, 'old', 'legacy', 'success', 5)",
        (run_id, run_id),
    )
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    store = Store(path)
    try:
        with store._read() as conn:
            row = conn.execute("SELECT span_id FROM runs").fetchone()
        assert row[0] == run_id.replace("-", "")[16:]
        assert store.project_names([project_id("legacy")]) == {project_id("legacy"): "legacy"}
        assert store.span_run_ids(run_id, [row[0]]) == {row[0]: run_id}
    finally:
        store.close()


def test_feedback_parts_in_multipart(http: httpx.Client, store: Store) -> None:
    """What the SDK sends once a server reports 0.8.10 or later: ``feedback.{id}`` parts."""
    run = wire(make_run("graded"))
    fid = str(uuid.uuid4())
    feedback = {"trace_id": run["id"], "run_id": run["id"], "key": "ok", "score": 1}
    body = multipart_body(
        [
            (f"post.{run['id']}", orjson.dumps(run), "application/json"),
            (f"feedback.{fid}", orjson.dumps(feedback), "application/json"),
        ]
    )
    assert http.post("/runs/multipart", content=body, headers=MP_HEADERS).status_code == 200
    assert http.get(f"/feedback/{fid}").json()["key"] == "ok"
    assert http.get("/feedback", params={"run": run["id"]}).json()[0]["score"] == 1
    bad = multipart_body([(f"feedback.{fid}", b'{"key": 3, "run_id": "x"}', "application/json")])
    resp = http.post("/runs/multipart", content=bad, headers=MP_HEADERS)
    assert resp.status_code == 422 and f"feedback.{fid}" in resp.json()["detail"]


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"run_id": "nope", "key": "k"}, "feedback.run_id"),
        ({"key": "k"}, "needs a run_id"),
        ({"run_id": str(uuid.uuid4()), "key": ""}, "feedback.key"),
        ({"run_id": str(uuid.uuid4()), "key": "k", "score": "high"}, "feedback.score"),
        ({"run_id": str(uuid.uuid4()), "key": "k", "created_at": "later"}, "created_at"),
    ],
)
def test_bad_feedback_is_refused_naming_the_field(
    http: httpx.Client, body: dict[str, object], problem: str
) -> None:
    resp = http.post("/feedback", json=body)
    assert resp.status_code == 422 and problem in resp.json()["detail"]
    assert http.get("/feedback").json() == []


def test_what_is_not_implemented_is_501_and_pages_404(http: httpx.Client) -> None:
    resp = http.get("/datasets", params={"name": "x"})
    assert resp.status_code == 501
    assert "does not implement GET /datasets" in resp.json()["detail"]
    assert http.delete(f"/runs/{uuid.uuid4()}").status_code == 501
    assert http.post("/runs/query", json={"filter": 'eq(name, "x")'}).status_code == 501
    # A browser asking for a page that is not there.
    assert http.get("/nowhere", headers={"accept": "text/html"}).status_code == 404
    # Routes that exist keep their answers: 405 for a wrong method, 422 for a bad id.
    assert http.put("/info").status_code == 501
    assert http.get("/runs/not-a-uuid").status_code == 422

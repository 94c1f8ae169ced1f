"""Ingest API over HTTP: merge order, idempotency, rejections that change nothing."""

from __future__ import annotations

import gzip
import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import zstandard
from collector_helpers import (
    API_KEY,
    MP_HEADERS,
    ServerThread,
    make_run,
    multipart_body,
    multipart_with_attachment,
    three_service_trace,
    wire,
)

from tracestitch.collector import Store
from tracestitch.collector.migrations import SCHEMA_VERSION


@pytest.fixture
def http(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"x-api-key": API_KEY}) as client:
        yield client


def split_post_patch(run: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    post = {k: v for k, v in wire(run).items() if k not in ("end_time", "outputs", "error")}
    patch = {
        "id": run["id"],
        "trace_id": run["trace_id"],
        "dotted_order": run["dotted_order"],
        "parent_run_id": run["parent_run_id"],
        "end_time": run["end_time"],
        "outputs": run["outputs"],
        "error": run.get("error"),
    }
    return post, patch


def snapshot(store: Store) -> bytes:
    # Everything but the received-at clocks, which a repeat may legitimately move.
    with store._read() as conn:
        rows = conn.execute(
            "SELECT id, trace_id, parent_run_id, dotted_order, name, run_type, project, service,"
            " status, start_us, end_us, total_tokens, total_cost, post_json, patch_json FROM runs"
            " ORDER BY id"
        ).fetchall()
        rows += conn.execute(
            "SELECT trace_id, root_name, project, status, start_us, end_us, duration_us,"
            " run_count, error_count, services, total_tokens, total_cost, has_root FROM traces"
            " ORDER BY trace_id"
        ).fetchall()
        rows += conn.execute(
            "SELECT run_id, name, content_type, data FROM attachments ORDER BY run_id, name"
        ).fetchall()
    return repr([tuple(row) for row in rows]).encode()


def test_info_advertises_multipart_and_zstd(http: httpx.Client) -> None:
    info = http.get("/info").json()
    assert info["batch_ingest_config"]["use_multipart_endpoint"] is True
    assert info["instance_flags"]["zstd_compression_enabled"] is True


@pytest.mark.parametrize("order", ["post-first", "patch-first", "together"])
def test_post_and_patch_merge_in_any_order(http: httpx.Client, store: Store, order: str) -> None:
    run = make_run("root", service="api")
    post, patch = split_post_patch(run)
    if order == "post-first":
        assert http.post("/runs", json=post).status_code == 200
        assert http.patch(f"/runs/{run['id']}", json=patch).status_code == 200
    elif order == "patch-first":
        assert http.post("/runs/batch", json={"patch": [patch]}).status_code == 200
        assert store.get_run(run["id"])["_has_post"] is False  # type: ignore[index]
        assert http.post("/runs/batch", json={"post": [post]}).status_code == 200
    else:
        assert http.post("/runs/batch", json={"post": [post], "patch": [patch]}).status_code == 200
    stored = store.get_run(run["id"])
    assert stored is not None
    assert stored["end_time"] == run["end_time"]
    assert stored["outputs"] == run["outputs"]
    assert stored["inputs"] == run["inputs"]
    assert stored["name"] == "root"
    summary = store.trace_summary(run["id"])
    assert summary is not None
    assert summary["status"] == "success"
    assert summary["services"] == ["api"]


def test_repeats_are_idempotent(http: httpx.Client, store: Store) -> None:
    runs = three_service_trace()
    body = {"post": [wire(r) for r in runs]}
    for _ in range(3):
        assert http.post("/runs/batch", json=body).status_code == 200
    patches = [{"id": r["id"], "trace_id": r["trace_id"], "end_time": r["end_time"]} for r in runs]
    assert http.post("/runs/batch", json={**body, "patch": patches}).status_code == 200
    first = snapshot(store)
    assert http.post("/runs/batch", json={"patch": patches}).status_code == 200
    assert http.post("/runs/batch", json=body).status_code == 200
    assert store.count_runs() == len(runs)
    assert snapshot(store) == first
    assert http.get(f"/api/traces/{runs[0]['id']}").json()["summary"]["run_count"] == 5


def test_multipart_parts_and_attachments(http: httpx.Client, store: Store) -> None:
    run = make_run("with-parts", service="svc")
    main = {k: v for k, v in wire(run).items() if k not in ("inputs", "outputs", "extra")}
    rid = run["id"]
    parts = [
        (f"post.{rid}.inputs", orjson.dumps({"question": "hi"}), "application/json"),
        (f"post.{rid}", orjson.dumps(main), "application/json"),
        (f"post.{rid}.outputs", orjson.dumps({"answer": 42}), "application/json"),
        (f"post.{rid}.extra", orjson.dumps({"metadata": {"service": "svc"}}), "application/json"),
        (f"attachment.{rid}.notes", b"\x00binary\xff", "application/octet-stream; length=8"),
    ]
    body = multipart_body(parts)
    resp = http.post(
        "/runs/multipart",
        content=zstandard.compress(body),
        headers={**MP_HEADERS, "content-encoding": "zstd"},
    )
    assert resp.status_code == 200, resp.text
    stored = store.get_run(rid)
    assert stored is not None
    assert stored["inputs"] == {"question": "hi"}
    assert stored["outputs"] == {"answer": 42}
    assert stored["attachments"]["notes"]["size"] == 8
    got = http.get(f"/api/runs/{rid}/attachments/notes")
    assert got.content == b"\x00binary\xff"
    assert got.headers["content-type"] == "application/octet-stream"
    # gzip works too; the same run again is a no-op
    resp = http.post(
        "/runs/multipart",
        content=gzip.compress(body),
        headers={**MP_HEADERS, "content-encoding": "gzip"},
    )
    assert resp.status_code == 200
    assert store.count_runs() == 1


def test_attachment_names_with_slashes_download(http: httpx.Client, server: ServerThread) -> None:
    run = make_run("with-report", service="svc")
    rid = run["id"]
    name = "reports/q1 summary"
    data = b"<html><script>alert(1)</script></html>\x00\xff"
    body = multipart_with_attachment(run, name, data, "text/html")
    resp = http.post("/runs/multipart", content=body, headers=MP_HEADERS)
    assert resp.status_code == 200, resp.text
    info = http.get(f"/api/runs/{rid}").json()["attachments"][name]
    assert info["size"] == len(data)
    assert info["content_type"] == "text/html"
    # The advertised URL is percent-encoded, and works; so do the raw "/" and a "%2F".
    assert info["presigned_url"] == f"/api/runs/{rid}/attachments/reports%2Fq1%20summary"
    for path in (
        info["presigned_url"],
        f"/api/runs/{rid}/attachments/reports/q1 summary",
        f"/api/runs/{rid}/attachments/reports%2fq1%20summary",
    ):
        got = http.get(path)
        assert got.status_code == 200, (path, got.text)
        assert got.content == data
        # Still a download of opaque bytes, whatever type the client claimed.
        assert got.headers["content-type"] == "application/octet-stream"
        assert got.headers["content-disposition"] == "attachment"
        assert got.headers["x-original-content-type"] == "text/html"
        assert got.headers["x-content-type-options"] == "nosniff"
    # The trace document advertises the same URL.
    trace = http.get(f"/api/traces/{rid}").json()
    assert trace["runs"][0]["attachments"][name]["presigned_url"] == info["presigned_url"]
    # Other names under the same "directory" are not found; the key is still required.
    assert http.get(f"/api/runs/{rid}/attachments/reports").status_code == 404
    assert http.get(f"/api/runs/{rid}/attachments/reports/q1").status_code == 404
    assert http.get(f"/api/runs/{rid}/attachments/reports/q1 summary/x").status_code == 404
    anonymous = httpx.get(server.url + info["presigned_url"])
    assert anonymous.status_code == 401
    assert data not in anonymous.content


BAD_BATCHES: list[tuple[str, Any, str]] = [
    ("not json", b"{nope", "not valid JSON"),
    ("not an object", b"[1, 2]", "expected a JSON object"),
    ("unknown key", b'{"delete": []}', "unknown batch keys"),
    (
        "bad id",
        {
            "post": [
                {
                    "id": "nope",
                    "name": "x",
                    "run_type": "chain",
                    "start_time": "2025-01-01T00:00:00Z",
                }
            ]
        },
        "is not a UUID",
    ),
    (
        "missing name",
        {
            "post": [
                {"id": str(uuid.uuid4()), "run_type": "chain", "start_time": "2025-01-01T00:00:00Z"}
            ]
        },
        "'name'",
    ),
    (
        "bad time",
        {
            "post": [
                {
                    "id": str(uuid.uuid4()),
                    "name": "x",
                    "run_type": "chain",
                    "start_time": "yesterday",
                }
            ]
        },
        "start_time",
    ),
    ("inputs not object", {"patch": [{"id": str(uuid.uuid4()), "inputs": [1]}]}, "inputs"),
    (
        "bad dotted order",
        {
            "post": [
                {
                    "id": str(uuid.uuid4()),
                    "name": "x",
                    "run_type": "chain",
                    "start_time": "2025-01-01T00:00:00Z",
                    "dotted_order": "garbage",
                }
            ]
        },
        "dotted_order",
    ),
]


@pytest.mark.parametrize(
    ("label", "payload", "message"), BAD_BATCHES, ids=[b[0] for b in BAD_BATCHES]
)
def test_invalid_batch_is_422_and_changes_nothing(
    http: httpx.Client, store: Store, label: str, payload: Any, message: str
) -> None:
    good = [wire(r) for r in three_service_trace()]
    assert http.post("/runs/batch", json={"post": good}).status_code == 200
    before = snapshot(store)
    if isinstance(payload, bytes):
        resp = http.post(
            "/runs/batch", content=payload, headers={"content-type": "application/json"}
        )
    else:
        # A valid run rides along with the bad one: the whole request must be refused.
        payload = {**payload, "post": [wire(make_run("innocent")), *payload.get("post", [])]}
        resp = http.post("/runs/batch", json=payload)
    assert resp.status_code == 422, label
    assert message in resp.json()["detail"]
    assert snapshot(store) == before
    assert http.get("/info").status_code == 200  # still serving


def test_malformed_multipart_is_422(http: httpx.Client, store: Store) -> None:
    rid = str(uuid.uuid4())
    bad = [
        multipart_body([(f"post.{rid}", b"{broken", "application/json")]),
        multipart_body([(f"post.{rid}.inputs", b"{}", "application/json")]),  # no main part
        multipart_body([(f"frobnicate.{rid}", b"{}", "application/json")]),
        b'--testboundary42\r\nContent-Disposition: form-data; name="x"\r\n\r\ntruncated',
    ]
    for body in bad:
        resp = http.post("/runs/multipart", content=body, headers=MP_HEADERS)
        assert resp.status_code == 422, body
    resp = http.post(
        "/runs/multipart", content=b"junk", headers={**MP_HEADERS, "content-encoding": "zstd"}
    )
    assert resp.status_code == 422
    assert (
        http.post(
            "/runs/multipart", content=b"x", headers={**MP_HEADERS, "content-encoding": "br"}
        ).status_code
        == 415
    )
    assert store.count_runs() == 0


def test_auth_401_changes_nothing(server: ServerThread, store: Store) -> None:
    body = {"post": [wire(make_run("sneaky"))]}
    for headers in ({}, {"x-api-key": "wrong"}, {"x-api-key": API_KEY + "x"}):
        resp = httpx.post(server.url + "/runs/batch", json=body, headers=headers)
        assert resp.status_code == 401
        assert "x-api-key" in resp.json()["detail"]
        assert httpx.get(server.url + "/api/traces", headers=headers).status_code == 401
    assert store.count_runs() == 0


def test_body_limit_413_changes_nothing(http: httpx.Client, store: Store) -> None:
    big = make_run("big", inputs={"blob": "x" * 300_000})  # limit is 256 KiB in the fixture
    resp = http.post("/runs/batch", json={"post": [wire(big)]})
    assert resp.status_code == 413
    # Streaming without Content-Length is caught while reading.
    payload = orjson.dumps({"post": [wire(big)]})
    resp = http.post("/runs/batch", content=iter([payload[:1000], payload[1000:]]))
    assert resp.status_code == 413
    # A small zstd bomb expanding past 5x the limit.
    bomb = zstandard.compress(b'{"post": [' + b" " * 2_000_000 + b"]}")
    resp = http.post("/runs/batch", content=bomb, headers={"content-encoding": "zstd"})
    assert resp.status_code == 413
    assert store.count_runs() == 0
    assert http.get("/info").status_code == 200


def test_schema_version_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    store = Store(path)
    from tracestitch.collector.ingest import validate_op

    store.ingest([validate_op("post", wire(make_run("keep")), "run")])
    store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 5
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # A database of version 2 goes through migrations 3 to 5 when opened: the services view's
    # index, its rollup (filled from the runs), the index dropped again.
    conn.execute("DROP TABLE service_rollup")
    conn.execute("DROP TABLE service_rollup_minute")
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()
    Store(path).close()
    conn = sqlite3.connect(path)
    indexes = {row[1] for row in conn.execute("PRAGMA index_list(runs)")}
    assert "runs_stats" not in indexes
    assert conn.execute("SELECT COUNT(*) FROM service_rollup").fetchone()[0] == 0  # no service
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()
    copy = tmp_path / "copy.sqlite"
    shutil.copy(path, copy)
    reopened = Store(path)
    assert reopened.count_runs() == 1
    reopened.close()
    conn = sqlite3.connect(copy)
    conn.execute("PRAGMA user_version = 99")
    conn.commit()
    conn.close()
    from tracestitch.collector.migrations import SchemaTooNew

    with pytest.raises(SchemaTooNew, match="newer"):
        Store(copy)

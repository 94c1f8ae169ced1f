"""Query API: trace list filters and pagination, trace tree, runs, usage, viewer headers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
from collector_helpers import API_KEY, BASE, ServerThread, make_run, three_service_trace, wire

from tracestitch.collector import Store
from tracestitch.schemas import Run


@pytest.fixture
def http(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"x-api-key": API_KEY}) as client:
        yield client


def ingest(http: httpx.Client, runs: list[dict[str, object]]) -> None:
    resp = http.post("/runs/batch", json={"post": [wire(r) for r in runs]})
    assert resp.status_code == 200, resp.text


@pytest.fixture
def populated(http: httpx.Client) -> dict[str, str]:
    ids = {}
    checkout = three_service_trace()
    ingest(http, checkout)
    ids["checkout"] = checkout[0]["id"]
    slow = make_run("slow-report", start_ms=1000, end_ms=6000, service="reports", project="batch")
    ingest(http, [slow])
    ids["slow"] = slow["id"]
    failing = make_run("broken", start_ms=2000, end_ms=2005, service="reports", error="KeyError")
    ingest(http, [failing])
    ids["failing"] = failing["id"]
    running = make_run("still-going", start_ms=3000, end_ms=None, service="gateway")
    ingest(http, [running])
    ids["running"] = running["id"]
    return ids


def names(resp: httpx.Response) -> list[str]:
    assert resp.status_code == 200, resp.text
    return [t["name"] for t in resp.json()["traces"]]


def test_trace_list_filters(http: httpx.Client, populated: dict[str, str]) -> None:
    assert names(http.get("/api/traces")) == [
        "still-going",
        "broken",
        "slow-report",
        "GET /checkout",
    ]
    assert names(http.get("/api/traces", params={"project": "batch"})) == ["slow-report"]
    assert names(http.get("/api/traces", params={"service": "payments"})) == ["GET /checkout"]
    assert names(http.get("/api/traces", params={"service": "gateway"})) == [
        "still-going",
        "GET /checkout",
    ]
    assert names(http.get("/api/traces", params={"name": "REPORT"})) == ["slow-report"]
    assert names(http.get("/api/traces", params={"status": "error"})) == ["broken"]
    assert names(http.get("/api/traces", params={"status": "pending"})) == ["still-going"]
    assert names(http.get("/api/traces", params={"min_duration_ms": 1000})) == ["slow-report"]
    start = BASE.timestamp() + 1.5
    assert names(http.get("/api/traces", params={"start_gte": start})) == ["still-going", "broken"]
    iso = BASE.isoformat()
    assert names(http.get("/api/traces", params={"start_lte": iso})) == ["GET /checkout"]
    # Text search reaches into inputs of any run of the trace, with LIKE wildcards literal.
    assert names(http.get("/api/traces", params={"q": "window.__pwned"})) == ["GET /checkout"]
    assert names(http.get("/api/traces", params={"q": "%"})) == []


def test_trace_list_pagination(http: httpx.Client, populated: dict[str, str]) -> None:
    first = http.get("/api/traces", params={"limit": 3}).json()
    assert first["total"] == 4
    assert first["next_offset"] == 3
    assert len(first["traces"]) == 3
    rest = http.get("/api/traces", params={"limit": 3, "offset": 3}).json()
    assert rest["next_offset"] is None
    assert [t["name"] for t in rest["traces"]] == ["GET /checkout"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"status": "weird"}, "status"),
        ({"limit": "0"}, "limit"),
        ({"limit": "lots"}, "limit"),
        ({"start_gte": "last tuesday"}, "start_gte"),
        ({"min_duration_ms": "nan"}, "min_duration_ms"),
    ],
)
def test_bad_query_params_are_422(http: httpx.Client, params: dict[str, str], message: str) -> None:
    resp = http.get("/api/traces", params=params)
    assert resp.status_code == 422
    assert message in resp.json()["detail"]


def test_trace_document(http: httpx.Client, populated: dict[str, str]) -> None:
    doc = http.get(f"/api/traces/{populated['checkout']}").json()
    assert [(r["name"], r["depth"]) for r in doc["runs"]] == [
        ("GET /checkout", 0),
        ("POST /orders", 1),
        ("select order", 2),
        ("summarise", 2),
        ("POST /payments", 1),
    ]
    summary = doc["summary"]
    assert summary["services"] == ["gateway", "orders", "payments"]
    assert summary["total_tokens"] == 150
    assert summary["prompt_tokens"] == 120
    assert summary["completion_tokens"] == 30
    assert summary["total_cost"] == pytest.approx(0.0018)
    assert summary["first_token_time"] is not None
    assert summary["error_count"] == 1
    assert summary["status"] == "success"
    llm = doc["runs"][3]
    assert llm["first_token_time"] == "2025-03-01T12:00:00.040000+00:00"
    assert llm["prompt_cost"] == pytest.approx(0.0012)
    assert doc["runs"][0]["child_run_ids"] == [doc["runs"][1]["id"], doc["runs"][4]["id"]]
    assert http.get(f"/api/traces/{uuid.uuid4()}").status_code == 404
    assert http.get("/api/traces/not-a-uuid").status_code == 422


def test_orphans_and_clock_skew(http: httpx.Client) -> None:
    root = make_run("root", start_ms=100, end_ms=200, service="a")
    # Remote service whose clock runs 30 ms behind: its run "starts" before its parent.
    skewed = make_run("remote", parent=root, start_ms=70, end_ms=150, service="b")
    missing_parent = make_run("lost-parent", parent=root, start_ms=120, end_ms=130)
    orphan = make_run("orphan", parent=missing_parent, start_ms=121, end_ms=125, service="c")
    ingest(http, [root, skewed, orphan])  # missing_parent never arrives
    doc = http.get(f"/api/traces/{root['id']}").json()
    by_name = {r["name"]: r for r in doc["runs"]}
    assert by_name["remote"]["skew_us"] == 30_000
    assert by_name["remote"]["depth"] == 1
    assert by_name["orphan"]["orphan"] is True
    assert by_name["orphan"]["depth"] == 0
    assert by_name["root"]["orphan"] is False
    assert doc["root_run_ids"] == [root["id"], orphan["id"]]
    assert doc["summary"]["orphan_count"] == 1
    assert doc["summary"]["skewed_count"] == 1


def test_run_endpoint(http: httpx.Client, populated: dict[str, str], store: Store) -> None:
    trace_id = populated["checkout"]
    resp = http.get(f"/api/runs/{trace_id}", params={"include_children": "true"})
    run = resp.json()
    # Every field of the core Run model (LangSmith's Run), taken from the model, not a copy.
    for field in Run.model_fields:
        assert field in run, field
    assert Run.model_validate(run).id == uuid.UUID(trace_id)
    assert run["app_path"] == f"/traces/{trace_id}?run={trace_id}"
    assert run["url"] == run["app_path"]
    assert [c["name"] for c in run["child_runs"]] == ["POST /orders", "POST /payments"]
    plain = http.get(f"/api/runs/{trace_id}").json()
    assert plain["child_runs"] is None
    assert http.get(f"/api/runs/{uuid.uuid4()}").status_code == 404


def test_viewer_pages_and_security_headers(server: ServerThread) -> None:
    for path in ("/", f"/traces/{uuid.uuid4()}", "/static/viewer.css", "/static/trace.js"):
        resp = httpx.get(server.url + path)
        assert resp.status_code == 200, path
        csp = resp.headers["content-security-policy"]
        assert "script-src 'self'" in csp
        assert "default-src 'none'" in csp
        assert resp.headers["x-content-type-options"] == "nosniff"
    page = httpx.get(server.url + "/").text
    assert "http://" not in page
    assert "https://" not in page


def test_no_service_is_none_and_list_parameters_are_checked(open_server: ServerThread) -> None:
    """A run that names no service (a plain @traceable, the LangSmith SDK) has none: its
    project is not shown as one. Bad list parameters are refused with the reason."""
    run = make_run("plain traceable", project="notebooks")
    assert httpx.post(open_server.url + "/runs", json=wire(run)).status_code == 200
    listed = httpx.get(open_server.url + "/api/traces").json()["traces"][0]
    assert listed["services"] == []
    assert listed["project"] == "notebooks"
    trace = httpx.get(open_server.url + f"/api/traces/{run['id']}").json()
    assert trace["runs"][0]["service"] is None
    for query, reason in (
        ("sort=size", "sort: expected one of"),
        ("order=up", "order: expected asc or desc"),
        ("metadata=user", "metadata: expected key=value"),
    ):
        answer = httpx.get(open_server.url + f"/api/traces?{query}")
        assert answer.status_code == 422
        assert reason in answer.json()["detail"]

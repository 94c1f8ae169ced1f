"""Hostile input on every ingest route and the query API: a 4xx naming the problem, never a 500,
and whatever is accepted can always be read back."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

import httpx
import orjson
import pytest
from collector_helpers import (
    API_KEY,
    MP_HEADERS,
    ServerThread,
    make_run,
    multipart_body,
    segment,
    ts,
    wire,
)

from tracestitch.collector import Store
from tracestitch.collector.ingest import MAX_DOTTED_ORDER_SEGMENTS, MAX_RUN_DEPTH, RunOp

Send = Callable[[httpx.Client, dict[str, Any]], httpx.Response]


@pytest.fixture
def http(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"x-api-key": API_KEY}) as client:
        yield client


def rows(store: Store) -> list[Any]:
    with store._read() as conn:
        found = conn.execute("SELECT id, post_json, patch_json FROM runs ORDER BY id").fetchall()
    return [tuple(row) for row in found]


# -- one op through each ingest route ----------------------------------------------------------


def _multipart(kind: str, op: dict[str, Any], field: str) -> bytes:
    rid = op["id"]
    main = {k: v for k, v in op.items() if k != field}
    parts = [(f"{kind}.{rid}", orjson.dumps(main), "application/json")]
    if field in op:
        parts.append((f"{kind}.{rid}.{field}", orjson.dumps(op[field]), "application/json"))
    return multipart_body(parts)


POST_ROUTES: dict[str, Send] = {
    "POST /runs": lambda http, run: http.post("/runs", json=run),
    "POST /runs/batch": lambda http, run: http.post("/runs/batch", json={"post": [run]}),
    "POST /runs/multipart": lambda http, run: http.post(
        "/runs/multipart", content=_multipart("post", run, "inputs"), headers=MP_HEADERS
    ),
}
PATCH_ROUTES: dict[str, Send] = {
    "PATCH /runs/{id}": lambda http, op: http.patch(f"/runs/{op['id']}", json=op),
    "POST /runs/batch": lambda http, op: http.post("/runs/batch", json={"patch": [op]}),
    "POST /runs/multipart": lambda http, op: http.post(
        "/runs/multipart", content=_multipart("patch", op, "outputs"), headers=MP_HEADERS
    ),
}


# -- nesting: the limit, exactly, and reading back what was accepted ----------------------------


def nest(levels: int) -> Any:
    """A value made of ``levels`` nested containers, objects and arrays in turn."""
    value: Any = "leaf"
    for i in range(levels):
        value = {"d": value} if i % 2 else [value]
    return value


def field_of_depth(run_depth: int) -> dict[str, Any]:
    """An ``inputs``/``outputs`` object that makes its run ``run_depth`` levels deep (the run
    object is level 1, the field's object level 2)."""
    return {"v": nest(run_depth - 2)}


def test_orjson_writes_what_the_limit_assumes() -> None:
    # MAX_RUN_DEPTH leaves room for the read routes' own wrapping under orjson's write limit.
    orjson.dumps(nest(254))
    with pytest.raises(orjson.JSONEncodeError):
        orjson.dumps(nest(255))
    assert MAX_RUN_DEPTH + 2 <= 254


@pytest.mark.parametrize("route", list(POST_ROUTES))
def test_post_at_the_nesting_limit_reads_back(http: httpx.Client, store: Store, route: str) -> None:
    root = make_run("root")
    assert http.post("/runs", json=wire(root)).status_code == 200
    child = wire(make_run("deep", parent=root, inputs=field_of_depth(MAX_RUN_DEPTH)))
    resp = POST_ROUTES[route](http, child)
    assert resp.status_code == 200, resp.text
    # Every read route wraps the run in levels of its own; each must still answer.
    trace = http.get(f"/api/traces/{root['id']}")
    assert trace.status_code == 200
    [got] = [r for r in orjson.loads(trace.content)["runs"] if r["id"] == child["id"]]
    assert got["inputs"] == child["inputs"]
    run = http.get(f"/api/runs/{child['id']}")
    assert run.status_code == 200
    assert orjson.loads(run.content)["inputs"] == child["inputs"]
    parent = http.get(f"/api/runs/{root['id']}", params={"include_children": "true"})
    assert parent.status_code == 200
    assert orjson.loads(parent.content)["child_runs"][0]["inputs"] == child["inputs"]
    assert http.get("/api/traces").status_code == 200


@pytest.mark.parametrize("route", list(POST_ROUTES))
def test_post_one_level_past_the_limit_is_422_naming_the_field(
    http: httpx.Client, store: Store, route: str
) -> None:
    run = wire(make_run("too-deep", inputs=field_of_depth(MAX_RUN_DEPTH + 1)))
    resp = POST_ROUTES[route](http, run)
    assert resp.status_code == 422, resp.text
    detail = resp.json()["detail"]
    assert ".inputs: nested too deeply" in detail
    assert str(MAX_RUN_DEPTH) in detail
    assert rows(store) == []


@pytest.mark.parametrize("route", list(PATCH_ROUTES))
def test_patch_at_and_past_the_nesting_limit(http: httpx.Client, store: Store, route: str) -> None:
    run = wire(make_run("patched", end_ms=None))
    assert http.post("/runs", json=run).status_code == 200
    before = rows(store)
    patch = {"id": run["id"], "trace_id": run["trace_id"], "end_time": ts(5).isoformat()}
    over = {**patch, "outputs": field_of_depth(MAX_RUN_DEPTH + 1)}
    resp = PATCH_ROUTES[route](http, over)
    assert resp.status_code == 422, resp.text
    assert ".outputs: nested too deeply" in resp.json()["detail"]
    assert rows(store) == before
    at = {**patch, "outputs": field_of_depth(MAX_RUN_DEPTH)}
    assert PATCH_ROUTES[route](http, at).status_code == 200
    trace = http.get(f"/api/traces/{run['id']}")
    assert trace.status_code == 200
    assert orjson.loads(trace.content)["runs"][0]["outputs"] == at["outputs"]


def test_a_body_deeper_than_the_parser_reads_is_422(http: httpx.Client) -> None:
    body = b'{"post": [' + b"[" * 1100 + b"]" * 1100 + b"]}"
    resp = http.post("/runs/batch", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 422
    assert "depth" in resp.json()["detail"]


def test_a_run_stored_before_the_limit_still_reads(http: httpx.Client, store: Store) -> None:
    # A database written by an older collector may hold runs as deep as orjson could store
    # (254 levels); the read routes' wrapping takes them past what orjson writes.
    run = wire(make_run("legacy", inputs=field_of_depth(254)))
    store.ingest([RunOp("post", run["id"], run)])
    for path in (f"/api/traces/{run['id']}", f"/api/runs/{run['id']}"):
        resp = http.get(path)
        assert resp.status_code == 200, path
    assert orjson.loads(resp.content)["inputs"] == run["inputs"]


# -- query parameters ---------------------------------------------------------------------------


OUT_OF_RANGE_TIMES = ["1e300", "1e19", "-1e300", "99999999999999", "nan", "inf", "yesterday"]
# Epoch seconds one past either end of what a datetime holds (years 1 and 9999).
OUT_OF_RANGE_TIMES += ["-62135596801", "253402300800"]
EDGE_TIMES = ["-62135596800", "253402300799", "0", "1740830400.5", "9999-12-31T23:59:59Z"]
BAD_QUERIES = [
    ({"limit": "1e400"}, "limit"),
    ({"limit": "nan"}, "limit"),
    ({"offset": "9e18"}, "offset"),
    ({"min_duration_ms": "-1"}, "min_duration_ms"),
    ({"status": "exploded"}, "status"),
]


def test_bad_query_parameters_are_422_naming_the_parameter(http: httpx.Client) -> None:
    assert http.post("/runs", json=wire(make_run("edge"))).status_code == 200
    for name in ("start_gte", "start_lte"):
        for value in OUT_OF_RANGE_TIMES:
            resp = http.get("/api/traces", params={name: value})
            assert resp.status_code == 422, (name, value, resp.text)
            assert resp.json()["detail"].startswith(f"{name}: "), value
        for value in EDGE_TIMES:
            resp = http.get("/api/traces", params={name: value})
            assert resp.status_code == 200, (name, value, resp.text)
    for params, name in BAD_QUERIES:
        resp = http.get("/api/traces", params=params)
        assert resp.status_code == 422, params
        assert resp.json()["detail"].startswith(f"{name}: "), params


# -- dotted orders ------------------------------------------------------------------------------

RID = "0190f4b2-7a8c-7d3e-8f00-1234567890ab"
TRACE = "0190f4b2-7a8c-7d3e-8f00-aaaaaaaaaaaa"
PARENT = "0190f4b2-7a8c-7d3e-8f00-bbbbbbbbbbbb"
T = "20250301T120000123456Z"


def order_op(order: str, **ids: Any) -> dict[str, Any]:
    return {
        "id": RID,
        "trace_id": TRACE,
        "parent_run_id": PARENT,
        "name": "x",
        "run_type": "chain",
        "start_time": "2025-03-01T12:00:00.123456Z",
        "dotted_order": order,
        **ids,
    }


GOOD_CHAIN = f"{T}{TRACE}.{T}{PARENT}.{T}{RID}"
BAD_ORDERS: list[tuple[str, dict[str, Any], str]] = [
    (
        "garbage timestamp",
        order_op(f"XXXXXXXXTXXXXXXXXXXXXZ{RID}", trace_id=RID, parent_run_id=None),
        "segment 0",
    ),
    (
        "30 February",
        order_op(f"20250230T120000000000Z{RID}", trace_id=RID, parent_run_id=None),
        "segment 0",
    ),
    (
        "hour 24",
        order_op(f"{T}{TRACE}.20250301T240000000000Z{RID}", parent_run_id=TRACE),
        "segment 1",
    ),
    (
        "second 60",
        order_op(f"20250301T120060000000Z{RID}", trace_id=RID, parent_run_id=None),
        "segment 0",
    ),
    (
        "year 0",
        order_op(f"00000101T000000000000Z{RID}", trace_id=RID, parent_run_id=None),
        "segment 0",
    ),
    (
        "month 13",
        order_op(f"20251301T000000000000Z{RID}", trace_id=RID, parent_run_id=None),
        "segment 0",
    ),
    (
        "fullwidth digits",
        order_op(
            "\uff12\uff10\uff12\uff15" + f"0301T120000000000Z{RID}",
            trace_id=RID,
            parent_run_id=None,
        ),
        "segment 0",
    ),
    (
        "arabic-indic digits",
        order_op(
            "\u0662\u0660\u0662\u0665" + f"0301T120000000000Z{RID}",
            trace_id=RID,
            parent_run_id=None,
        ),
        "segment 0",
    ),
    (
        "lower-case t and z",
        order_op(f"20250301t120000000000z{RID}", trace_id=RID, parent_run_id=None),
        "segment 0",
    ),
    (
        "milliseconds only",
        order_op(f"20250301T120000123Z{RID}", trace_id=RID, parent_run_id=None),
        "segment 0",
    ),
    (
        "uuid hyphens misplaced",
        order_op(f"{T}----{RID.replace('-', '')}", trace_id=RID, parent_run_id=None),
        "segment 0",
    ),
    (
        "uuid in braces",
        order_op(f"{T}{{{RID.replace('-', '')}}}xx", trace_id=RID, parent_run_id=None),
        "segment 0",
    ),
    ("empty segment", order_op(f"{T}{TRACE}..{T}{RID}"), "segment 1"),
    ("trailing dot", order_op(f"{GOOD_CHAIN}."), "segment 3"),
    ("empty", order_op(""), "empty"),
    ("ends with another id", order_op(f"{T}{TRACE}.{T}{PARENT}"), "not the run id"),
    (
        "starts with another trace",
        order_op(f"{T}{PARENT}.{T}{RID}", trace_id=TRACE),
        "not the trace_id",
    ),
    (
        "names another parent",
        order_op(f"{T}{TRACE}.{T}{TRACE[:-4]}cccc.{T}{RID}"),
        "not the parent_run_id",
    ),
    ("root with a parent", order_op(f"{T}{RID}", trace_id=RID), "not the parent_run_id"),
    (
        "too many segments",
        order_op(".".join([f"{T}{TRACE}"] * MAX_DOTTED_ORDER_SEGMENTS + [f"{T}{RID}"])),
        f"more than {MAX_DOTTED_ORDER_SEGMENTS} segments",
    ),
]


@pytest.mark.parametrize("route", list(POST_ROUTES))
def test_bad_dotted_orders_are_422_on_every_post_route(
    http: httpx.Client, store: Store, route: str
) -> None:
    for label, op, message in BAD_ORDERS:
        resp = POST_ROUTES[route](http, op)
        assert resp.status_code == 422, (label, resp.text)
        detail = resp.json()["detail"]
        assert ".dotted_order: " in detail, label
        assert message in detail, (label, detail)
    assert rows(store) == []


@pytest.mark.parametrize("route", list(PATCH_ROUTES))
def test_bad_dotted_orders_are_422_on_every_patch_route(
    http: httpx.Client, store: Store, route: str
) -> None:
    for label, op, message in BAD_ORDERS:
        patch = {k: op[k] for k in ("id", "trace_id", "parent_run_id", "dotted_order")}
        patch["end_time"] = "2025-03-01T12:00:01Z"
        resp = PATCH_ROUTES[route](http, patch)
        assert resp.status_code == 422, (label, resp.text)
        assert message in resp.json()["detail"], label
    assert rows(store) == []


def js_sdk_order(epoch_ms: int, run_id: str, execution_order: int) -> str:
    """A segment as the LangSmith JS SDK writes it: millisecond time, then its execution counter
    in the last three microsecond digits."""
    when = datetime.fromtimestamp(epoch_ms / 1000, timezone.utc)
    return when.strftime("%Y%m%dT%H%M%S") + f"{epoch_ms % 1000:03d}{execution_order:03d}Z{run_id}"


def test_a_dotted_order_at_the_segment_limit_is_accepted(http: httpx.Client) -> None:
    middle = [f"{T}{TRACE}"] * (MAX_DOTTED_ORDER_SEGMENTS - 2)
    op = order_op(".".join([*middle, f"{T}{PARENT}", f"{T}{RID}"]))
    resp = http.post("/runs", json=op)
    assert resp.status_code == 200, resp.text
    assert http.get(f"/api/runs/{RID}").json()["dotted_order"] == op["dotted_order"]


def test_what_the_sdks_send_is_accepted_and_completed(http: httpx.Client, store: Store) -> None:
    from langsmith.run_trees import RunTree as SdkRunTree

    sdk_root = SdkRunTree(name="sdk-root", run_type="chain", inputs={})
    sdk_child = sdk_root.create_child(name="sdk-child", run_type="llm", inputs={})
    posts = [
        {k: v for k, v in orjson.loads(orjson.dumps(r._get_dicts_safe())).items() if v is not None}
        for r in (sdk_root, sdk_child)
    ]
    # The JS SDK's counter makes microsecond digits no clock wrote: still a valid time.
    js_root, js_child = str(uuid.uuid4()), str(uuid.uuid4())
    root_order = js_sdk_order(1740830400999, js_root, 999)
    js = [
        {"id": js_root, "trace_id": js_root, "dotted_order": root_order},
        {
            "id": js_child,
            "trace_id": js_root,
            "parent_run_id": js_root,
            "dotted_order": f"{root_order}.{js_sdk_order(1740830400999, js_child, 1)}",
        },
    ]
    for op in js:
        op.update(name="js", run_type="chain", start_time="2025-03-01T12:00:00.999Z")
    # A post may leave its ids to its dotted order; upper-case hex is stored in lower case.
    upper_root = str(uuid.uuid4())
    upper_child = str(uuid.uuid4())
    minimal = {
        "id": upper_child,
        "name": "ids from the order",
        "run_type": "chain",
        "start_time": ts(1).isoformat(),
        "dotted_order": f"{segment(ts(0), upper_root.upper())}.{segment(ts(1), upper_child)}",
    }
    resp = http.post("/runs/batch", json={"post": [*posts, *js, minimal]})
    assert resp.status_code == 200, resp.text
    stored = store.get_run(upper_child)
    assert stored is not None
    assert stored["trace_id"] == upper_root
    assert stored["parent_run_id"] == upper_root
    assert stored["dotted_order"] == f"{segment(ts(0), upper_root)}.{segment(ts(1), upper_child)}"
    child = store.get_run(str(sdk_child.id))
    assert child is not None
    assert child["parent_run_id"] == str(sdk_root.id)
    assert store.get_run(js_child) is not None

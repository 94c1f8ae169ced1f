"""Every time shape the SDKs send, on every ingest route, stored exactly (to the microsecond);
anything else refused with a 422 naming the field."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import httpx
import orjson
import pytest
from collector_helpers import API_KEY, MP_HEADERS, ServerThread, make_run, multipart_body, wire

from tracestitch.collector import Store
from tracestitch.collector.ingest import format_time_us, parse_time_us

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# (what is sent, the instant it means in epoch microseconds)
SHAPES = [
    ("2026-12-01T21:53:33.998001Z", 1796162013998001),
    ("2026-12-01T21:53:33.998001+00:00", 1796162013998001),
    ("2026-12-01T23:53:33.998001+02:00", 1796162013998001),
    ("2026-12-01T16:23:33.998001-0530", 1796162013998001),
    ("2026-12-01T21:53:33.998001", 1796162013998001),  # no zone: UTC
    ("2026-12-01 21:53:33.998001123Z", 1796162013998001),  # nanoseconds: kept to the µs
    ("2026-12-01T21:53:33Z", 1796162013000000),
    (1796162014100, 1796162014100000),  # the JS SDK's Date.now()
    (1796162014100.25, 1796162014100250),
    (1796162014100.001, 1796162014100001),
]


@pytest.fixture
def http(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"x-api-key": API_KEY}) as client:
        yield client


@pytest.mark.parametrize(("sent", "micros"), SHAPES, ids=[str(s) for s, _ in SHAPES])
def test_parse_time_us_is_exact(sent: object, micros: int) -> None:
    assert parse_time_us(sent) == micros


def test_format_round_trips() -> None:
    for micros in (0, 1796162014100250, -62_135_596_800_000_000, 253_402_300_799_999_999):
        text = format_time_us(micros)
        assert parse_time_us(text) == micros
        assert datetime.fromisoformat(text.replace("Z", "+00:00")) == EPOCH + timedelta(
            microseconds=micros
        )


def _columns(store: Store, run_id: str) -> tuple[int | None, int | None]:
    run = store.get_run(run_id)
    assert run is not None
    with store._read() as conn:
        row = conn.execute("SELECT start_us, end_us FROM runs WHERE id = ?", (run_id,)).fetchone()
    return row["start_us"], row["end_us"]


@pytest.mark.parametrize("route", ["runs", "batch", "multipart", "patch"])
def test_every_route_takes_every_shape(http: httpx.Client, store: Store, route: str) -> None:
    for sent, micros in SHAPES:
        _check_shape(http, store, route, sent, micros)


def _check_shape(http: httpx.Client, store: Store, route: str, sent: object, micros: int) -> None:
    run = wire(make_run("timed"))
    rid = run["id"]
    event = {"name": "new_token", "time": sent, "kwargs": {"token": "a"}}
    if route == "patch":
        post = {**run, "end_time": None, "outputs": None}
        assert http.post("/runs", json=post).status_code == 200
        patch = {"id": rid, "trace_id": rid, "end_time": sent, "events": [event]}
        resp = http.patch(f"/runs/{rid}", json=patch)
    else:
        run.update(start_time=sent, end_time=sent, events=[event])
        if route == "runs":
            resp = http.post("/runs", json=run)
        elif route == "batch":
            resp = http.post("/runs/batch", json={"post": [run]})
        else:
            body = multipart_body([(f"post.{rid}", orjson.dumps(run), "application/json")])
            resp = http.post("/runs/multipart", content=body, headers=MP_HEADERS)
    assert resp.status_code == 200, (sent, resp.text)
    start_us, end_us = _columns(store, rid)
    assert end_us == micros, sent
    if route != "patch":
        assert start_us == micros
    stored = store.get_run(rid)
    assert stored is not None
    # Strings are kept as sent; numbers become ISO-8601, so every time reads back as text.
    expected = sent if isinstance(sent, str) else format_time_us(micros)
    assert stored["end_time"] == expected
    assert stored["events"][0]["time"] == expected
    # The served run (and its first-token time, read off the event) agree.
    view = http.get(f"/api/runs/{rid}").json()
    assert view["end_us"] == micros


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("start_time", "yesterday", "not an ISO-8601 time"),
        ("end_time", True, "got bool"),
        ("end_time", {"ms": 1}, "got dict"),
        ("end_time", 1e20, "outside the years 1 to 9999"),
        ("start_time", "2026-02-30T00:00:00Z", "day is out of range"),
        ("start_time", "2026-12-01T10:00:00+24:00", "impossible UTC offset"),
        ("events", [{"name": "x", "time": "soon"}], "events[0].time"),
    ],
)
def test_bad_times_are_refused_naming_the_field(
    http: httpx.Client, store: Store, field: str, value: object, problem: str
) -> None:
    run = {**wire(make_run("bad")), field: value}
    resp = http.post("/runs/batch", json={"post": [run]})
    assert resp.status_code == 422
    detail = resp.json()["detail"]
    assert problem in detail and field in detail
    assert store.count_runs() == 0


def test_a_js_sdk_batch_is_stored_whole(http: httpx.Client, store: Store) -> None:
    """The reported failure: one JS-shaped run (ISO start, epoch-ms end) used to cost the batch."""
    runs = []
    for i in range(3):
        rid = str(uuid.uuid4())
        runs.append(
            {
                **wire(make_run(f"js-{i}", run_id=rid)),
                "start_time": "2026-12-01T21:53:33.998001Z",
                "end_time": 1796162014100 + i,
            }
        )
    assert http.post("/runs/batch", json={"post": runs}).status_code == 200
    assert store.count_runs() == 3

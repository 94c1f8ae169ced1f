"""``GET /api/services``: per service and route, requests, errors, rate and p50/p95 latency over
a time range, and the service map's edges, from runs that cross services."""

from __future__ import annotations

import httpx
import pytest
from collector_helpers import BASE, ServerThread, make_run, wire

from tracestitch.collector.rollups import RELATIVE_ERROR


def _request(i: int, *, error: bool = False, open_: bool = False) -> list[dict[str, object]]:
    # api handles GET /items/{id} in i ms and calls the store service through a client run.
    start = i * 1000
    root = make_run(
        "GET /items/{id}",
        start_ms=start,
        end_ms=None if open_ else start + i,
        service="api",
        error="HTTP 500" if error else None,
    )
    call = make_run(
        "POST store:9000/q", parent=root, start_ms=start, end_ms=start + i / 2, service="api"
    )
    served = make_run("POST /q", parent=call, start_ms=start, end_ms=start + i / 2, service="store")
    helper = make_run("parse", parent=served, start_ms=start, end_ms=start + 0.1, service="store")
    return [root, call, served, helper]


def test_routes_latency_percentiles_and_the_map(open_server: ServerThread) -> None:
    runs = [run for i in range(1, 21) for run in _request(i, error=i in (3, 7))]
    runs += _request(21, open_=True)  # still running: counted, not in the percentiles
    resp = httpx.post(open_server.url + "/runs/batch", json={"post": [wire(r) for r in runs]})
    assert resp.status_code == 200, resp.text

    doc = httpx.get(open_server.url + "/api/services").json()
    routes = {(r["service"], r["route"]): r for r in doc["routes"]}
    assert set(routes) == {("api", "GET /items/{id}"), ("store", "POST /q")}
    api = routes[("api", "GET /items/{id}")]
    assert (api["requests"], api["errors"], api["pending"]) == (21, 2, 1)
    assert api["error_rate"] == pytest.approx(2 / 21)
    # Nearest rank over the 20 ended requests of 1..20 ms; with no range, every hour is read
    # from the rollup, whose percentiles are within RELATIVE_ERROR of the exact ones.
    assert api["p50_ms"] == pytest.approx(10.0, rel=RELATIVE_ERROR)
    assert api["p95_ms"] == pytest.approx(19.0, rel=RELATIVE_ERROR)
    assert api["rate_per_s"] is None  # no range, no rate
    store = routes[("store", "POST /q")]
    assert store["requests"] == 21
    assert store["p50_ms"] == pytest.approx(5.5, rel=RELATIVE_ERROR)
    assert store["p95_ms"] == pytest.approx(10.0, rel=RELATIVE_ERROR)
    # The client run stays in api and "parse" stays in store: neither is a request.
    assert doc["edges"] == [{"caller": "api", "callee": "store", "calls": 21, "errors": 0}]

    # A range: the traces started from 11 s to 20.5 s; the rate is over those 9.5 seconds.
    since = BASE.timestamp() + 11
    until = BASE.timestamp() + 20.5
    ranged = httpx.get(
        open_server.url + f"/api/services?start_gte={since}&start_lte={until}"
    ).json()
    api = next(r for r in ranged["routes"] if r["service"] == "api")
    assert api["requests"] == 10  # 11 s to 20 s; the 21st starts at 21 s, past start_lte
    assert api["rate_per_s"] == pytest.approx(10 / 9.5)
    assert (api["p50_ms"], api["p95_ms"]) == (15.0, 20.0)  # within one hour: exact

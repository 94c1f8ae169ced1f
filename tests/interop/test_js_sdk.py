"""The LangSmith JS SDK (npm ``langsmith``, pinned in peers.json) under node, against the real
``tracestitch serve``: every run it sends is stored, times exact; and a JS-SDK service and a
tracestitch service carry one trace, and each other's metadata and tags, both ways."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from interop_helpers import API_KEY, Collector, service_process
from node_peer import SCRIPTS, node_env
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import tracestitch
from servers import run_uvicorn
from tracestitch.clients.httpx import AsyncTracingTransport
from tracestitch.collector.ingest import parse_time_us
from tracestitch.middleware.asgi import TracingMiddleware

JS_RUNS = {"js-outer", "js-inner", "js-error", "js-manual", "js-manual-child"}


def _bad_requests(collector: Collector) -> dict[str, int]:
    return {k: n for k, n in collector.requests().items() if not k.endswith(" 200")}


def test_js_sdk_runs_are_all_stored_with_exact_times(js_sdk: Path, collector: Collector) -> None:
    env = node_env(
        js_sdk,
        LANGSMITH_TRACING="true",
        LANGSMITH_ENDPOINT=collector.url,
        LANGSMITH_API_KEY=API_KEY,
        JS_PROJECT="js-peer",
    )
    done = subprocess.run(
        ["node", str(SCRIPTS / "sdk_runs.js")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    # The SDK logs a refused batch ("Failed to send multipart request") and carries on.
    assert "Failed" not in done.stderr, done.stderr
    made = json.loads(done.stdout.strip().splitlines()[-1])
    assert made["result"] == 41 and made["caught"] == "js boom"

    runs = collector.wait_for(JS_RUNS)
    assert set(runs) >= JS_RUNS, f"stored only {sorted(runs)}"
    assert _bad_requests(collector) == {}
    outer, inner, failing = runs["js-outer"], runs["js-inner"], runs["js-error"]
    manual, child = runs["js-manual"], runs["js-manual-child"]
    assert inner["parent_run_id"] == outer["id"] and inner["trace_id"] == outer["id"]
    assert outer["parent_run_id"] is None and outer["extra"]["metadata"]["lang"] == "js"
    assert outer["tags"] == ["js"] and inner["run_type"] == "tool"
    assert failing["status"] == "error" and "js boom" in failing["error"]
    assert manual["id"] == made["root"]["id"] and child["id"] == made["child"]["id"]
    assert child["parent_run_id"] == manual["id"] and child["trace_id"] == made["root"]["trace_id"]
    assert child["dotted_order"] == made["child"]["dotted_order"]
    assert {r["project"] for r in runs.values() if r["name"] in JS_RUNS} == {"js-peer"}
    # end_time went out as epoch milliseconds (a float here): stored to the microsecond, and
    # served back as ISO-8601 like every other time.
    end_ms = Decimal(repr(made["child"]["end_time"]))
    assert child["end_us"] == int(end_ms * 1000)
    assert child["end_us"] % 1000 == 250
    assert child["end_time"].endswith("Z") and parse_time_us(child["end_time"]) == child["end_us"]
    for run in runs.values():
        # start_time came as ISO with microseconds (the JS SDK's execution counter in the last
        # three digits): kept exactly as sent.
        assert parse_time_us(run["start_time"]) == run["start_us"]
        # end_time came as whole milliseconds, while the start's last three digits are a
        # counter, not time: the end may read up to 1 ms before the start.
        assert run["end_us"] > run["start_us"] - 1000
    # The llm run's usage reached the store.
    view = collector.get(f"/api/runs/{child['id']}")
    assert view["total_tokens"] == 7


def _tracestitch_service() -> Starlette:
    async def start(request: Request) -> JSONResponse:
        # Metadata and tags this service sets travel in the baggage of its outgoing call.
        with tracestitch.tracing_context(metadata={"tenant": "acme corp"}, tags=["from-py"]):
            async with httpx.AsyncClient(transport=AsyncTracingTransport()) as client:
                response = await client.get(request.query_params["js"] + "/work")
        return JSONResponse(response.json())

    async def echo(request: Request) -> JSONResponse:
        return JSONResponse({"trace": request.headers.get("langsmith-trace")})

    return Starlette(
        routes=[Route("/start", start), Route("/echo", echo)],
        middleware=[Middleware(TracingMiddleware, service="py-svc", project_name="interop")],
    )


@contextmanager
def _node_service(js_sdk: Path, collector: Collector, downstream: str) -> Iterator[str]:
    env = node_env(
        js_sdk,
        LANGSMITH_TRACING="true",
        LANGSMITH_ENDPOINT=collector.url,
        LANGSMITH_API_KEY=API_KEY,
        DOWNSTREAM_URL=downstream,
    )
    with service_process(["node", str(SCRIPTS / "service.js")], env) as url:
        yield url


def _children(runs: list[dict[str, Any]], parent: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in runs if r["parent_run_id"] == parent["id"]]


def test_baggage_both_ways_between_js_and_tracestitch_services(
    js_sdk: Path, collector: Collector
) -> None:
    exporter = tracestitch.configure(
        endpoint=collector.url,
        api_key=API_KEY,
        spool_dir=None,
        flush_interval=0.05,
    )
    try:
        with (
            run_uvicorn(_tracestitch_service()) as py_url,
            _node_service(js_sdk, collector, py_url + "/echo") as js_url,
        ):
            reply = httpx.get(f"{py_url}/start", params={"js": js_url}, timeout=30)
            assert reply.status_code == 200, reply.text
            httpx.get(js_url + "/flush", timeout=30).raise_for_status()
        assert exporter.flush(10)
    finally:
        exporter.shutdown(5)
    seen = reply.json()
    # tracestitch -> JS: the JS SDK read the tracestitch service's metadata, tags and project.
    assert seen["parent"]["metadata"]["tenant"] == "acme corp"
    assert "from-py" in seen["parent"]["tags"]
    assert seen["parent"]["project"] == "interop"

    by_name = collector.wait_for({"GET /start", "js-handler", "GET /echo"})
    runs = collector.runs()
    start, handler, echo = by_name["GET /start"], by_name["js-handler"], by_name["GET /echo"]
    # One trace, parent links right: tracestitch server run -> its httpx client run -> the JS
    # SDK's handler run -> the tracestitch server run the JS service called.
    assert {r["trace_id"] for r in runs} == {start["id"]}
    (client_run,) = _children(runs, start)
    assert handler["parent_run_id"] == client_run["id"] == seen["parent"]["id"]
    assert echo["parent_run_id"] == handler["id"]
    assert echo["dotted_order"].startswith(handler["dotted_order"] + ".")
    # Metadata set in tracestitch arrives on the JS runs; the JS service's own metadata and
    # tags arrive, through its toHeaders(), on the tracestitch service's run.
    assert handler["extra"]["metadata"]["tenant"] == "acme corp"
    assert handler["project"] == "interop"
    assert echo["extra"]["metadata"]["tenant"] == "acme corp"
    assert echo["extra"]["metadata"]["js_key"] == "from js"
    assert "from-js" in (echo["tags"] or [])
    assert echo["service"] == "py-svc"
    assert _bad_requests(collector) == {}

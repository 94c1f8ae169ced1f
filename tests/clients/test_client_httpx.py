"""httpx: TracingTransport / AsyncTracingTransport / event_hooks against a loopback server."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
import pytest
from client_helpers import (
    PUBLIC_HOST,
    AsyncRewritingTransport,
    RewritingTransport,
    loopback_port,
    trace_headers,
)

from tracestitch import RunTree, trace, tracing_context
from tracestitch._guard import internal_errors, set_strict
from tracestitch.clients.httpx import AsyncTracingTransport, TracingTransport, event_hooks
from tracestitch.exporter import set_exporter
from tracestitch.testing import capture_runs


def _client(**options: Any) -> httpx.Client:
    return httpx.Client(transport=TracingTransport(**options))


def test_call_inside_a_run_is_a_child_and_carries_its_headers(echo_url: str) -> None:
    with capture_runs() as runs, _client() as client, trace("handler") as parent:
        assert parent is not None
        response = client.get(f"{echo_url}/items/42?q=1", headers={"baggage": "vendor=x"})
    received = trace_headers(response.json())
    call = runs.one(f"GET 127.0.0.1:{loopback_port(echo_url)}/items/{{id}}")
    handler = runs.one("handler")
    assert call.parent_run_id == handler.id
    assert call.trace_id == handler.trace_id
    assert call.run_type == "tool"
    # The downstream's parent is the client run, not the handler.
    assert received["langsmith-trace"] == call.dotted_order
    assert received["traceparent"].split("-")[1] == call.trace_id.hex
    assert "vendor=x" in received["baggage"]
    assert call.inputs == {"method": "GET", "url": f"{echo_url}/items/42?q=1"}
    assert call.outputs is not None
    assert call.outputs["status_code"] == 200
    assert call.outputs["response_size"] == len(response.content)
    assert call.error is None


async def test_async_transport(echo_url: str) -> None:
    async with httpx.AsyncClient(transport=AsyncTracingTransport()) as client:
        with capture_runs() as runs, trace("handler"):
            response = await client.post(f"{echo_url}/status/503", json={"a": 1})
    call = runs.one(f"POST 127.0.0.1:{loopback_port(echo_url)}/status/{{id}}")
    assert response.status_code == 503
    assert call.error == "HTTP 503"
    assert call.outputs == {"status_code": 503, "response_size": len(response.content)}
    assert trace_headers(response.json())["langsmith-trace"] == call.dotted_order


def test_outside_any_run_no_headers_and_no_runs(echo_url: str) -> None:
    with capture_runs() as runs, _client() as client:
        response = client.get(f"{echo_url}/x")
    assert trace_headers(response.json()) == {}
    assert len(runs) == 0


def test_start_root_outside_any_run(echo_url: str) -> None:
    with capture_runs() as runs, _client(start_root=True) as client:
        response = client.get(f"{echo_url}/x")
    (root,) = runs.traced_runs
    assert root.parent_run_id is None
    assert trace_headers(response.json())["langsmith-trace"] == root.dotted_order


def test_inject_only(echo_url: str) -> None:
    with capture_runs() as runs, _client(create_runs=False) as client, trace("h") as parent:
        assert parent is not None
        response = client.get(f"{echo_url}/x")
        order = parent.dotted_order
    assert trace_headers(response.json())["langsmith-trace"] == order
    assert [r.name for r in runs] == ["h"]


def test_tracing_disabled_means_nothing(echo_url: str) -> None:
    root = RunTree("handler")
    with (
        capture_runs() as runs,
        _client() as client,
        tracing_context(parent=root, enabled=False),
    ):
        response = client.get(f"{echo_url}/x")
    assert trace_headers(response.json()) == {}
    assert len(runs) == 0


def test_url_redaction(echo_url: str) -> None:
    port = loopback_port(echo_url)
    with capture_runs() as runs, _client() as client, trace("h"):
        client.get(f"http://user:hunter2@127.0.0.1:{port}/a?api_key=sk-1&q=ok")
    call = runs.one(f"GET 127.0.0.1:{port}/a")
    assert call.inputs["url"] == f"http://127.0.0.1:{port}/a?api_key=[REDACTED]&q=ok"
    assert "hunter2" not in str(call.model_dump())


def test_record_query_off(echo_url: str) -> None:
    with capture_runs() as runs, _client(record_query=False) as client, trace("h"):
        client.get(f"{echo_url}/a?q=secretish")
    assert runs.named("h")[0].id == runs.traced_runs[-1].id
    (call,) = [r for r in runs if r.name != "h"]
    assert call.inputs["url"] == f"{echo_url}/a"


def test_exception_is_reraised_unchanged() -> None:
    boom = httpx.ConnectError("refused")

    def handler(request: httpx.Request) -> httpx.Response:
        raise boom

    client = httpx.Client(transport=TracingTransport(httpx.MockTransport(handler)))
    with capture_runs() as runs, trace("h"), pytest.raises(httpx.ConnectError) as info:
        client.get("http://service-b/items/1")
    assert info.value is boom
    call = runs.one("GET service-b/items/{id}")
    assert call.error is not None
    assert call.error.startswith("ConnectError: refused")


def test_public_host_gets_no_headers_but_is_recorded(echo_url: str) -> None:
    port = loopback_port(echo_url)
    transport = TracingTransport(RewritingTransport(port))
    with capture_runs() as runs, httpx.Client(transport=transport) as client, trace("h"):
        response = client.get(f"http://{PUBLIC_HOST}:{port}/v1/chat", headers={"baggage": "v=1"})
    assert trace_headers(response.json()) == {"baggage": "v=1"}
    call = runs.one(f"GET {PUBLIC_HOST}:{port}/v1/chat")
    assert call.outputs is not None
    assert call.outputs["status_code"] == 200


def test_redirect_to_public_host_loses_headers(echo_url: str) -> None:
    port = loopback_port(echo_url)
    target = quote(f"http://{PUBLIC_HOST}:{port}/landing", safe="")
    transport = TracingTransport(RewritingTransport(port))
    with (
        httpx.Client(transport=transport, follow_redirects=True) as client,
        capture_runs() as runs,
        trace("h"),
    ):
        response = client.get(f"{echo_url}/redirect?to={target}")
    assert response.json()["path"] == "/landing"
    assert trace_headers(response.json()) == {}
    first = runs.one(f"GET 127.0.0.1:{port}/redirect")
    second = runs.one(f"GET {PUBLIC_HOST}:{port}/landing")
    assert first.outputs is not None
    assert first.outputs["status_code"] == 302
    assert first.parent_run_id == second.parent_run_id == runs.one("h").id


def test_redirect_between_internal_hosts_reinjects_per_hop(echo_url: str) -> None:
    target = quote(f"{echo_url}/landing", safe="")
    with _client() as client, capture_runs() as runs, trace("h"):
        response = client.get(f"{echo_url}/redirect?to={target}", follow_redirects=True)
    hop2 = runs.one(f"GET 127.0.0.1:{loopback_port(echo_url)}/landing")
    assert trace_headers(response.json())["langsmith-trace"] == hop2.dotted_order


async def test_async_redirect_to_public_host_loses_headers(echo_url: str) -> None:
    port = loopback_port(echo_url)
    target = quote(f"http://{PUBLIC_HOST}:{port}/landing", safe="")
    transport = AsyncTracingTransport(AsyncRewritingTransport(port))
    async with httpx.AsyncClient(transport=transport, follow_redirects=True) as client:
        with trace("h"):
            response = await client.get(f"{echo_url}/redirect?to={target}")
    assert trace_headers(response.json()) == {}


def test_event_hooks_inject_only(echo_url: str) -> None:
    with capture_runs() as runs, httpx.Client(event_hooks=event_hooks()) as client:
        with trace("h") as parent:
            assert parent is not None
            response = client.get(f"{echo_url}/x")
            order = parent.dotted_order
        public = client.get(
            f"{echo_url}/x", headers={"host": PUBLIC_HOST}
        )  # the policy reads the URL, not a Host header
    assert trace_headers(response.json())["langsmith-trace"] == order
    assert trace_headers(public.json()) == {}  # outside the run
    assert [r.name for r in runs] == ["h"]
    with pytest.raises(TypeError):
        event_hooks(create_runs=True)


async def test_async_event_hooks(echo_url: str) -> None:
    async with httpx.AsyncClient(event_hooks=event_hooks(asynchronous=True)) as client:
        with trace("h") as parent:
            assert parent is not None
            response = await client.get(f"{echo_url}/x")
            order = parent.dotted_order
    assert trace_headers(response.json())["langsmith-trace"] == order


def test_a_bug_in_the_hook_never_breaks_the_call(echo_url: str) -> None:
    def bad_name(*args: Any) -> str:
        raise RuntimeError("bug")

    with _client(run_name=bad_name) as client, trace("h"):
        with pytest.raises(RuntimeError, match="bug"):  # strict under tests: the bug shows
            client.get(f"{echo_url}/x")
        before = internal_errors().get("clients.begin", 0)
        previous = set_strict(False)
        try:
            response = client.get(f"{echo_url}/x")
        finally:
            set_strict(previous)
    assert response.status_code == 200
    assert trace_headers(response.json()) == {}  # went out as if untraced
    assert internal_errors()["clients.begin"] == before + 1


def test_a_failing_exporter_never_breaks_the_call(echo_url: str) -> None:
    class Full:
        def submit(self, op: str, run: RunTree) -> None:
            raise OverflowError("queue full")

        def flush(self, timeout: float | None = None) -> bool:
            return True

        def shutdown(self, timeout: float | None = None) -> bool:
            return True

    set_exporter(Full())  # conftest restores the previous exporter
    previous = set_strict(False)
    try:
        with _client() as client, trace("h"):
            response = client.get(f"{echo_url}/x")
    finally:
        set_strict(previous)
    assert response.status_code == 200
    assert "langsmith-trace" in trace_headers(response.json())


def test_a_client_run_records_the_callee_address() -> None:
    """Not the caller's own ``server.address``, which its request run would pass down."""
    import httpx

    from tracestitch import trace, tracing_context
    from tracestitch.clients.httpx import TracingTransport
    from tracestitch.testing import capture_runs

    client = httpx.Client(
        transport=TracingTransport(httpx.MockTransport(lambda r: httpx.Response(204)))
    )
    caller = tracing_context(metadata={"server.address": "127.0.0.1:9000"})
    with capture_runs() as runs, caller, trace("handler"):
        client.get("http://inventory.internal:8001/stock/42")
    call = runs.one("GET inventory.internal:8001/stock/{id}")
    assert call.extra["metadata"]["server.address"] == "inventory.internal:8001"
    assert runs.one("handler").extra["metadata"]["server.address"] == "127.0.0.1:9000"

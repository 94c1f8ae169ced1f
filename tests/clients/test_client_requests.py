"""requests: TracingAdapter / instrument_session against a loopback server."""

from __future__ import annotations

from urllib.parse import quote

import pytest
import requests
from client_helpers import PUBLIC_HOST, RewritingAdapter, loopback_port, trace_headers
from requests.adapters import HTTPAdapter

from tracestitch import trace
from tracestitch.clients.requests import TracingAdapter, instrument_session
from tracestitch.testing import capture_runs


def test_adapter_inside_a_run(echo_url: str) -> None:
    session = requests.Session()
    session.mount("http://", TracingAdapter(pool_maxsize=4))
    with capture_runs() as runs, trace("handler"):
        response = session.get(f"{echo_url}/items/9", headers={"baggage": "vendor=x"})
    call = runs.one(f"GET 127.0.0.1:{loopback_port(echo_url)}/items/{{id}}")
    assert call.parent_run_id == runs.one("handler").id
    received = trace_headers(response.json())
    assert received["langsmith-trace"] == call.dotted_order
    assert "vendor=x" in received["baggage"]
    assert call.outputs == {"status_code": 200, "response_size": len(response.content)}


def test_instrument_session_keeps_adapter_config(echo_url: str) -> None:
    session = requests.Session()
    session.mount("http://", HTTPAdapter(max_retries=2))
    instrument_session(session, propagate_to="all")
    adapter = session.get_adapter("http://x")
    assert isinstance(adapter, TracingAdapter)
    assert adapter._wrapped is not None
    assert adapter._wrapped.max_retries.total == 2  # type: ignore[attr-defined]
    instrument_session(session)  # idempotent: no double wrapping
    assert session.get_adapter("http://x") is adapter
    with capture_runs() as runs, trace("h"):
        response = session.get(f"{echo_url}/status/500")
    assert runs.one(f"GET 127.0.0.1:{loopback_port(echo_url)}/status/{{id}}").error == "HTTP 500"
    assert "langsmith-trace" in trace_headers(response.json())


def test_outside_any_run(echo_url: str) -> None:
    session = instrument_session(requests.Session())
    with capture_runs() as runs:
        response = session.get(f"{echo_url}/x")
    assert trace_headers(response.json()) == {}
    assert len(runs) == 0


def test_exception_reraised_unchanged() -> None:
    boom = requests.ConnectionError("nope")

    class Failing(HTTPAdapter):
        def send(self, *args: object, **kwargs: object) -> requests.Response:
            raise boom

    session = requests.Session()
    session.mount("http://", TracingAdapter(wrapped=Failing()))
    with capture_runs() as runs, trace("h"), pytest.raises(requests.ConnectionError) as info:
        session.get("http://service-b/items/3")
    assert info.value is boom
    assert (runs.one("GET service-b/items/{id}").error or "").startswith("ConnectionError")


def test_public_host_and_redirect_to_it(echo_url: str) -> None:
    port = loopback_port(echo_url)
    session = requests.Session()
    session.mount("http://", TracingAdapter(wrapped=RewritingAdapter(port)))
    with capture_runs() as runs, trace("h"):
        direct = session.get(f"http://{PUBLIC_HOST}:{port}/v1/chat")
        target = quote(f"http://{PUBLIC_HOST}:{port}/landing", safe="")
        redirected = session.get(f"{echo_url}/redirect?to={target}")
    assert trace_headers(direct.json()) == {}
    assert redirected.json()["path"] == "/landing"
    assert trace_headers(redirected.json()) == {}
    hop1 = runs.one(f"GET 127.0.0.1:{port}/redirect")
    hop2 = runs.one(f"GET {PUBLIC_HOST}:{port}/landing")
    assert hop1.outputs is not None
    assert hop1.outputs["status_code"] == 302
    assert hop1.parent_run_id == hop2.parent_run_id


def test_redirect_between_internal_hosts_reinjects(echo_url: str) -> None:
    port = loopback_port(echo_url)
    session = instrument_session(requests.Session())
    target = quote(f"http://localhost:{port}/landing", safe="")
    with capture_runs() as runs, trace("h"):
        response = session.get(f"{echo_url}/redirect?to={target}")
    hop2 = runs.one(f"GET localhost:{port}/landing")
    assert trace_headers(response.json())["langsmith-trace"] == hop2.dotted_order

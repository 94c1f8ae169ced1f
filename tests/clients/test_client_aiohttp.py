"""aiohttp: trace_config() against a loopback server."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from client_helpers import PUBLIC_HOST, loopback_connector, loopback_port, trace_headers

from tracestitch import trace
from tracestitch.clients.aiohttp import trace_config
from tracestitch.testing import capture_runs


def _session(**options: Any) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        trace_configs=[trace_config(**options)], connector=loopback_connector()
    )


async def test_call_inside_a_run(echo_url: str) -> None:
    port = loopback_port(echo_url)
    async with _session() as session:
        with capture_runs() as runs, trace("handler"):
            async with session.get(
                f"{echo_url}/items/7?token=abc", headers={"baggage": "vendor=x"}
            ) as response:
                body = await response.json()
    call = runs.one(f"GET 127.0.0.1:{port}/items/{{id}}")
    assert call.parent_run_id == runs.one("handler").id
    received = trace_headers(body)
    assert received["langsmith-trace"] == call.dotted_order
    assert "vendor=x" in received["baggage"]
    assert call.inputs == {"method": "GET", "url": f"{echo_url}/items/7?token=[REDACTED]"}
    assert call.outputs == {"status_code": 200, "response_size": response.content_length}


async def test_5xx_and_outside_runs(echo_url: str) -> None:
    async with _session() as session:
        with capture_runs() as runs:
            async with session.get(f"{echo_url}/status/500") as response:
                assert trace_headers(await response.json()) == {}
            assert len(runs) == 0
            with trace("h"):
                async with session.get(f"{echo_url}/status/502") as response:
                    await response.read()
    call = runs.one(f"GET 127.0.0.1:{loopback_port(echo_url)}/status/{{id}}")
    assert call.error == "HTTP 502"


async def test_connection_error_is_reraised_and_recorded(echo_url: str) -> None:
    # A port nobody listens on: bind-and-close gives one that was free a moment ago.
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with aiohttp.ClientSession(trace_configs=[trace_config()]) as session:
        with (
            capture_runs() as runs,
            trace("h"),
            pytest.raises(aiohttp.ClientConnectionError),
        ):
            await session.get(f"http://127.0.0.1:{port}/x")
    call = runs.one(f"GET 127.0.0.1:{port}/x")
    assert call.error is not None
    assert "ClientConnectorError" in call.error


async def test_bad_url_fails_as_aiohttp_fails(echo_url: str) -> None:
    async with _session() as session:
        with trace("h"), pytest.raises(aiohttp.InvalidURL):
            await session.get("http:///no-host")


async def test_public_host_and_redirect_to_it(echo_url: str) -> None:
    port = loopback_port(echo_url)
    async with _session() as session:
        with capture_runs() as runs, trace("h"):
            async with session.get(f"http://{PUBLIC_HOST}:{port}/v1/chat") as direct:
                direct_body = await direct.json()
            target = quote(f"http://{PUBLIC_HOST}:{port}/landing", safe="")
            async with session.get(f"{echo_url}/redirect?to={target}") as redirected:
                redirected_body = await redirected.json()
    assert trace_headers(direct_body) == {}
    assert redirected_body["path"] == "/landing"
    assert trace_headers(redirected_body) == {}
    hop1 = runs.one(f"GET 127.0.0.1:{port}/redirect")
    assert hop1.outputs is not None
    assert hop1.outputs["status_code"] == 302
    assert len(runs.named(f"GET {PUBLIC_HOST}:{port}/landing")) == 1
    assert len(runs.named(f"GET {PUBLIC_HOST}:{port}/v1/chat")) == 1


async def test_redirect_between_internal_hosts_reinjects(echo_url: str) -> None:
    port = loopback_port(echo_url)
    target = quote(f"http://localhost:{port}/landing", safe="")
    async with _session() as session:
        with capture_runs() as runs, trace("h"):
            async with session.post(f"{echo_url}/redirect?to={target}", data=b"x") as response:
                body = await response.json()
    hop2 = runs.one(f"GET localhost:{port}/landing")  # 302 after POST: aiohttp switches to GET
    assert trace_headers(body)["langsmith-trace"] == hop2.dotted_order
    hop1 = runs.one(f"POST 127.0.0.1:{port}/redirect")
    assert hop1.dotted_order < hop2.dotted_order


async def test_redirect_without_location_ends_with_that_response(echo_url: str) -> None:
    from aiohttp import web

    from servers import run_aiohttp

    async def no_location(request: web.Request) -> web.Response:
        return web.Response(status=302)

    app = web.Application()
    app.router.add_get("/", no_location)
    with run_aiohttp(app) as url:
        async with _session() as session:
            with capture_runs() as runs, trace("h"):
                async with session.get(url) as response:
                    assert response.status == 302
    call = runs.one(f"GET 127.0.0.1:{loopback_port(url)}/")
    assert call.outputs is not None
    assert call.outputs["status_code"] == 302


async def test_inject_only(echo_url: str) -> None:
    async with _session(create_runs=False) as session:
        with capture_runs() as runs, trace("h") as parent:
            assert parent is not None
            async with session.get(f"{echo_url}/x") as response:
                body = await response.json()
    assert trace_headers(body)["langsmith-trace"] == parent.dotted_order
    assert [r.name for r in runs] == ["h"]

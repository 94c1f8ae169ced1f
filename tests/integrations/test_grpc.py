"""gRPC interceptors against real servers on 127.0.0.1 (ephemeral ports), ``grpc`` and
``grpc.aio``, the four call shapes; the status a call ends with; hostile metadata; internal
errors kept away from the RPC."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from grpc_shop import SERVICE, aio_handlers, sync_handlers
from integration_helpers import Collector, Service, one_tree, service, traced_env

import tracestitch.integrations._grpc_common as grpc_common
from run_waits import runs_until
from tracestitch import trace
from tracestitch._guard import internal_errors, set_strict
from tracestitch.export.memory import RunCollector
from tracestitch.integrations.grpc import (
    aio_client_interceptors,
    aio_server_interceptor,
    client_interceptor,
    server_interceptor,
)
from tracestitch.propagation import stats
from tracestitch.schemas import Run
from tracestitch.testing import capture_runs

WAIT = 15.0

# Within gRPC's own 8 KiB metadata limit (past it the server refuses the call before any
# interceptor runs, traced or not).
HOSTILE = (
    ("langsmith-trace", "20261202T000000000000Z" + "x" * 3000),
    ("baggage", "langsmith-metadata=%7Bnot json,langsmith-project=" + "p" * 3000),
    ("traceparent", "00-00000000000000000000000000000000-0000000000000000-01"),
)


def one(runs: RunCollector, name: str) -> Run:
    found = [r for r in runs if r.name == name]
    assert len(found) == 1, [r.name for r in runs]
    return found[0]


@pytest.fixture
def sync_server() -> Iterator[str]:
    target: list[str] = []
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4), interceptors=[server_interceptor()]
    )
    server.add_generic_rpc_handlers((sync_handlers(target),))
    port = server.add_insecure_port("127.0.0.1:0")
    target.append(f"127.0.0.1:{port}")
    server.start()
    yield target[0]
    server.stop(None).wait(WAIT)


@pytest.fixture
def sync_channel(sync_server: str) -> Iterator[grpc.Channel]:
    with grpc.intercept_channel(
        grpc.insecure_channel(sync_server), client_interceptor()
    ) as channel:
        yield channel


def method(channel: Any, kind: str, name: str) -> Any:
    return getattr(channel, kind)(f"/{SERVICE}/{name}")


def test_sync_unary_call_stitches_client_server_and_a_nested_call(
    sync_channel: grpc.Channel,
) -> None:
    with runs_until(6) as (runs, done), trace("storefront") as root:
        reply = method(sync_channel, "unary_unary", "Checkout")(b"book", timeout=10)
        assert reply == b"paid price:book"
    assert done.wait(WAIT), [r.name for r in runs]
    (client,) = [r for r in runs if r.parent_run_id == root.id]
    servers = [r for r in runs if r.extra.get("span_kind") == "server"]
    checkout = next(r for r in servers if r.name == f"{SERVICE}/Checkout")
    price = next(r for r in servers if r.name == f"{SERVICE}/Price")
    nested = next(r for r in runs if r.parent_run_id == checkout.id)
    assert client.parent_run_id == root.id and client.extra["span_kind"] == "client"
    assert checkout.parent_run_id == client.id
    assert nested.name == f"{SERVICE}/Price" and nested.extra["span_kind"] == "client"
    assert price.parent_run_id == nested.id
    assert one(runs, "lookup").parent_run_id == price.id
    assert {r.trace_id for r in runs} == {root.trace_id}
    assert all(r.outputs == {"grpc_status": "OK"} for r in (client, checkout, nested, price))


def test_sync_streaming_shapes(sync_channel: grpc.Channel) -> None:
    with runs_until(1 + 2 * 3 + 3 + 2) as (runs, done), trace("streams") as root:
        assert list(method(sync_channel, "unary_stream", "Watch")(b"3", timeout=10)) == [
            b"price:0",
            b"price:1",
            b"price:2",
        ]
        upload = method(sync_channel, "stream_unary", "Upload")
        assert upload(iter([b"a", b"b"]), timeout=10) == b"2"
        chat = method(sync_channel, "stream_stream", "Chat")
        assert list(chat(iter([b"x", b"y"]), timeout=10)) == [b"price:x", b"price:y"]
    assert done.wait(WAIT), [r.name for r in runs]
    for name, lookups in (("Watch", 3), ("Upload", 0), ("Chat", 2)):
        clients = [r for r in runs if r.name == f"{SERVICE}/{name}" and r.parent_run_id == root.id]
        (client,) = clients
        (server,) = [r for r in runs if r.parent_run_id == client.id]
        # The handler's code, run step by step by gRPC, nests under the server run.
        assert len([r for r in runs if r.parent_run_id == server.id]) == lookups
        assert client.error is None and server.error is None


def test_sync_status_codes_map_to_errors(sync_channel: grpc.Channel) -> None:
    price = method(sync_channel, "unary_unary", "Price")
    with runs_until(4) as (runs, done), trace("statuses"):
        with pytest.raises(grpc.RpcError) as missing:
            price(b"missing", timeout=10)
        assert missing.value.code() is grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as crash:
            price(b"crash", timeout=10)
        assert crash.value.code() is grpc.StatusCode.UNKNOWN
    assert done.wait(WAIT), [r.name for r in runs]
    clients = {r.outputs["grpc_status"]: r for r in runs if r.extra.get("span_kind") == "client"}
    servers = {r.outputs["grpc_status"]: r for r in runs if r.extra.get("span_kind") == "server"}
    # NOT_FOUND is the caller's error, not the server's (as a 404).
    assert clients["NOT_FOUND"].error == "gRPC NOT_FOUND: no such item"
    assert servers["NOT_FOUND"].error is None
    assert clients["UNKNOWN"].error.startswith("gRPC UNKNOWN")
    assert servers["UNKNOWN"].error.startswith("ValueError: handler crashed")
    assert "Traceback" in servers["UNKNOWN"].error


def test_hostile_metadata_gets_the_same_as_none(sync_server: str) -> None:
    # A plain channel, so the metadata reaches the server exactly as sent.
    with grpc.insecure_channel(sync_server) as channel, runs_until(2) as (runs, done):
        price = method(channel, "unary_unary", "Price")
        hostile = price(b"pen", metadata=HOSTILE, timeout=10)
        plain = price(b"pen", timeout=10)
    assert done.wait(WAIT)
    assert hostile == plain == b"price:pen"
    servers = [r for r in runs if r.extra.get("span_kind") == "server"]
    assert len(servers) == 2 and all(r.parent_run_id is None for r in servers)
    assert len({r.trace_id for r in servers}) == 2
    assert any(stats().values()), "what was refused is counted"


def test_an_internal_error_never_reaches_the_rpc(
    sync_channel: grpc.Channel, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("tracer bug")

    monkeypatch.setattr(grpc_common, "start_run", broken)
    before = internal_errors()
    previous = set_strict(False)
    try:
        with capture_runs(), trace("caller"):
            assert method(sync_channel, "unary_unary", "Price")(b"ok", timeout=10) == b"price:ok"
    finally:
        set_strict(previous)
    after = internal_errors()
    assert after["grpc.client"] > before.get("grpc.client", 0)
    assert after["grpc.server"] > before.get("grpc.server", 0)


CALLER_METADATA = (
    ("x-tenant", "acme"),
    ("baggage", "vendor=opaque"),
    ("langsmith-trace", "stale"),  # an earlier hop's: replaced, never sent twice
)


def check_metadata(text: bytes, run_order: str) -> None:
    lines = text.decode().splitlines()
    assert "x-tenant=acme" in lines
    assert [x for x in lines if x.startswith("langsmith-trace=")] == [
        f"langsmith-trace={run_order}"
    ]
    (baggage,) = [x for x in lines if x.startswith("baggage=")]
    assert "vendor=opaque" in baggage


def test_the_callers_metadata_is_kept(sync_channel: grpc.Channel) -> None:
    with runs_until(3) as (runs, done), trace("caller"):
        text = method(sync_channel, "unary_unary", "Meta")(b"", metadata=CALLER_METADATA)
    assert done.wait(WAIT)
    (client,) = [r for r in runs if r.extra.get("span_kind") == "client"]
    check_metadata(text, client.dotted_order)


async def test_aio_the_callers_metadata_is_kept(aio_server: str) -> None:
    async with grpc.aio.insecure_channel(
        aio_server, interceptors=aio_client_interceptors()
    ) as channel:
        with runs_until(3) as (runs, done), trace("caller"):
            call = method(channel, "unary_unary", "Meta")(b"", metadata=CALLER_METADATA)
            text = await call
        assert await asyncio.to_thread(done.wait, WAIT)
    (client,) = [r for r in runs if r.extra.get("span_kind") == "client"]
    check_metadata(text, client.dotted_order)


def test_untraced_outside_any_run(sync_server: str) -> None:
    seen: list[Any] = []

    class Spy(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
        def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
            seen.append(details.metadata)
            return continuation(details, request)

    channel = grpc.intercept_channel(
        grpc.insecure_channel(sync_server), client_interceptor(), Spy()
    )
    with channel:
        assert method(channel, "unary_unary", "Price")(b"x", timeout=10) == b"price:x"
    assert seen == [None]


@pytest.fixture
async def aio_server() -> AsyncIterator[str]:
    server = grpc.aio.server(interceptors=[aio_server_interceptor(service="aio-shop")])
    server.add_generic_rpc_handlers((aio_handlers(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(None)


async def test_aio_all_shapes_and_statuses(aio_server: str) -> None:
    async with grpc.aio.insecure_channel(
        aio_server, interceptors=aio_client_interceptors()
    ) as channel:
        with runs_until(1 + 2 * 5 + 1 + 3 + 2) as (runs, done):
            with trace("aio-caller") as root:
                assert await method(channel, "unary_unary", "Price")(b"cup") == b"price:cup"
                watch = method(channel, "unary_stream", "Watch")(b"3")
                assert [m async for m in watch] == [b"price:0", b"price:1", b"price:2"]

                async def two() -> AsyncIterator[bytes]:
                    yield b"a"
                    yield b"b"

                assert await method(channel, "stream_unary", "Upload")(two()) == b"2"
                chat = method(channel, "stream_stream", "Chat")(two())
                assert [m async for m in chat] == [b"price:a", b"price:b"]
                with pytest.raises(grpc.aio.AioRpcError) as missing:
                    await method(channel, "unary_unary", "Price")(b"missing")
                assert missing.value.code() is grpc.StatusCode.NOT_FOUND
            assert await asyncio.to_thread(done.wait, WAIT), [r.name for r in runs]
    clients = [r for r in runs if r.extra.get("span_kind") == "client"]
    assert len(clients) == 5 and {r.parent_run_id for r in clients} == {root.id}
    for client in clients:
        (server,) = [r for r in runs if r.parent_run_id == client.id]
        assert server.extra["span_kind"] == "server" and server.name == client.name
        assert server.outputs["grpc_status"] == client.outputs["grpc_status"]
        assert server.metadata["service"] == "aio-shop"  # as named by the interceptor
    assert "service" not in root.metadata and all("service" not in r.metadata for r in clients)
    statuses = sorted(r.outputs["grpc_status"] for r in clients)
    assert statuses == ["NOT_FOUND", "OK", "OK", "OK", "OK"]
    assert len([r for r in runs if r.name == "lookup"]) == 1 + 3 + 2
    assert {r.trace_id for r in runs} == {root.trace_id}


async def test_aio_hostile_metadata_and_crash(aio_server: str) -> None:
    async with grpc.aio.insecure_channel(aio_server) as channel:
        with runs_until(2) as (runs, done):
            price = method(channel, "unary_unary", "Price")
            assert await price(b"pen", metadata=HOSTILE) == b"price:pen"
            with pytest.raises(grpc.aio.AioRpcError):
                await price(b"crash")
            assert await asyncio.to_thread(done.wait, WAIT)
    servers = [r for r in runs if r.extra.get("span_kind") == "server"]
    assert all(r.parent_run_id is None for r in servers)
    (crashed,) = [r for r in servers if r.error]
    assert crashed.error.startswith("ValueError: handler crashed")


SERVER_PROCESS = """
from concurrent import futures
import grpc
from grpc_shop import sync_handlers
from tracestitch.integrations.grpc import server_interceptor

target = []
server = grpc.server(futures.ThreadPoolExecutor(4), interceptors=[server_interceptor()])
server.add_generic_rpc_handlers((sync_handlers(target),))
target.append("127.0.0.1:%d" % server.add_insecure_port("127.0.0.1:0"))
server.start()
print("ready", target[0], flush=True)
server.wait_for_termination()
"""

CLIENT_PROCESS = """
import sys
import grpc
from tracestitch import trace
from tracestitch.integrations.grpc import client_interceptor

channel = grpc.intercept_channel(grpc.insecure_channel(sys.argv[1]), client_interceptor())
with trace("storefront") as run:
    assert channel.unary_unary("/demo.Shop/Checkout")(b"lamp", timeout=10) == b"paid price:lamp"
print(run.trace_id)
"""


def test_across_processes_one_tree_in_the_collector(collector: Collector) -> None:
    here = str(Path(__file__).parent)
    env = traced_env(collector.url, PYTHONPATH=here)
    # The server is named by the environment only; the client process names no service.
    server_env = {**env, "TRACESTITCH_SERVICE_NAME": "shop"}
    server = Service([sys.executable, "-c", SERVER_PROCESS], server_env, Path(here), "ready ")
    try:
        client = subprocess.run(
            [sys.executable, "-c", CLIENT_PROCESS, server.detail],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert client.returncode == 0, client.stderr
        trace_id = client.stdout.strip()
        runs = collector.wait_for_runs(trace_id, 6)
    finally:
        server.stop()
    (root,) = one_tree(runs, trace_id, 6)[None]
    assert root["name"] == "storefront"
    # Every run on the server's side names its service (the nested call and the handler's
    # own run inherit it); the client process's runs name none.
    kinds = sorted((r["name"], (r.get("extra") or {}).get("span_kind"), service(r)) for r in runs)
    assert kinds == [
        ("demo.Shop/Checkout", "client", None),
        ("demo.Shop/Checkout", "server", "shop"),
        ("demo.Shop/Price", "client", "shop"),
        ("demo.Shop/Price", "server", "shop"),
        ("lookup", None, "shop"),
        ("storefront", None, None),
    ]

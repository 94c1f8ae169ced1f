"""Never break the host app: whatever the request headers, each middleware answers exactly what
the app answers without it, lets no exception of its own escape (tests run strict, so an
internal error would raise here), and leaves no run bound for the next request."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mw_helpers import call_asgi, call_wsgi, wsgi_environ
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from tracestitch import RunTree
from tracestitch.context import get_current_run_tree
from tracestitch.middleware.aiohttp import tracing_middleware
from tracestitch.middleware.asgi import TracingMiddleware as AsgiTracing
from tracestitch.middleware.wsgi import TracingMiddleware as WsgiTracing
from tracestitch.run_context import _current_run
from tracestitch.testing import capture_runs
from tracestitch.tracing import traceable

EXAMPLES = int(os.environ.get("TRACESTITCH_FUZZ_EXAMPLES", "1000"))
_valid = RunTree("valid-caller")
_valid_headers = _valid.to_headers()
_order = _valid.dotted_order

NAMES = [
    "langsmith-trace",
    "Langsmith-Trace",
    "LANGSMITH-TRACE",
    "baggage",
    "traceparent",
    "tracestate",
    "langsmith-metadata",
    "authorization",
    "cookie",
    "user-agent",
    "content-type",
    "x-request-id",
]
INTERESTING = [
    _order.encode(),
    _valid_headers["baggage"].encode(),
    _valid_headers["traceparent"].encode(),
    b"garbage",
    _order[:30].encode(),
    (_order + ".").encode(),
    (_order + "." + _order).encode(),
    _order.replace("T", "X").encode(),
    b"20990101T000000000000Z" + str(_valid.id).encode(),  # from far in the future
    b"langsmith-metadata=%5B1%2C2%5D",  # JSON, but not an object
    b"langsmith-metadata=%7Bnot-json",
    b"langsmith-metadata=" + b"%7B%22a%22%3A1%7D" * 300,
    b"langsmith-project=" + b"p" * 5000,
    b"langsmith-replicas=%5B%7B%22api_url%22%3A%22http%3A%2F%2Fevil%22%7D%5D",
    b"langsmith-tags=a,b,,c" + b",t" * 100,
    b"00-" + b"0" * 32 + b"-" + b"1" * 16 + b"-01",
    b"00-" + b"1" * 32 + b"-" + b"0" * 16 + b"-01",
    b"ff-" + b"1" * 32 + b"-" + b"1" * 16 + b"-01",
    b"\xff\xfe\xfd",
    b"x" * 100_000,
    b"",
    b" , ; = ",
]
_TOKEN = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

header_names = st.one_of(st.sampled_from(NAMES), st.text(alphabet=_TOKEN, min_size=1, max_size=16))
header_values = st.one_of(
    st.sampled_from(INTERESTING),
    st.binary(max_size=64),
    st.text(max_size=64).map(lambda t: t.encode("utf-8")),
)
header_sets = st.lists(st.tuples(header_names, header_values), max_size=8)
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Each aiohttp example is two real requests over loopback: fewer of them keep the suite quick.
FUZZ_SOCKET = settings(FUZZ, max_examples=max(EXAMPLES // 2, 1))


@traceable
def helper(x: int) -> int:
    return x


# --------------------------------------------------------------------------------------- ASGI


async def _asgi_endpoint(request: Request) -> PlainTextResponse:
    helper(1)
    return PlainTextResponse(f"item {request.path_params['item_id']}", status_code=201)


def _starlette() -> Starlette:
    return Starlette(routes=[Route("/items/{item_id}", _asgi_endpoint)])


_asgi_bare = _starlette()
_asgi_traced = AsgiTracing(_starlette(), trace_id_header="x-trace-id")
_asgi_loop = asyncio.new_event_loop()


@pytest.fixture(scope="module", autouse=True)
def _close_loop() -> Iterator[None]:
    yield
    _asgi_loop.close()


@FUZZ
@given(headers=header_sets)
def test_asgi_answers_exactly_what_the_app_answers(headers: list[tuple[str, bytes]]) -> None:
    pairs = [(name.encode("latin-1"), value) for name, value in headers]

    async def both() -> None:
        expected = await call_asgi(_asgi_bare, "/items/1", headers=pairs)
        with capture_runs() as runs:
            got = await call_asgi(_asgi_traced, "/items/1", headers=pairs)
        assert (got.status, got.body) == (expected.status, expected.body)
        assert get_current_run_tree() is None
        server = runs.one("GET /items/{item_id}")
        assert got.header("x-trace-id") == str(server.trace_id)
        assert runs.one("helper").parent_run_id == server.id

    _asgi_loop.run_until_complete(asyncio.wait_for(both(), timeout=30))


# --------------------------------------------------------------------------------------- WSGI


def _wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    helper(1)
    start_response("201 Created", [("Content-Type", "text/plain")])
    return [b"item ", environ.get("PATH_INFO", "").encode("latin-1")]


_wsgi_traced = WsgiTracing(_wsgi_app)


def _environ(headers: list[tuple[str, bytes]]) -> dict[str, Any]:
    combined: dict[str, str] = {}
    for name, value in headers:
        text = value.decode("latin-1")  # what a WSGI server hands over for raw bytes
        combined[name] = f"{combined[name]},{text}" if name in combined else text
    return wsgi_environ("/items/1", headers=combined)


@FUZZ
@given(headers=header_sets)
def test_wsgi_answers_exactly_what_the_app_answers(headers: list[tuple[str, bytes]]) -> None:
    expected = call_wsgi(_wsgi_app, _environ(headers))
    with capture_runs() as runs:
        got = call_wsgi(_wsgi_traced, _environ(headers))
    assert (got.status, got.body) == (expected.status, expected.body)
    assert get_current_run_tree() is None
    server = runs.one("GET /items/1")
    assert runs.one("helper").parent_run_id == server.id


# ------------------------------------------------------------------------------------ aiohttp


class _AiohttpPair:
    """A bare and a traced aiohttp app under TestServer, on one background loop, so that the
    synchronous hypothesis test can drive them."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.leaks: list[RunTree] = []
        self.bare = self._run(self._client(traced=False))
        self.traced = self._run(self._client(traced=True))

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    async def _client(self, traced: bool) -> TestClient[Any, Any]:
        @web.middleware
        async def leak_probe(request: web.Request, handler: Any) -> web.StreamResponse:
            # Outermost: a run left bound by the previous request on this connection shows here.
            leaked = _current_run.get()
            if leaked is not None:
                self.leaks.append(leaked)
            return await handler(request)

        async def item(request: web.Request) -> web.Response:
            helper(1)
            return web.Response(text=f"item {request.match_info['item_id']}", status=201)

        middlewares: list[Any] = [leak_probe]
        if traced:
            middlewares.append(tracing_middleware())
        app = web.Application(middlewares=middlewares)
        app.router.add_get("/items/{item_id}", item)
        client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        return client

    def get(
        self, client: TestClient[Any, Any], headers: list[tuple[str, str]]
    ) -> tuple[int, bytes]:
        async def go() -> tuple[int, bytes]:
            async with client.get("/items/1", headers=headers) as response:
                return response.status, await response.read()

        result: tuple[int, bytes] = self._run(go())
        return result

    def close(self) -> None:
        self._run(self.bare.close())
        self._run(self.traced.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def aiohttp_pair() -> Iterator[_AiohttpPair]:
    pair = _AiohttpPair()
    yield pair
    pair.close()


def _wire_safe(value: bytes) -> str:
    # What an HTTP client can put on the wire at all: no CR/LF/NUL (the client refuses those).
    return "".join(c for c in value.decode("latin-1") if c == "\t" or " " <= c != "\x7f")


@FUZZ_SOCKET
@given(headers=header_sets)
def test_aiohttp_answers_exactly_what_the_app_answers(
    aiohttp_pair: _AiohttpPair, headers: list[tuple[str, bytes]]
) -> None:
    sent = [(name, _wire_safe(value).strip()) for name, value in headers]
    expected = aiohttp_pair.get(aiohttp_pair.bare, sent)
    with capture_runs() as runs:
        got = aiohttp_pair.get(aiohttp_pair.traced, sent)
    assert got == expected
    assert aiohttp_pair.leaks == []
    if got[0] == 201:
        server = runs.one("GET /items/{item_id}")
        assert runs.one("helper").parent_run_id == server.id

"""The promises every server adapter keeps, each checked against each adapter under a real
server on 127.0.0.1: never break the app, names from route templates, streaming, errors,
exclusion, sampling, context isolation.

A new adapter gets all of them by adding one line to ``ADAPTERS``: how to build the same small
app in its framework (see ``conformance_apps``), and which server runs it.
"""

from __future__ import annotations

import asyncio
import functools
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from conformance_apps import (
    aiohttp_app,
    django_asgi_app,
    django_wsgi_app,
    flask_app,
    starlette_app,
)

from servers import run_aiohttp, run_uvicorn, run_wsgi
from tracestitch import RunTree, _guard
from tracestitch.context import get_current_run_tree
from tracestitch.export.memory import RunCollector
from tracestitch.middleware._common import ServerTracer
from tracestitch.testing import capture_runs

TIMEOUT = httpx.Timeout(15.0)
OPTIONS: dict[str, Any] = {
    "service": "conf",
    "exclude": ["/health"],
    "trace_id_header": "x-trace-id",
}


@dataclass(frozen=True)
class Adapter:
    name: str  # as in its internal-error sites: middleware.<name>.start
    build: Callable[..., Any]  # (**middleware options) -> the app, middleware installed
    serve: Callable[[Any], AbstractContextManager[str]]  # app -> base URL while it runs
    brackets: str  # how its route templates spell a parameter: "{}" ("/items/{item_id}")
    label: str = ""  # its test id, where one adapter runs two ways

    def template(self, path: str) -> str:
        return re.sub(r"\{(\w+)\}", rf"{self.brackets[0]}\1{self.brackets[1]}", path)


ADAPTERS = [
    Adapter("asgi", starlette_app, run_uvicorn, "{}"),
    Adapter("wsgi", flask_app, run_wsgi, "<>"),
    Adapter("aiohttp", aiohttp_app, run_aiohttp, "{}"),
    Adapter("django", django_wsgi_app, run_wsgi, "<>", "django-wsgi"),
    # Django speaks no ASGI lifespan: uvicorn's default ("auto") lets it be.
    Adapter(
        "django",
        django_asgi_app,
        functools.partial(run_uvicorn, lifespan="auto"),
        "<>",
        "django-asgi",
    ),
]


@dataclass
class Served:
    adapter: Adapter
    url: str
    runs: RunCollector

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(self.url + path, timeout=TIMEOUT, **kwargs)

    def settled(self, count: int) -> RunCollector:
        """The runs, once ``count`` have ended: a run ends when the server has taken the last
        byte, which the client may see a moment before (bounded wait, no fixed sleep)."""
        done = threading.Event()
        for _ in range(1500):
            if len(self.runs) >= count:
                break
            done.wait(0.01)
        assert len(self.runs) == count, [r.name for r in self.runs]
        return self.runs


@pytest.fixture(scope="module", params=ADAPTERS, ids=lambda a: a.label or a.name)
def server(request: pytest.FixtureRequest) -> Iterator[tuple[Adapter, str]]:
    adapter: Adapter = request.param
    with adapter.serve(adapter.build(**OPTIONS)) as url:
        yield adapter, url


@pytest.fixture
def served(server: tuple[Adapter, str]) -> Iterator[Served]:
    with capture_runs() as runs:
        yield Served(server[0], server[1], runs)


def _caller() -> tuple[RunTree, dict[str, str]]:
    caller = RunTree("caller")
    return caller, caller.to_headers()


def test_a_request_is_a_run_named_by_its_route_in_the_callers_trace(served: Served) -> None:
    caller, headers = _caller()
    response = served.get("/items/7?token=s3cret", headers=headers)
    assert response.status_code == 200
    assert response.json()["trace"] == str(caller.trace_id)
    assert response.headers["x-trace-id"] == str(caller.trace_id)
    runs = served.settled(2)
    run = runs.one(f"GET {served.adapter.template('/items/{item_id}')}")
    assert run.parent_run_id == caller.id and run.trace_id == caller.trace_id
    assert run.inputs["path"] == "/items/7" and run.inputs["query"] == "token=[REDACTED]"
    assert run.metadata["service"] == "conf"
    assert run.outputs is not None and run.outputs["status_code"] == 200
    assert run.extra is not None and run.extra["span_kind"] == "server"
    assert runs.one("lookup").parent_run_id == run.id


def test_an_unrouted_path_keeps_the_path_and_a_4xx_is_no_error(served: Served) -> None:
    assert served.get("/status/404").status_code == 404
    assert served.get("/nowhere").status_code == 404
    runs = served.settled(2)
    assert runs.one(f"GET {served.adapter.template('/status/{code}')}").error is None
    assert runs.one("GET /nowhere").error is None


def test_errors_mark_the_run_and_the_app_answers_as_without_tracing(served: Served) -> None:
    assert served.get("/fail").status_code == 500
    assert served.get("/status/503").status_code == 503
    runs = served.settled(2)
    # The exception itself where it crosses the middleware; Flask answers it inside: a 500.
    error = runs.one("GET /fail").error or ""
    assert "boom" in error or error == "HTTP 500 Internal Server Error"
    failed = runs.one(f"GET {served.adapter.template('/status/{code}')}")
    assert failed.error == "HTTP 503 Service Unavailable"


def test_a_streamed_response_is_one_run_ending_after_its_last_chunk(served: Served) -> None:
    with httpx.stream("GET", served.url + "/stream", timeout=TIMEOUT) as response:
        chunks = b"".join(response.iter_bytes())
    assert chunks == b"chunk\n" * 3
    run = served.settled(1).one("GET /stream")
    assert run.outputs is not None and run.outputs["status_code"] == 200
    assert run.outputs["response_size"] >= len(chunks)
    assert "incomplete" not in run.outputs and run.error is None


def test_excluded_paths_and_methods_make_no_runs_at_all(served: Served) -> None:
    assert served.get("/health").text == "ok"  # its handler calls a traced function
    httpx.options(served.url + "/items/1", timeout=TIMEOUT)
    assert served.get("/items/2").status_code == 200  # then one traced request, to wait on
    assert {r.name for r in served.settled(2)} == {
        f"GET {served.adapter.template('/items/{item_id}')}",
        "lookup",
    }


HOSTILE = [
    {"langsmith-trace": "garbage", "baggage": "langsmith-metadata=%7Bnot-json"},
    {"langsmith-trace": "20990101T000000000000Z" + str(uuid.uuid4())},  # from the far future
    {"traceparent": "ff-" + "1" * 32 + "-" + "0" * 16 + "-01", "tracestate": "x" * 5000},
    {"baggage": "langsmith-project=" + "p" * 5000 + ",langsmith-tags=" + "t," * 500},
    {"langsmith-trace": "x" * 8000},  # under every server's own limit (aiohttp: 8190)
]


@pytest.mark.parametrize("headers", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_headers_never_change_the_answer(served: Served, headers: dict[str, str]) -> None:
    response = served.get("/items/3", headers=headers)
    assert response.status_code == 200 and response.json()["id"] == "3"
    run = served.settled(2).one(f"GET {served.adapter.template('/items/{item_id}')}")
    assert run.parent_run_id is None  # none of those is a parent to believe: a new trace


def test_an_internal_error_never_reaches_the_app(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("bug in tracestitch")

    monkeypatch.setattr(ServerTracer, "start", broken)
    site = f"middleware.{served.adapter.name}.start"
    before = _guard.internal_errors().get(site, 0)
    previous = _guard.set_strict(False)
    try:
        response = served.get("/items/4")
    finally:
        _guard.set_strict(previous)
    assert response.status_code == 200 and response.json() == {"id": "4", "trace": None}
    assert _guard.internal_errors()[site] == before + 1


def test_concurrent_requests_each_see_their_own_run(served: Served) -> None:
    callers = [_caller() for _ in range(20)]

    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=TIMEOUT) as client:
            url = served.url
            calls = [client.get(f"{url}/items/{i}", headers=h) for i, (_, h) in enumerate(callers)]
            return list(await asyncio.gather(*calls))

    responses = asyncio.run(fire())
    runs = served.settled(40)
    named = runs.named(f"GET {served.adapter.template('/items/{item_id}')}")
    servers = {r.parent_run_id: r for r in named}
    for i, ((caller, _), response) in enumerate(zip(callers, responses, strict=True)):
        assert response.json() == {"id": str(i), "trace": str(caller.trace_id)}
        server = servers[caller.id]
        assert server.inputs["path"] == f"/items/{i}"
        assert [c.inputs for c in runs.children(server)] == [{"item_id": str(i)}]
    assert get_current_run_tree() is None


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: a.label or a.name)
def test_a_sampled_out_request_makes_no_runs(adapter: Adapter) -> None:
    with capture_runs() as runs, adapter.serve(adapter.build(**OPTIONS, sample_rate=0.0)) as url:
        response = httpx.get(url + "/items/5", timeout=TIMEOUT)
        assert response.status_code == 200 and response.json()["id"] == "5"
    assert len(runs) == 0

"""What the Django middleware does beyond the shared conformance suite, under real servers
(werkzeug for WSGI, uvicorn for ASGI): route names through ``include()`` and ``re_path``, the
script prefix, the view's exception as the run's error, settings, and Django's async mode."""

from __future__ import annotations

import asyncio
import functools
import io
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgiref.sync import iscoroutinefunction
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import include, path, re_path
from django_apps import handler, urls_module

from servers import run_uvicorn, run_wsgi
from tracestitch import RunTree
from tracestitch.context import get_current_run_tree
from tracestitch.middleware import MiddlewareOptions
from tracestitch.middleware.django import TracingMiddleware
from tracestitch.testing import capture_runs
from tracestitch.tracing import traceable

TIMEOUT = httpx.Timeout(15.0)
MIDDLEWARE = ["tracestitch.middleware.django.TracingMiddleware"]


@traceable
def load(order_id: int) -> dict[str, int]:
    return {"id": order_id}


def order(request: Any, order_id: int) -> JsonResponse:
    return JsonResponse(load(order_id))


async def order_async(request: Any, order_id: int) -> JsonResponse:
    return JsonResponse(load(order_id))


def legacy(request: Any, sku: str) -> HttpResponse:
    return HttpResponse(sku)


def index(request: Any) -> HttpResponse:
    return HttpResponse("home")


def broken(request: Any) -> HttpResponse:
    raise ValueError("no stock for order")


def gone(request: Any) -> HttpResponse:
    raise Http404("no such order")


def forbidden(request: Any) -> HttpResponse:
    raise PermissionDenied


def report(request: Any) -> StreamingHttpResponse:
    return StreamingHttpResponse(str(load(i)).encode() for i in range(3))


async def report_async(request: Any) -> StreamingHttpResponse:
    async def chunks() -> Any:
        for i in range(3):
            yield str(load(i)).encode()

    return StreamingHttpResponse(chunks())


def download(request: Any) -> FileResponse:
    return FileResponse(Path(__file__).open("rb"))  # a file on disk: Django sets its length


class Pipe:
    """A file-like object whose size cannot be told (no ``seek``, no ``tell``), as a pipe."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._data.read(size)


PIPED = b"0123456789" * 1000


def pipe(request: Any) -> FileResponse:
    return FileResponse(Pipe(PIPED))


def urls(name: str, view: Callable[..., Any], stream: Callable[..., Any]) -> str:
    urls_module(
        name,
        [
            path("", index),
            path("api/v1/", include([path("orders/<int:order_id>", view)])),
            path("report", stream),
            path("export", stream),
            re_path(r"^legacy/(?P<sku>[a-z]+)/$", legacy),
            path("broken", broken),
            path("download", download),
            path("pipe", pipe),
            path("gone", gone),
            path("forbidden", forbidden),
        ],
    )
    return name


KINDS: dict[str, tuple[Callable[..., AbstractContextManager[str]], str]] = {
    "wsgi": (run_wsgi, urls("django_test_sync", order, report)),
    "asgi": (
        functools.partial(run_uvicorn, lifespan="auto"),
        urls("django_test_async", order_async, report_async),
    ),
}


@pytest.fixture(scope="module", params=sorted(KINDS))
def url(request: pytest.FixtureRequest) -> Iterator[str]:
    serve, urlconf = KINDS[request.param]
    app = handler(request.param, urlconf, MIDDLEWARE, service="orders", exclude=["/export"])
    with serve(app) as base:
        yield base


def test_runs_are_named_by_the_resolvers_route_with_include_prefixes_joined(url: str) -> None:
    caller = RunTree("caller")
    with capture_runs() as runs:
        response = httpx.get(f"{url}/api/v1/orders/7", headers=caller.to_headers(), timeout=TIMEOUT)
        assert response.json() == {"id": 7}
        assert httpx.get(f"{url}/legacy/abc/", timeout=TIMEOUT).text == "abc"
        assert httpx.get(f"{url}/", timeout=TIMEOUT).text == "home"
    server = runs.one("GET /api/v1/orders/<int:order_id>")
    assert server.parent_run_id == caller.id and server.metadata["service"] == "orders"
    assert server.extra is not None and server.extra["route"] == "/api/v1/orders/<int:order_id>"
    assert runs.one("load").parent_run_id == server.id
    assert runs.one("GET /legacy/(?P<sku>[a-z]+)/").parent_run_id is None
    assert runs.one("GET /").outputs == {"status_code": 200, "response_size": 4}


def test_a_streamed_bodys_chunks_are_made_with_its_run_current(url: str) -> None:
    with capture_runs() as runs:
        assert httpx.get(f"{url}/report", timeout=TIMEOUT).text == "{'id': 0}{'id': 1}{'id': 2}"
        # An excluded path's streamed body runs with tracing off too: no root runs from it.
        assert httpx.get(f"{url}/export", timeout=TIMEOUT).status_code == 200
    server = runs.one("GET /report")
    assert server.outputs == {"status_code": 200, "response_size": 27}
    loads = runs.named("load")
    assert len(loads) == 3 and {r.parent_run_id for r in loads} == {server.id}
    assert len(runs) == 4


# Django's own warning for a sync file served under ASGI: what such an app meets too.
@pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume synchronous iterators")
def test_a_files_size_is_its_content_length_else_the_bytes_streamed(url: str) -> None:
    with capture_runs() as runs:
        served = httpx.get(f"{url}/download", timeout=TIMEOUT)
        piped = httpx.get(f"{url}/pipe", timeout=TIMEOUT)
    assert served.content == Path(__file__).read_bytes()
    assert served.headers["content-length"] == str(len(served.content))
    assert piped.content == PIPED and "content-length" not in piped.headers
    size = len(served.content)
    assert runs.one("GET /download").outputs == {"status_code": 200, "response_size": size}
    assert runs.one("GET /pipe").outputs == {"status_code": 200, "response_size": len(PIPED)}


def test_the_views_exception_is_the_error_and_4xx_exceptions_are_none(url: str) -> None:
    with capture_runs() as runs:
        assert httpx.get(f"{url}/broken", timeout=TIMEOUT).status_code == 500
        assert httpx.get(f"{url}/gone", timeout=TIMEOUT).status_code == 404
        assert httpx.get(f"{url}/forbidden", timeout=TIMEOUT).status_code == 403
    error = runs.one("GET /broken").error or ""
    assert error.startswith("ValueError: no stock for order"), error
    assert runs.one("GET /gone").error is None and runs.one("GET /forbidden").error is None


def test_the_script_prefix_is_part_of_the_name(settings_override: Any) -> None:
    settings_override(FORCE_SCRIPT_NAME="/shop")
    with capture_runs() as runs, run_wsgi(handler("wsgi", "django_test_sync", MIDDLEWARE)) as base:
        assert httpx.get(f"{base}/api/v1/orders/3", timeout=TIMEOUT).json() == {"id": 3}
    run = runs.one("GET /shop/api/v1/orders/<int:order_id>")
    assert run.inputs["path"] == "/shop/api/v1/orders/3"


@pytest.fixture
def settings_override() -> Iterator[Callable[..., None]]:
    from django.conf import settings

    saved: dict[str, Any] = {}

    def override(**values: Any) -> None:
        for key, value in values.items():
            saved.setdefault(key, getattr(settings, key, None))
            setattr(settings, key, value)

    yield override
    for key, value in saved.items():
        setattr(settings, key, value)


def test_options_come_from_settings_and_the_service_from_the_project(
    settings_override: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRACESTITCH_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    settings_override(ROOT_URLCONF="shop.urls", TRACESTITCH_MIDDLEWARE={"exclude": ["/health"]})
    middleware = TracingMiddleware(lambda request: None)
    assert middleware.options.exclude == ["/health"]
    assert middleware._tracer.service == "shop"
    options = MiddlewareOptions(service="billing", sample_rate=0.5)
    settings_override(TRACESTITCH_MIDDLEWARE=options)
    assert TracingMiddleware(lambda request: None).options is options
    settings_override(TRACESTITCH_MIDDLEWARE="service=shop")
    with pytest.raises(TypeError, match="TRACESTITCH_MIDDLEWARE"):
        TracingMiddleware(lambda request: None)


def test_it_is_async_under_an_async_chain_and_sync_under_a_sync_one() -> None:
    async def async_view(request: Any) -> HttpResponse:
        return HttpResponse("async")

    handler("wsgi", "django_test_sync", MIDDLEWARE)  # settings configured
    sync = TracingMiddleware(lambda request: HttpResponse("sync"))
    asynchronous = TracingMiddleware(async_view)
    assert not iscoroutinefunction(sync) and iscoroutinefunction(asynchronous)

    class Request:
        META: dict[str, str] = {"REQUEST_METHOD": "GET"}
        method, path, path_info, resolver_match = "GET", "/x", "/x", None

    with capture_runs() as runs:
        assert sync(Request()).content == b"sync"
        assert asyncio.run(asynchronous(Request())).content == b"async"
    assert [r.name for r in runs] == ["GET /x", "GET /x"]
    assert get_current_run_tree() is None

"""The same small app in each framework the middleware supports, for ``test_conformance``:

- ``GET /items/{item_id}``: calls the traced ``lookup``; answers ``{"id", "trace"}``, the trace
  its handler saw as current;
- ``GET /status/{code}``: answers that status; ``GET /fail`` raises; ``GET /stream`` streams
  three chunks; ``GET /health`` (excluded by the tests' options) calls ``lookup`` too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from aiohttp import web
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import path
from django_apps import handler, urls_module
from flask import Flask, Response
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route

from tracestitch.context import get_current_run_tree
from tracestitch.middleware.aiohttp import setup_tracing
from tracestitch.middleware.asgi import TracingMiddleware as AsgiTracing
from tracestitch.middleware.wsgi import TracingMiddleware as WsgiTracing
from tracestitch.tracing import traceable

CHUNK = b"chunk\n"


@traceable
def lookup(item_id: str) -> dict[str, Any]:
    return {"id": item_id}


def _item(item_id: str) -> dict[str, Any]:
    found = lookup(item_id)
    run = get_current_run_tree()
    return {**found, "trace": str(run.trace_id) if run is not None else None}


def starlette_app(**options: Any) -> Starlette:
    async def item(request: Request) -> JSONResponse:
        return JSONResponse(_item(request.path_params["item_id"]))

    async def status(request: Request) -> PlainTextResponse:
        return PlainTextResponse("s", status_code=int(request.path_params["code"]))

    async def fail(request: Request) -> PlainTextResponse:
        raise RuntimeError("boom")

    async def stream(request: Request) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(3):
                yield CHUNK

        return StreamingResponse(chunks())

    async def health(request: Request) -> PlainTextResponse:
        lookup("health")
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[
            Route("/items/{item_id}", item),
            Route("/status/{code}", status),
            Route("/fail", fail),
            Route("/stream", stream),
            Route("/health", health),
        ]
    )
    app.add_middleware(AsgiTracing, **options)
    return app


def flask_app(**options: Any) -> Flask:
    app = Flask("conformance")

    @app.route("/items/<item_id>")
    def item(item_id: str) -> dict[str, Any]:
        return _item(item_id)

    @app.route("/status/<code>")
    def status(code: str) -> tuple[str, int]:
        return "s", int(code)

    @app.route("/fail")
    def fail() -> str:
        raise RuntimeError("boom")

    @app.route("/stream")
    def stream() -> Response:
        def chunks() -> Iterator[bytes]:
            for _ in range(3):
                yield CHUNK

        return Response(chunks())

    @app.route("/health")
    def health() -> str:
        lookup("health")
        return "ok"

    app.wsgi_app = WsgiTracing(app.wsgi_app, **options)  # type: ignore[method-assign]
    return app


def aiohttp_app(**options: Any) -> web.Application:
    routes = web.RouteTableDef()

    @routes.get("/items/{item_id}")
    async def item(request: web.Request) -> web.Response:
        return web.json_response(_item(request.match_info["item_id"]))

    @routes.get("/status/{code}")
    async def status(request: web.Request) -> web.Response:
        return web.Response(text="s", status=int(request.match_info["code"]))

    @routes.get("/fail")
    async def fail(request: web.Request) -> web.Response:
        raise RuntimeError("boom")

    @routes.get("/stream")
    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(3):
            await response.write(CHUNK)
        return response

    @routes.get("/health")
    async def health(request: web.Request) -> web.Response:
        lookup("health")
        return web.Response(text="ok")

    app = web.Application()
    app.add_routes(routes)
    setup_tracing(app, **options)
    return app


def _django_urls() -> None:
    def item(request: Any, item_id: str) -> JsonResponse:
        return JsonResponse(_item(item_id))

    async def item_async(request: Any, item_id: str) -> JsonResponse:
        return JsonResponse(_item(item_id))

    def status(request: Any, code: str) -> HttpResponse:
        return HttpResponse("s", status=int(code))

    def fail(request: Any) -> HttpResponse:
        raise RuntimeError("boom")

    async def fail_async(request: Any) -> HttpResponse:
        raise RuntimeError("boom")

    def stream(request: Any) -> StreamingHttpResponse:
        return StreamingHttpResponse(CHUNK for _ in range(3))

    async def stream_async(request: Any) -> StreamingHttpResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(3):
                yield CHUNK

        return StreamingHttpResponse(chunks())

    def health(request: Any) -> HttpResponse:
        lookup("health")
        return HttpResponse("ok")

    # Sync views under WSGI, async ones under ASGI (the status view stays sync: Django runs it
    # in a thread, which must keep the run current too).
    for name, views in (
        ("conformance_django_sync", (item, fail, stream)),
        ("conformance_django_async", (item_async, fail_async, stream_async)),
    ):
        urls_module(
            name,
            [
                path("items/<item_id>", views[0]),
                path("status/<code>", status),
                path("fail", views[1]),
                path("stream", views[2]),
                path("health", health),
            ],
        )


_django_urls()
_MIDDLEWARE = ["tracestitch.middleware.django.TracingMiddleware"]


def django_wsgi_app(**options: Any) -> Any:
    return handler("wsgi", "conformance_django_sync", _MIDDLEWARE, **options)


def django_asgi_app(**options: Any) -> Any:
    return handler("asgi", "conformance_django_async", _MIDDLEWARE, **options)

"""The collector's Starlette app: LangSmith ingest API, query API and the viewer's pages.

>>> from tracestitch.collector import Store, create_app
>>> app = create_app(Store("traces.db"), api_key="secret")  # doctest: +SKIP
>>> uvicorn.run(app, host="127.0.0.1", port=8700)  # doctest: +SKIP

The routes live in :mod:`.ingest_api` and :mod:`.query_api`; this module wires them together
with the viewer's pages and the security headers every response carries.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .bodies import BodyBudget
from .ingest_api import ingest_routes
from .otlp_ingest import otlp_routes
from .query_api import query_routes
from .sdk_api import sdk_routes
from .trace_store import TraceStore
from .web import BodyReader, Guard, Handler, Unsupported, json_response

__all__ = ["DEFAULT_MAX_BODY_BYTES", "create_app"]

STATIC_DIR = Path(__file__).parent / "static"
DEFAULT_MAX_BODY_BYTES = 20 * 1024 * 1024
# Nothing is loaded from anywhere but this origin, and no inline script can run: the viewer's
# second line of defence should a run's content ever reach the DOM as markup.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


class _SecurityHeaders:
    """Pure ASGI middleware adding the CSP and friends to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


_UUID_RE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


class _RequestCounter:
    """Pure ASGI middleware counting answered requests as ``"METHOD /path STATUS"`` (ids in
    the path as ``{id}``): ``GET /api/stats`` shows them, so a test (or an operator) can see
    that a client did not retry, and which endpoints it used."""

    def __init__(self, app: ASGIApp, counts: Counter[str]) -> None:
        self.app = app
        self.counts = counts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = _UUID_RE.sub("{id}", scope.get("path", ""))[:200]

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.counts[f"{scope['method']} {path} {message['status']}"] += 1
            await send(message)

        await self.app(scope, receive, counting_send)


def _page(name: str) -> Handler:
    async def serve(request: Request) -> Response:
        return FileResponse(STATIC_DIR / name, media_type="text/html")

    return serve


_ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


async def _unsupported(request: Request) -> Response:
    # A LangSmith SDK call this collector does not implement is answered 501, which the SDKs do
    # not retry (a 404 on /feedback made the Python SDK back off for eight minutes). A browser
    # asking for a page that is not there gets the ordinary 404.
    if request.method in ("GET", "HEAD") and "text/html" in request.headers.get("accept", ""):
        return Response("not found", status_code=404, media_type="text/plain")
    raise Unsupported(
        f"the tracestitch collector does not implement {request.method} {request.url.path}:"
        " it speaks LangSmith's run ingest, run query, projects (/sessions) and feedback APIs,"
        " and OTLP/HTTP traces (/v1/traces, /otel/v1/traces)"
    )


def create_app(
    store: TraceStore,
    *,
    api_key: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_decompressed_bytes: int | None = None,
    max_body_memory_bytes: int | None = None,
    close_store: bool = False,
) -> Starlette:
    """Build the collector app over ``store``.

    ``api_key``: when set, ingest and query endpoints require it in ``x-api-key`` (the viewer's
    pages themselves hold no data and stay open). ``max_body_bytes`` caps a request body as sent;
    ``max_decompressed_bytes`` (default 5x that) caps what a compressed body may expand to.
    ``max_body_memory_bytes`` caps the memory the bodies of all requests in flight hold
    together: as received, decompressed (with the decoder's window) and copied for parsing. The
    default leaves room for the largest request the two caps allow; a request finding the
    budget spent by others is answered 503 with Retry-After.
    """
    decompressed_limit = max_decompressed_bytes or max_body_bytes * 5
    # Worst single request: the raw body, its decompressed text, a zstd window as large as that
    # text, and the parser's copy of it.
    budget = BodyBudget(max_body_memory_bytes or max_body_bytes + 3 * decompressed_limit)
    guard = Guard(api_key)
    # Requests acknowledged per endpoint/encoding: lets tests prove which path an SDK took.
    stats: Counter[str] = Counter()
    requests: Counter[str] = Counter()

    async def show_stats(request: Request) -> Response:
        return json_response({"ingest": dict(stats), "requests": dict(requests)})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        if close_store:
            store.close()

    bodies = BodyReader(budget, max_body_bytes, decompressed_limit)
    routes: list[BaseRoute] = [
        *ingest_routes(store, guard, bodies=bodies, stats=stats),
        *sdk_routes(store, guard, bodies),
        *otlp_routes(store, guard, bodies, stats),
        *query_routes(store, guard),
        Route("/api/stats", guard(show_stats), methods=["GET"]),
        Route("/", _page("index.html"), methods=["GET"]),
        Route("/traces/{trace_id}", _page("trace.html"), methods=["GET"]),
        Route("/services", _page("services.html"), methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        Route("/{path:path}", guard(_unsupported, auth=False), methods=_ALL_METHODS),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.add_middleware(_SecurityHeaders)
    app.add_middleware(_RequestCounter, counts=requests)
    app.state.store = store
    app.state.stats = stats
    app.state.requests = requests
    app.state.body_budget = budget
    return app

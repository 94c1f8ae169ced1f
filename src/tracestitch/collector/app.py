"""The collector's Starlette app: LangSmith ingest API, query API and the viewer's pages.

>>> from tracestitch.collector import Store, create_app
>>> app = create_app(Store("traces.db"), api_key="secret")  # doctest: +SKIP
>>> uvicorn.run(app, host="127.0.0.1", port=8700)  # doctest: +SKIP

The routes live in :mod:`.ingest_api` and :mod:`.query_api`; this module wires them together
with the viewer's pages and the security headers every response carries.
"""

from __future__ import annotations

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
from .query_api import query_routes
from .store import Store
from .web import Guard, Handler

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


def _page(name: str) -> Handler:
    async def serve(request: Request) -> Response:
        return FileResponse(STATIC_DIR / name, media_type="text/html")

    return serve


def create_app(
    store: Store,
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

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        if close_store:
            store.close()

    routes: list[BaseRoute] = [
        *ingest_routes(
            store,
            guard,
            max_body_bytes=max_body_bytes,
            decompressed_limit=decompressed_limit,
            budget=budget,
            stats=stats,
        ),
        *query_routes(store, guard),
        Route("/", _page("index.html"), methods=["GET"]),
        Route("/traces/{trace_id}", _page("trace.html"), methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.add_middleware(_SecurityHeaders)
    app.state.store = store
    app.state.stats = stats
    app.state.body_budget = budget
    return app

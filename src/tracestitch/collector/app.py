"""The collector's Starlette app: LangSmith ingest API, query API and the viewer's pages.

>>> from tracestitch.collector import Store, create_app
>>> app = create_app(Store("traces.db"), api_key="secret")  # doctest: +SKIP
>>> uvicorn.run(app, host="127.0.0.1", port=8700)  # doctest: +SKIP

SQLite work and body parsing run in Starlette's thread pool, so a large batch never stalls the
event loop, and a request is answered 2xx only once its transaction has committed.
"""

from __future__ import annotations

import hmac
import importlib
import logging
import math
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .ingest import IngestError, RunOp, parse_time_us, validate_op
from .multipart import (
    BodyTooLarge,
    UnsupportedEncoding,
    decode_body,
    parse_multipart,
    zstd_available,
)
from .query import STATUSES, TraceFilter
from .store import Store
from .tree import build_trace, run_view

__all__ = ["DEFAULT_MAX_BODY_BYTES", "create_app"]

logger = logging.getLogger(__name__)

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


class _HTTPError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def create_app(
    store: Store,
    *,
    api_key: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_decompressed_bytes: int | None = None,
    close_store: bool = False,
) -> Starlette:
    """Build the collector app over ``store``.

    ``api_key``: when set, ingest and query endpoints require it in ``x-api-key`` (the viewer's
    pages themselves hold no data and stay open). ``max_body_bytes`` caps a request body as sent;
    ``max_decompressed_bytes`` (default 5x that) caps what a compressed body may expand to.
    """
    decompressed_limit = max_decompressed_bytes or max_body_bytes * 5
    key = api_key.encode() if api_key else None

    def check_auth(request: Request) -> None:
        if key is None:
            return
        given = request.headers.get("x-api-key", "").encode()
        # compare_digest: the time taken must not reveal how much of the key matched.
        if not hmac.compare_digest(given, key):
            raise _HTTPError(401, "missing or wrong x-api-key header")

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
            raise _HTTPError(413, f"request body over the {max_body_bytes}-byte limit")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                raise _HTTPError(413, f"request body over the {max_body_bytes}-byte limit")
            chunks.append(chunk)
        return b"".join(chunks)

    def decoded(request: Request, body: bytes) -> bytes:
        return decode_body(body, request.headers.get("content-encoding"), decompressed_limit)

    def parse_json(request: Request, body: bytes) -> Any:
        try:
            return orjson.loads(decoded(request, body))
        except orjson.JSONDecodeError as exc:
            raise IngestError(f"body is not valid JSON: {exc}") from None

    def endpoint(
        handler: Callable[[Request], Awaitable[Response]], *, auth: bool = True
    ) -> Callable[[Request], Awaitable[Response]]:
        async def wrapped(request: Request) -> Response:
            try:
                if auth:
                    check_auth(request)
                return await handler(request)
            except _HTTPError as exc:
                return _error(exc.status, exc.detail)
            except IngestError as exc:
                return _error(422, str(exc))
            except BodyTooLarge as exc:
                return _error(413, str(exc))
            except UnsupportedEncoding as exc:
                return _error(415, str(exc))

        return wrapped

    # Requests acknowledged per endpoint/encoding: lets tests prove which path an SDK took.
    stats: Counter[str] = Counter()

    async def ingest(
        request: Request, ops: list[RunOp], attachments: list[Any] | None = None
    ) -> Response:
        count = await run_in_threadpool(store.ingest, ops, attachments or [])
        route = request.url.path.rsplit("/", 1)[-1] if request.method == "POST" else "patch"
        stats[route] += 1
        stats[f"{route}:{request.headers.get('content-encoding', 'identity')}"] += 1
        return _json({"accepted": count})

    # -- ingest ------------------------------------------------------------------------------------

    async def info(request: Request) -> Response:
        return _json(
            {
                "version": "0.0.0-tracestitch",
                "license_expiration_time": None,
                "batch_ingest_config": {
                    "use_multipart_endpoint": True,
                    "size_limit": 100,
                    "size_limit_bytes": max_body_bytes,
                    "scale_up_qsize_trigger": 1000,
                    "scale_up_nthreads_limit": 16,
                    "scale_down_nempty_trigger": 4,
                },
                "instance_flags": {"zstd_compression_enabled": zstd_available()},
            }
        )

    async def post_run(request: Request) -> Response:
        body = await read_body(request)

        def parse() -> list[RunOp]:
            return [validate_op("post", parse_json(request, body), "run")]

        return await ingest(request, await run_in_threadpool(parse))

    async def patch_run(request: Request) -> Response:
        body = await read_body(request)
        run_id = request.path_params["run_id"]

        def parse() -> list[RunOp]:
            return [validate_op("patch", parse_json(request, body), "run", run_id=run_id)]

        return await ingest(request, await run_in_threadpool(parse))

    async def batch(request: Request) -> Response:
        body = await read_body(request)

        def parse() -> list[RunOp]:
            doc = parse_json(request, body)
            if not isinstance(doc, dict):
                raise IngestError('expected a JSON object {"post": [...], "patch": [...]}')
            unknown = set(doc) - {"post", "patch"}
            if unknown:
                raise IngestError(f"unknown batch keys {sorted(unknown)}; expected post, patch")
            ops: list[RunOp] = []
            for kind in ("post", "patch"):
                items = doc.get(kind) or []
                if not isinstance(items, list):
                    raise IngestError(f"{kind}: expected a list of runs")
                ops += [validate_op(kind, item, f"{kind}[{i}]") for i, item in enumerate(items)]
            return ops

        return await ingest(request, await run_in_threadpool(parse))

    async def multipart(request: Request) -> Response:
        body = await read_body(request)
        ctype = request.headers.get("content-type", "")
        form = await run_in_threadpool(lambda: parse_multipart(decoded(request, body), ctype))
        return await ingest(request, form.ops, form.attachments)

    # -- query ---------------------------------------------------------------------------------

    def q_time(request: Request, name: str) -> int | None:
        value = request.query_params.get(name)
        if not value:
            return None
        try:
            seconds = float(value)
        except ValueError:
            try:
                return parse_time_us(value)
            except (ValueError, OverflowError):
                raise _HTTPError(422, f"{name}: expected ISO-8601 or epoch seconds") from None
        if not math.isfinite(seconds):
            raise _HTTPError(422, f"{name}: expected ISO-8601 or epoch seconds")
        return int(seconds * 1_000_000)

    def q_num(
        request: Request, name: str, default: float | None, lo: float, hi: float
    ) -> float | None:
        value = request.query_params.get(name)
        if not value:
            return default
        try:
            number = float(value)
        except ValueError:
            raise _HTTPError(422, f"{name}: expected a number") from None
        if not lo <= number <= hi:
            raise _HTTPError(422, f"{name}: must be between {lo:g} and {hi:g}")
        return number

    def q_uuid(value: str, what: str) -> str:
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise _HTTPError(422, f"{what}: {value[:60]!r} is not a UUID") from None

    async def list_traces(request: Request) -> Response:
        params = request.query_params
        status = params.get("status") or None
        if status is not None and status not in STATUSES:
            raise _HTTPError(422, f"status: expected one of {', '.join(STATUSES)}")
        min_ms = q_num(request, "min_duration_ms", None, 0, 1e12)
        flt = TraceFilter(
            project=params.get("project") or None,
            service=params.get("service") or None,
            name=params.get("name") or None,
            status=status,
            start_gte_us=q_time(request, "start_gte"),
            start_lte_us=q_time(request, "start_lte"),
            min_duration_us=int(min_ms * 1000) if min_ms is not None else None,
            text=params.get("q") or None,
            limit=int(q_num(request, "limit", 50, 1, 500) or 50),
            offset=int(q_num(request, "offset", 0, 0, 1e12) or 0),
        )
        return _json(await run_in_threadpool(store.list_traces, flt))

    async def get_trace(request: Request) -> Response:
        trace_id = q_uuid(request.path_params["trace_id"], "trace_id")

        def load() -> dict[str, Any] | None:
            runs = store.trace_runs(trace_id)
            if not runs:
                return None
            return build_trace(trace_id, runs, store.trace_summary(trace_id))

        doc = await run_in_threadpool(load)
        if doc is None:
            raise _HTTPError(404, f"no trace {trace_id} in this collector")
        return _json(doc)

    async def get_run(request: Request) -> Response:
        run_id = q_uuid(request.path_params["run_id"], "run_id")
        children = request.query_params.get("include_children", "").lower() in ("1", "true", "yes")

        def load() -> dict[str, Any] | None:
            run = store.get_run(run_id)
            if run is None:
                return None
            view = _schema_view(run_view(run))
            if children:
                view["child_runs"] = [_schema_view(run_view(c)) for c in store.child_runs(run_id)]
                view["child_run_ids"] = [c["id"] for c in view["child_runs"]]
            return view

        doc = await run_in_threadpool(load)
        if doc is None:
            raise _HTTPError(404, f"no run {run_id} in this collector")
        return _json(doc)

    async def get_attachment(request: Request) -> Response:
        run_id = q_uuid(request.path_params["run_id"], "run_id")
        found = await run_in_threadpool(store.get_attachment, run_id, request.path_params["name"])
        if found is None:
            raise _HTTPError(404, "no such attachment")
        # Served as a download, never rendered: its content type is whatever a client claimed.
        return Response(
            found[1],
            media_type="application/octet-stream",
            headers={"content-disposition": "attachment", "x-original-content-type": found[0]},
        )

    # -- viewer --------------------------------------------------------------------------------

    async def index_page(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    async def trace_page(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "trace.html", media_type="text/html")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        if close_store:
            store.close()

    routes = [
        Route("/info", endpoint(info, auth=False), methods=["GET"]),
        Route("/runs", endpoint(post_run), methods=["POST"]),
        Route("/runs/batch", endpoint(batch), methods=["POST"]),
        Route("/runs/multipart", endpoint(multipart), methods=["POST"]),
        Route("/runs/{run_id}", endpoint(patch_run), methods=["PATCH"]),
        Route("/api/traces", endpoint(list_traces), methods=["GET"]),
        Route("/api/traces/{trace_id}", endpoint(get_trace), methods=["GET"]),
        Route("/api/runs/{run_id}", endpoint(get_run), methods=["GET"]),
        Route("/api/runs/{run_id}/attachments/{name}", endpoint(get_attachment), methods=["GET"]),
        Route("/", index_page, methods=["GET"]),
        Route("/traces/{trace_id}", trace_page, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.add_middleware(_SecurityHeaders)
    app.state.store = store
    app.state.stats = stats
    return app


def _schema_view(view: dict[str, Any]) -> dict[str, Any]:
    """Pass a run view through the core ``tracestitch.schemas.Run`` model when it is available.

    The model checks the shape we promise; our extra keys (``service``, ``url``...) ride along.
    A run the model rejects (e.g. only its patch has arrived) is returned as is.
    """
    try:
        # Imported by name: the core schema module may be absent in a partial install.
        run_model = getattr(importlib.import_module("tracestitch.schemas"), "Run", None)
    except ImportError:
        return view
    if run_model is None:
        return view
    try:
        checked: dict[str, Any] = run_model.model_validate(view).model_dump(mode="json")
    except Exception as exc:  # pydantic.ValidationError; the view is still useful
        logger.debug("run %s does not fit the Run schema: %s", view.get("id"), exc)
        return view
    # Our values win (floats stay floats); the model contributes any field we did not set.
    return {**checked, **view}

"""HTTP plumbing shared by the collector's routes: the API-key check, errors as JSON responses,
and reading request bodies within the one memory budget."""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .bodies import (
    BodyBudget,
    BodyLease,
    BodyTooLarge,
    Overloaded,
    UnsupportedEncoding,
    decode_body,
)
from .ingest import IngestError

__all__ = ["BodyReader", "Guard", "HTTPError", "Handler", "Unsupported", "json_response"]

Handler = Callable[[Request], Awaitable[Response]]


class HTTPError(Exception):
    """Raised by a route to answer with ``status`` and ``{"detail": detail}``."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class Unsupported(Exception):
    """A request for something the collector does not implement (answered 501, which the
    LangSmith SDKs do not retry, so a caller learns at once instead of backing off)."""


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def json_response(data: Any, status: int = 200) -> Response:
    """``data`` as JSON (orjson: fast, and it serialises what the store returns as is)."""
    try:
        body = orjson.dumps(data)
    except orjson.JSONEncodeError:
        # Ingest refuses runs nested too deep for orjson to write back (ingest.MAX_RUN_DEPTH),
        # but a database written before that limit may hold some: the standard library's
        # encoder goes several hundred levels deeper, so they can still be read.
        body = json.dumps(data, ensure_ascii=False, default=str).encode()
    return Response(body, status_code=status, media_type="application/json")


class Guard:
    """Wraps route handlers: checks ``x-api-key`` (when the collector has a key) and turns the
    collector's errors into JSON error responses (422 bad input, 413 too large, 415 encoding,
    501 not implemented, 503 with Retry-After while other requests hold the memory budget for
    bodies)."""

    def __init__(self, api_key: str | None) -> None:
        self._key = api_key.encode() if api_key else None

    def check_auth(self, request: Request) -> None:
        if self._key is None:
            return
        given = request.headers.get("x-api-key")
        if not given:
            raise HTTPError(401, "missing x-api-key header: this collector requires its API key")
        # compare_digest: the time taken must not reveal how much of the key matched.
        if not hmac.compare_digest(given.encode(), self._key):
            raise HTTPError(401, "x-api-key rejected: it is not this collector's API key")

    def sign(self, path: str) -> str:
        """``path`` with a signature that lets it be fetched without the key (LangSmith's
        "presigned" attachment URLs: the SDK downloads them with no credentials). The
        signature is an HMAC of the path under the API key; unchanged without a key."""
        if self._key is None:
            return path
        return f"{path}?sig={hmac.new(self._key, path.encode(), 'sha256').hexdigest()}"

    def _signed(self, request: Request) -> bool:
        if self._key is None:
            return True
        # The raw path, as signed: the percent-encoded form the URL was handed out in.
        path = request.scope.get("raw_path", b"").decode("latin-1") or request.url.path
        expected = hmac.new(self._key, path.encode(), "sha256").hexdigest()
        return hmac.compare_digest(request.query_params.get("sig", "").encode(), expected.encode())

    def __call__(self, handler: Handler, *, auth: bool = True, signed: bool = False) -> Handler:
        """``auth``: the route needs the key; ``signed``: a valid :meth:`sign` signature will
        do instead."""

        async def wrapped(request: Request) -> Response:
            try:
                if auth and not (
                    signed and "sig" in request.query_params and self._signed(request)
                ):
                    self.check_auth(request)
                return await handler(request)
            except HTTPError as exc:
                return _error(exc.status, exc.detail)
            except IngestError as exc:
                return _error(422, str(exc))
            except BodyTooLarge as exc:
                return _error(413, str(exc))
            except UnsupportedEncoding as exc:
                return _error(415, str(exc))
            except Unsupported as exc:
                return _error(501, str(exc))
            except Overloaded as exc:
                return _error(503, str(exc), {"retry-after": str(exc.retry_after)})

        return wrapped


class BodyReader:
    """Reads request bodies for every route that takes one, so they all draw on one
    :class:`~.bodies.BodyBudget`: at most ``max_body_bytes`` as sent, at most
    ``decompressed_limit`` once decoded."""

    def __init__(self, budget: BodyBudget, max_body_bytes: int, decompressed_limit: int) -> None:
        self.budget = budget
        self.max_body_bytes = max_body_bytes
        self.decompressed_limit = decompressed_limit

    async def read(self, request: Request, lease: BodyLease) -> bytearray:
        """The raw body, charged to ``lease``; 413 past ``max_body_bytes``."""
        limit = self.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise HTTPError(413, f"request body over the {limit}-byte limit")
        body = bytearray()  # grown in place: no second copy of the body to join chunks
        async for chunk in request.stream():
            if len(body) + len(chunk) > limit:
                raise HTTPError(413, f"request body over the {limit}-byte limit")
            lease.take(len(chunk))
            body += chunk
        return body

    def decoded(self, request: Request, body: bytearray, lease: BodyLease) -> bytes | bytearray:
        """``body`` with its Content-Encoding undone (call in a worker thread: it may wait for
        the budget); the copy a parser makes of it is charged too."""
        encoding = request.headers.get("content-encoding")
        text = decode_body(body, encoding, self.decompressed_limit, lease)
        # Parsing copies the text once more (orjson parses a padded copy; the multipart parser
        # copies each part out): that is held too, so charge it before it happens.
        lease.take(len(text), wait=True)
        return text

    async def json(self, request: Request) -> Any:
        """A small JSON body (a query, a feedback document), read within the budget."""
        from starlette.concurrency import run_in_threadpool

        with self.budget.lease() as lease:
            body = await self.read(request, lease)

            def parse() -> Any:
                try:
                    return orjson.loads(self.decoded(request, body, lease))
                except orjson.JSONDecodeError as exc:
                    raise IngestError(f"body is not valid JSON: {exc}") from None

            return await run_in_threadpool(parse)

"""HTTP plumbing shared by the collector's routes: the API-key check, errors as JSON responses."""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .bodies import BodyTooLarge, Overloaded, UnsupportedEncoding
from .ingest import IngestError

__all__ = ["Guard", "HTTPError", "Handler", "json_response"]

Handler = Callable[[Request], Awaitable[Response]]


class HTTPError(Exception):
    """Raised by a route to answer with ``status`` and ``{"detail": detail}``."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


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
    503 with Retry-After while other requests hold the memory budget for bodies)."""

    def __init__(self, api_key: str | None) -> None:
        self._key = api_key.encode() if api_key else None

    def check_auth(self, request: Request) -> None:
        if self._key is None:
            return
        given = request.headers.get("x-api-key", "").encode()
        # compare_digest: the time taken must not reveal how much of the key matched.
        if not hmac.compare_digest(given, self._key):
            raise HTTPError(401, "missing or wrong x-api-key header")

    def __call__(self, handler: Handler, *, auth: bool = True) -> Handler:
        async def wrapped(request: Request) -> Response:
            try:
                if auth:
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
            except Overloaded as exc:
                return _error(503, str(exc), {"retry-after": str(exc.retry_after)})

        return wrapped

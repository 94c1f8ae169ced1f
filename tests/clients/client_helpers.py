"""Shared pieces of the client tests: a loopback echo service, and ways to make a request to a
public host name (``api.openai.com``) land on it, so no traffic ever leaves the machine."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import aiohttp
import httpx
import requests
from aiohttp.abc import AbstractResolver, ResolveResult
from requests.adapters import HTTPAdapter

PUBLIC_HOST = "api.openai.com"
TRACE_HEADERS = ("langsmith-trace", "traceparent", "tracestate")


def echo_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """WSGI: ``/redirect?to=URL[&status=302]`` redirects; ``/status/<code>`` answers with that
    code; every other path answers 200. Bodies are JSON: the path and the request headers
    (lowercased names)."""
    path = environ.get("PATH_INFO", "/")
    query = parse_qs(environ.get("QUERY_STRING", ""))
    headers = {
        key[5:].replace("_", "-").lower(): value
        for key, value in environ.items()
        if key.startswith("HTTP_")
    }
    if path == "/redirect":
        status = int(query.get("status", ["302"])[0])
        start_response(
            f"{status} Redirect", [("Location", query["to"][0]), ("Content-Length", "0")]
        )
        return [b""]
    code = 200
    if path.startswith("/status/"):
        code = int(path.rsplit("/", 1)[1])
    body = json.dumps({"path": path, "headers": headers}).encode()
    start_response(
        f"{code} Echo",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]


def loopback_port(base_url: str) -> int:
    port = urlsplit(base_url).port
    assert port is not None
    return port


def _rewrite(url: str, port: int) -> str:
    parts = urlsplit(url)
    if parts.hostname != PUBLIC_HOST:
        return url
    return urlunsplit((parts.scheme, f"127.0.0.1:{port}", parts.path, parts.query, ""))


class RewritingTransport(httpx.BaseTransport):
    """Sends requests for ``PUBLIC_HOST`` to the loopback server instead (sits *under* the
    tracing transport, so tracing sees the public name)."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.url = httpx.URL(_rewrite(str(request.url), self._port))
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()


class AsyncRewritingTransport(httpx.AsyncBaseTransport):
    def __init__(self, port: int) -> None:
        self._port = port
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.url = httpx.URL(_rewrite(str(request.url), self._port))
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


class RewritingAdapter(HTTPAdapter):
    def __init__(self, port: int) -> None:
        super().__init__()
        self._port = port

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        request.url = _rewrite(request.url or "", self._port)
        return super().send(request, *args, **kwargs)


class LoopbackResolver(AbstractResolver):
    """Resolves every name to 127.0.0.1 (for aiohttp sessions)."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host,
                host="127.0.0.1",
                port=port,
                family=socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]

    async def close(self) -> None:
        return None


def loopback_connector() -> aiohttp.TCPConnector:
    return aiohttp.TCPConnector(resolver=LoopbackResolver())


def trace_headers(echoed: dict[str, Any]) -> dict[str, str]:
    """The trace headers (and baggage) an echo response says the server received."""
    headers: dict[str, str] = echoed["headers"]
    return {k: v for k, v in headers.items() if k in (*TRACE_HEADERS, "baggage")}

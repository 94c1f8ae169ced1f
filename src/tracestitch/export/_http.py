"""A minimal kept-alive HTTP/1.1 POST client on the standard library's ``http.client``.

Why not httpx or requests: the export worker is part of the core install, whose only
dependencies are pydantic and orjson; it sends one POST at a time from one thread, which is
exactly what a single ``http.client`` connection does well. Keeping it alive saves a TCP (and
TLS) handshake per batch.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from tracestitch.export.sink import DeliveryError

if TYPE_CHECKING:
    import http.client

# http.client and ssl (~10 ms of imports together) are imported by the first request, on the
# sender thread, not when a sink is built (which may happen on a request's path).

__all__ = ["HTTPTarget", "Response"]


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def raise_for_status(self, accept: tuple[int, ...] = ()) -> None:
        """Raise the :class:`DeliveryError` a non-2xx answer (not in ``accept``) means."""
        if 200 <= self.status < 300 or self.status in accept:
            return
        detail = self.body[:200].decode("utf-8", "replace")
        raise DeliveryError.from_status(self.status, detail, self.headers.get("Retry-After"))


class HTTPTarget:
    """One base URL and one kept-alive connection to it. Not thread-safe (one sender)."""

    def __init__(self, base_url: str, *, timeout: float = 10.0) -> None:
        parts = urlsplit(base_url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.base_path = parts.path
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}{self.base_path}"

    def __repr__(self) -> str:
        return f"HTTPTarget({self.url!r})"

    def _connect(self) -> http.client.HTTPConnection:
        import http.client

        conn: http.client.HTTPConnection
        if self.scheme == "https":
            import ssl

            conn = http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout, context=ssl.create_default_context()
            )
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        conn.connect()
        # http.client writes headers and body in separate sends; with Nagle on, the body then
        # waits for the server's delayed ACK of the headers (~40 ms per request). urllib3 sets
        # the same option for the same reason.
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def reset_after_fork(self) -> None:
        """Forget the connection inherited from the parent (its socket is the parent's)."""
        self._conn = None

    def post(self, path: str, body: bytes, headers: Mapping[str, str]) -> Response:
        """POST ``body``; a connection-level failure raises a retryable :class:`DeliveryError`.

        A kept-alive connection the server has since closed fails on reuse before the server
        read anything, so that one case is retried at once on a fresh connection.
        """
        import http.client

        full_path = self.base_path + path
        for fresh_retry in (False, True):
            reused = self._conn is not None
            try:
                conn = self._conn or self._connect()
                self._conn = conn
                conn.request("POST", full_path, body=body, headers=dict(headers))
                resp = conn.getresponse()
                data = resp.read()
            except (
                http.client.RemoteDisconnected,
                BrokenPipeError,
                ConnectionResetError,
            ) as exc:
                self.close()
                if reused and not fresh_retry:
                    continue
                raise DeliveryError(f"{self.url}: {type(exc).__name__}") from None
            except (OSError, http.client.HTTPException) as exc:  # incl. timeouts
                self.close()
                raise DeliveryError(f"{self.url}: {type(exc).__name__}: {exc}") from None
            if resp.will_close:
                self.close()
            return Response(resp.status, resp.headers, data)
        raise AssertionError("unreachable")  # pragma: no cover

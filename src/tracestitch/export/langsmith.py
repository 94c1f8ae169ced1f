"""``LangSmithSink``: the LangSmith ingest API, spoken to LangSmith or the embedded collector.

``POST {endpoint}/runs/batch`` with ``{"post": [...], "patch": [...]}`` for plain runs, and
``POST {endpoint}/runs/multipart`` (parts ``post.{id}``, ``post.{id}.inputs`` ...,
``attachment.{id}.{name}``) when a batch carries attachments or ``mode="multipart"``; auth by
``x-api-key``. Run dicts are split and laid out exactly as the ``langsmith`` SDK does it (see
:mod:`tracestitch.export.wire`); ``tests/export/test_langsmith.py`` compares them with what the
SDK itself sends.

Example::

    sink = LangSmithSink("https://api.smith.langchain.com", api_key=os.environ["LANGSMITH_API_KEY"])
    exporter = BatchExporter(sink, spool="/var/tmp/tracestitch")
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Literal

from tracestitch.export._http import HTTPTarget, Response
from tracestitch.export.sink import DeliveryError
from tracestitch.export.wire import WireOp, batch_body, compress, multipart_body, zstd_available

__all__ = ["LangSmithSink"]

logger = logging.getLogger("tracestitch.export")

Mode = Literal["auto", "batch", "multipart"]
Compression = Literal["auto", "gzip", "zstd", "none"]

#: Small bodies are not worth the CPU: compression pays off from about a kilobyte of JSON.
MIN_COMPRESS_BYTES = 1024


class _Endpoint:
    """One write target. The key lives here and nowhere else: not in reprs, logs or errors."""

    __slots__ = ("_api_key", "compression", "mode", "target")

    def __init__(self, url: str, api_key: str | None, timeout: float, compression: str) -> None:
        self.target = HTTPTarget(url, timeout=timeout)
        self._api_key = api_key
        self.compression = compression
        self.mode: Mode = "auto"

    def __repr__(self) -> str:
        return f"<endpoint {self.target.url}>"

    def headers(self, content_type: str, encoding: str | None) -> dict[str, str]:
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        if self._api_key:
            headers["x-api-key"] = self._api_key
        if encoding:
            headers["Content-Encoding"] = encoding
        return headers


class LangSmithSink:
    """Delivers batches to a LangSmith-compatible ingest endpoint.

    - ``endpoint``: the API base URL (``https://api.smith.langchain.com``,
      ``http://127.0.0.1:1984`` for ``tracestitch serve``).
    - ``api_key``: sent as ``x-api-key``; never logged or shown in a repr.
    - ``mode``: ``"auto"`` uses ``/runs/batch`` unless a batch has attachments, then
      ``/runs/multipart`` (falling back to batch, without attachments, on a 404);
      ``"batch"``/``"multipart"`` force one.
    - ``compression``: ``"auto"`` (zstd if the ``zstandard`` package is importable, else gzip),
      ``"gzip"``, ``"zstd"`` or ``"none"``. A 415 answer turns it off for that endpoint.
    - ``extra_endpoints``: more ``{url: api_key}`` write targets (like the SDK's
      ``LANGSMITH_RUNS_ENDPOINTS``), from local configuration only; each batch goes to all.
    """

    def __init__(
        self,
        endpoint: str,
        api_key: str | None = None,
        *,
        mode: Mode = "auto",
        compression: Compression = "auto",
        timeout: float = 10.0,
        extra_endpoints: Mapping[str, str | None] | None = None,
    ) -> None:
        if compression == "auto":
            compression = "zstd" if zstd_available() else "gzip"
        elif compression == "zstd" and not zstd_available():
            raise ImportError("compression='zstd' needs the 'zstandard' package")
        self.mode = mode
        self._endpoints = [_Endpoint(endpoint, api_key, timeout, compression)]
        for url, key in (extra_endpoints or {}).items():
            self._endpoints.append(_Endpoint(url, key, timeout, compression))

    def __repr__(self) -> str:
        urls = ", ".join(e.target.url for e in self._endpoints)
        return f"LangSmithSink({urls})"

    @property
    def endpoint(self) -> str:
        return self._endpoints[0].target.url

    def send(self, ops: Sequence[WireOp]) -> None:
        """Deliver ``ops`` to every endpoint; raise :class:`DeliveryError` if one fails (the
        whole batch is then retried everywhere: a repeat is harmless, runs carry ids)."""
        error: DeliveryError | None = None
        for endpoint in self._endpoints:
            try:
                self._send_to(endpoint, ops)
            except DeliveryError as exc:
                if error is None or (exc.retryable and not error.retryable):
                    error = exc
        if error is not None:
            raise error

    def close(self) -> None:
        for endpoint in self._endpoints:
            endpoint.target.close()

    def reset_after_fork(self) -> None:
        """Forget connections inherited from the parent (their sockets are the parent's)."""
        for endpoint in self._endpoints:
            endpoint.target.reset_after_fork()

    # ------------------------------------------------------------------ internals

    def _send_to(self, endpoint: _Endpoint, ops: Sequence[WireOp]) -> None:
        mode = self.mode if self.mode != "auto" else endpoint.mode
        use_multipart = mode == "multipart" or (
            mode == "auto" and any(op.attachments for op in ops)
        )
        if use_multipart:
            body, ctype = multipart_body(ops)
            resp = self._post(endpoint, "/runs/multipart", body, ctype)
            if resp.status == 404 and self.mode == "auto":
                # An older server without multipart: send the runs, losing their attachments.
                endpoint.mode = "batch"
                dropped = sum(len(op.attachments) for op in ops)
                logger.warning(
                    "tracestitch: %r has no /runs/multipart; %d attachment(s) not sent",
                    endpoint,
                    dropped,
                )
                resp = self._post(endpoint, "/runs/batch", batch_body(ops), "application/json")
        else:
            resp = self._post(endpoint, "/runs/batch", batch_body(ops), "application/json")
        if resp.status == 413 and len(ops) > 1:
            # Over the server's body limit: halve until the parts fit.
            half = len(ops) // 2
            self._send_to(endpoint, ops[:half])
            self._send_to(endpoint, ops[half:])
            return
        resp.raise_for_status(accept=(409,))  # 409: the server has these runs already

    def _post(self, endpoint: _Endpoint, path: str, body: bytes, ctype: str) -> Response:
        encoding = None
        data = body
        if endpoint.compression != "none" and len(body) >= MIN_COMPRESS_BYTES:
            encoding = endpoint.compression
            data = compress(body, encoding)
        resp = endpoint.target.post(path, data, endpoint.headers(ctype, encoding))
        if resp.status == 415 and encoding is not None:
            endpoint.compression = "none"
            logger.warning("tracestitch: %r refused %s; sending uncompressed", endpoint, encoding)
            resp = endpoint.target.post(path, body, endpoint.headers(ctype, None))
        return resp

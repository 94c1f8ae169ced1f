"""``OTLPSink``: runs as OpenTelemetry spans, OTLP/HTTP protobuf. What each span carries and how
run ids become span ids: :mod:`tracestitch.export.otlp_request`, which builds the request.

Needs the ``opentelemetry-proto`` package (``pip install 'tracestitch[otlp]'``), imported
when the sink is created, so ``import tracestitch`` never pays for protobuf.

OTLP spans are immutable, so a run is exported once, when it has ended; the inputs of a run
posted at start are kept (bounded) until its patch arrives.

Example::

    exporter = BatchExporter(OTLPSink("http://otel-collector:4318"))
    exporter = BatchExporter(OTLPSink.from_settings(otlp_settings_from_env(os.environ)))
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from tracestitch.export._http import HTTPTarget
from tracestitch.export.otlp_request import (
    DEFAULT_MAX_ATTRIBUTE_BYTES,
    build_request,
    decode_request,
    default_service_name,
    import_proto,
)
from tracestitch.export.wire import WireOp, compress
from tracestitch.version import __version__

if TYPE_CHECKING:
    from tracestitch.export.otel_env import OTLPSettings

# build_request, decode_request and default_service_name live in otlp_request.py; importable
# from here as before.
__all__ = ["OTLPSink", "build_request", "decode_request", "default_service_name"]

_PENDING_LIMIT = 10_000
_TRACES_PATH = "/v1/traces"
_USER_AGENT = f"tracestitch-otlp-exporter-python/{__version__}"


def _split_url(url: str) -> tuple[str, str]:
    """(``scheme://host:port``, path with query) of a traces URL; an empty path is ``/``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    host = parts.hostname
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    origin = f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")
    path = parts.path or "/"
    return origin, f"{path}?{parts.query}" if parts.query else path


class OTLPSink:
    """Sends ended runs as spans to an OTLP/HTTP endpoint.

    ``endpoint`` is a base URL (``http://host:4318``: ``/v1/traces`` is added unless the URL
    already ends with it, like ``OTEL_EXPORTER_OTLP_ENDPOINT``); ``traces_endpoint`` is the
    full traces URL, used as is (like ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``). Give one.
    ``service_name`` names the service of runs that carry none; ``resource_attributes`` go on
    every resource. :meth:`from_settings` builds one from the OTel environment variables.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        traces_endpoint: str | None = None,
        headers: Mapping[str, str] | None = None,
        service_name: str | None = None,
        resource_attributes: Mapping[str, str] | None = None,
        compression: bool = True,
        timeout: float = 10.0,
        max_attribute_bytes: int = DEFAULT_MAX_ATTRIBUTE_BYTES,
    ) -> None:
        import_proto()  # fail here, at configuration, with the install hint
        if (endpoint is None) == (traces_endpoint is None):
            raise TypeError("OTLPSink needs exactly one of endpoint and traces_endpoint")
        if traces_endpoint is None:
            assert endpoint is not None
            base = endpoint.rstrip("/")
            traces_endpoint = base if base.endswith(_TRACES_PATH) else base + _TRACES_PATH
        origin, self._path = _split_url(traces_endpoint)
        self._target = HTTPTarget(origin, timeout=timeout)
        self._headers = dict(headers or {})  # may hold credentials: never in the repr
        self.service_name = service_name
        self.resource_attributes = dict(resource_attributes or {})
        self.compression = compression
        self.max_attribute_bytes = max_attribute_bytes
        # Inputs of runs posted at start, until their patch brings the end (bounded LRU).
        self._pending: OrderedDict[str, dict[str, Any]] = OrderedDict()

    @classmethod
    def from_settings(cls, settings: OTLPSettings, **options: Any) -> OTLPSink:
        """A sink for what :func:`tracestitch.export.otel_env.otlp_settings_from_env` read;
        ``options`` (``max_attribute_bytes`` ...) go to the constructor."""
        return cls(
            traces_endpoint=settings.traces_endpoint,
            headers=settings.headers,
            service_name=settings.service_name,
            resource_attributes=settings.resource_attributes,
            compression=settings.compression != "none",
            timeout=settings.timeout,
            **options,
        )

    @property
    def url(self) -> str:
        """Where spans are POSTed."""
        return f"{self._target.url}{self._path}"

    def __repr__(self) -> str:
        return f"OTLPSink({self.url})"

    def _complete_runs(self, ops: Sequence[WireOp]) -> list[dict[str, Any]]:
        complete: list[dict[str, Any]] = []
        for op in ops:
            run = op.to_dict()
            earlier = self._pending.pop(op.run_id, None)
            if earlier is not None:
                run = {**earlier, **{k: v for k, v in run.items() if v is not None}}
            if run.get("end_time"):
                complete.append(run)
            else:
                self._pending[op.run_id] = run
                if len(self._pending) > _PENDING_LIMIT:
                    self._pending.popitem(last=False)
        return complete

    def send(self, ops: Sequence[WireOp]) -> None:
        runs = self._complete_runs(ops)
        if not runs:
            return
        request = build_request(
            runs,
            service_name=self.service_name,
            resource_attributes=self.resource_attributes,
            max_attribute_bytes=self.max_attribute_bytes,
        )
        body = request.SerializeToString()
        headers = {
            "User-Agent": _USER_AGENT,
            **self._headers,
            "Content-Type": "application/x-protobuf",
        }
        if self.compression:
            body = compress(body, "gzip")
            headers["Content-Encoding"] = "gzip"
        resp = self._target.post(self._path, body, headers)
        # OTLP/HTTP: 429, 502, 503, 504 are the retryable ones; 500 is not, but one more
        # attempt costs little, so the shared rule (5xx retryable) applies.
        resp.raise_for_status()

    def close(self) -> None:
        self._target.close()

    def reset_after_fork(self) -> None:
        self._target.reset_after_fork()

"""requests: a transport adapter that records a client run per request and injects its headers.

::

    import requests
    from tracestitch.clients.requests import TracingAdapter, instrument_session

    session = instrument_session(requests.Session())        # wraps the mounted adapters
    session.mount("http://service-b/", TracingAdapter(max_retries=3))  # or mount one yourself

``Session.resolve_redirects`` calls the adapter mounted for each hop's URL, with a copy of the
request it was given, so each hop is its own client run and its own policy check. The adapter
puts trace headers only on its own copy of the request, never on the one it was handed: the
next hop starts from the caller's headers, so a hop sent by an adapter that does not trace (the
stock ``HTTPAdapter`` mounted for ``https://``, say) or to a destination ``propagate_to``
refuses carries no trace headers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

try:
    import requests
    from requests.adapters import BaseAdapter, HTTPAdapter
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    from tracestitch.clients._common import missing_framework

    raise missing_framework("requests", "requests", exc) from exc

from tracestitch.clients._common import ClientTracer, UrlParts, content_length, split_options

__all__ = ["TracingAdapter", "instrument_session"]


def _hop(request: requests.PreparedRequest) -> requests.PreparedRequest:
    """A shallow copy of ``request`` with headers of its own, for one hop's trace headers.

    Cheaper than ``PreparedRequest.copy()``, which also copies the cookie jar (the Cookie header
    is already in the headers; the adapter never reads the jar).
    """
    hop = object.__new__(type(request))
    hop.__dict__.update(request.__dict__)
    hop.headers = request.headers.copy()
    return hop


def _parts(request: requests.PreparedRequest) -> UrlParts:
    url = urlsplit(request.url or "")
    return (
        request.method or "GET",
        url.scheme,
        url.hostname,
        url.port,
        url.path,
        url.query,
    )


class TracingAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` that traces what it sends.

    Keyword arguments named like :class:`tracestitch.clients.ClientOptions` fields
    (``propagate_to``, ``create_runs``, ...) configure tracing; the rest go to
    ``HTTPAdapter`` (``max_retries``, ``pool_maxsize``, ...). With ``wrapped``, requests are
    sent through that adapter instead (keeping its configuration)::

        session.mount("https://", TracingAdapter(propagate_to="all", max_retries=3))
        session.mount("https://", TracingAdapter(wrapped=MyCustomAdapter()))
    """

    def __init__(self, wrapped: BaseAdapter | None = None, **kwargs: Any) -> None:
        options, adapter_kwargs = split_options(kwargs)
        super().__init__(**adapter_kwargs)
        self._wrapped = wrapped
        self._tracer = ClientTracer(**options)

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float, float] | tuple[float, None] | None = None,
        verify: bool | str = True,
        cert: bytes | str | tuple[bytes | str, bytes | str] | None = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        tracer = self._tracer
        sender = self._wrapped.send if self._wrapped is not None else super().send
        if not tracer.may_trace():
            return sender(request, stream, timeout, verify, cert, proxies)
        # Session copies the request it handed us for the next redirect hop: it must never see
        # this hop's trace headers (see the module docstring).
        request = _hop(request)
        run = tracer.begin(request, _parts, request.headers)
        if run is None:
            return sender(request, stream, timeout, verify, cert, proxies)
        try:
            response = sender(request, stream, timeout, verify, cert, proxies)
        except BaseException as exc:
            tracer.fail(run, exc)
            raise
        # The adapter returns once the headers are in (Session reads the body afterwards),
        # so the size is the declared one.
        tracer.finish(
            run, response.status_code, content_length(response.headers.get("Content-Length"))
        )
        return response

    def close(self) -> None:
        if self._wrapped is not None:
            self._wrapped.close()
        super().close()


def instrument_session(session: requests.Session, **options: Any) -> requests.Session:
    """Wrap every adapter mounted on ``session`` (by default the ``http://`` and ``https://``
    ones) in a :class:`TracingAdapter`, keeping their configuration; returns the session::

        session = instrument_session(requests.Session(), propagate_to=["internal", "*.corp"])
    """
    for prefix, adapter in list(session.adapters.items()):
        if not isinstance(adapter, TracingAdapter):
            session.mount(prefix, TracingAdapter(wrapped=adapter, **options))
    return session

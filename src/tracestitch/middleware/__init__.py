"""Server middleware: one run per request, joined to the caller's trace.

Import the adapter for your framework explicitly (each imports exactly one framework)::

    from tracestitch.middleware.asgi import TracingMiddleware      # Starlette, FastAPI, any ASGI
    from tracestitch.middleware.wsgi import TracingMiddleware      # Flask, any WSGI
    from tracestitch.middleware.aiohttp import tracing_middleware  # aiohttp.web
    # Django: settings.MIDDLEWARE = ["tracestitch.middleware.django.TracingMiddleware", ...]

All take the keyword options of :class:`MiddlewareOptions` (Django's from its settings).
"""

from __future__ import annotations

from tracestitch.middleware._common import (
    ALWAYS_REDACTED_HEADERS,
    DEFAULT_RECORDED_HEADERS,
    SENSITIVE_QUERY_KEYS,
    MiddlewareOptions,
    PathMatcher,
)
from tracestitch.middleware._options import WebSocketOptions

__all__ = [
    "ALWAYS_REDACTED_HEADERS",
    "DEFAULT_RECORDED_HEADERS",
    "SENSITIVE_QUERY_KEYS",
    "MiddlewareOptions",
    "PathMatcher",
    "WebSocketOptions",
]

"""Django apps for the middleware tests, several in one process.

Django's settings are process-wide, but what the tests vary is read when a handler is built
(``MIDDLEWARE``, ``TRACESTITCH_MIDDLEWARE``) or per request (``request.urlconf``, set here by the
handler): so each :func:`handler` keeps its own middleware, options and URLs for its lifetime.
"""

from __future__ import annotations

import sys
import types
from typing import Any

import django
from django.conf import settings


def _configure() -> None:
    if settings.configured:
        return
    settings.configure(
        DEBUG=False,
        SECRET_KEY="test-only",
        ALLOWED_HOSTS=["127.0.0.1", "localhost", "testserver"],
        ROOT_URLCONF="django_apps_no_urls",
        MIDDLEWARE=[],
        INSTALLED_APPS=[],
        # The 500s the tests ask for are expected: keep their tracebacks out of the output.
        LOGGING={"version": 1, "loggers": {"django.request": {"level": "CRITICAL"}}},
    )
    sys.modules["django_apps_no_urls"] = urls_module("django_apps_no_urls", [])
    django.setup()


def urls_module(name: str, urlpatterns: list[Any]) -> types.ModuleType:
    """A URLconf module named ``name`` (registered in ``sys.modules``)."""
    module = types.ModuleType(name)
    module.urlpatterns = urlpatterns  # type: ignore[attr-defined]
    sys.modules[name] = module
    return module


def handler(kind: str, urlconf: str, middleware: list[str], **options: Any) -> Any:
    """A Django WSGI (``kind="wsgi"``) or ASGI (``"asgi"``) application serving ``urlconf``
    through ``middleware``, the tracing middleware's options being ``options``."""
    _configure()
    settings.MIDDLEWARE = middleware
    settings.TRACESTITCH_MIDDLEWARE = options
    if kind == "wsgi":
        from django.core.handlers.wsgi import WSGIHandler

        class Wsgi(WSGIHandler):  # type: ignore[misc]
            def get_response(self, request: Any) -> Any:
                request.urlconf = urlconf
                return super().get_response(request)

        return Wsgi()
    from django.core.handlers.asgi import ASGIHandler

    class Asgi(ASGIHandler):  # type: ignore[misc]
        async def get_response_async(self, request: Any) -> Any:
            request.urlconf = urlconf
            return await super().get_response_async(request)

    return Asgi()

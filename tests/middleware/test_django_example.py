"""docs/architecture.md's Django middleware, run as written under a real server: an integration
on nothing but the public instrumentation API joins the caller's trace like the built-in ones."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path
from typing import Any

import django
import httpx
import pytest

from servers import run_wsgi
from tracestitch import RunTree
from tracestitch.testing import capture_runs
from tracestitch.tracing import traceable

DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"
TIMEOUT = httpx.Timeout(15.0)


def _example() -> str:
    section = DOC.read_text(encoding="utf-8").split("## How to add an integration", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found is not None, "the section lost its example"
    return found.group(1)


@traceable
def lookup(item_id: int) -> dict[str, int]:
    return {"id": item_id}


def _views() -> types.ModuleType:
    from django.http import HttpResponse, JsonResponse
    from django.urls import path

    def item(request: Any, item_id: int) -> JsonResponse:
        return JsonResponse(lookup(item_id))

    def broken(request: Any) -> HttpResponse:
        return HttpResponse("no", status=503)

    urls = types.ModuleType("docs_example_urls")
    urls.urlpatterns = [path("items/<int:item_id>", item), path("broken", broken)]  # type: ignore[attr-defined]
    return urls


@pytest.fixture(scope="module")
def django_app(request: pytest.FixtureRequest) -> Any:
    from django.conf import settings

    middleware = types.ModuleType("docs_example_tracing")
    exec(compile(_example(), str(DOC), "exec"), middleware.__dict__)
    sys.modules["docs_example_tracing"] = middleware
    sys.modules["docs_example_urls"] = _views()
    if not settings.configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="test-only",
            ALLOWED_HOSTS=["127.0.0.1"],
            ROOT_URLCONF="docs_example_urls",
            MIDDLEWARE=["docs_example_tracing.TracestitchMiddleware"],
            INSTALLED_APPS=[],
        )
        django.setup()
    from django.core.wsgi import get_wsgi_application

    return get_wsgi_application()


def test_the_example_is_short() -> None:
    assert len(_example().splitlines()) <= 60


def test_the_django_example_joins_the_callers_trace(django_app: Any) -> None:
    caller = RunTree("caller")
    with capture_runs() as runs, run_wsgi(django_app) as url:
        response = httpx.get(f"{url}/items/7", headers=caller.to_headers(), timeout=TIMEOUT)
        assert response.json() == {"id": 7}
        assert httpx.get(f"{url}/broken", timeout=TIMEOUT).status_code == 503
    server = runs.one("GET /items/<int:item_id>")
    assert server.parent_run_id == caller.id and server.trace_id == caller.trace_id
    assert server.extra is not None and server.extra["span_kind"] == "server"
    assert server.metadata["service"] == "shop" and server.outputs == {"status_code": 200}
    assert runs.one("lookup").parent_run_id == server.id
    broken = runs.one("GET /broken")
    assert broken.parent_run_id is None and broken.error == "HTTP 503"

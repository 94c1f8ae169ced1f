"""The example apps on their own, in process (the demo test runs them together, as processes)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tracestitch.testing import capture_runs

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(folder: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    # An example configures export from the environment when imported: keep the developer's
    # settings out, so nothing is installed globally.
    for var in ("TRACESTITCH_ENDPOINT", "LANGSMITH_ENDPOINT", "LANGCHAIN_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("TRACESTITCH_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    name = f"example_{folder}"
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / folder / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


def test_pricing_quotes_and_records_its_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    pricing = load("flask_app", monkeypatch)
    with capture_runs() as runs:
        response = pricing.app.test_client().get("/prices/kb-101?quantity=10")
        assert response.get_json() == {"unit_price": 49.0, "total": 441.0}
        response.close()
    request = runs.one("GET /prices/<sku>")
    assert request.status == "success"
    assert (request.extra or {})["metadata"]["service"] == "pricing"
    assert runs.one("quote").parent_run_id == request.id


def test_pricing_failure_is_recorded_where_it_happened(monkeypatch: pytest.MonkeyPatch) -> None:
    pricing = load("flask_app", monkeypatch)
    with capture_runs() as runs:
        response = pricing.app.test_client().get("/prices/ms-legacy-7")
        assert response.status_code == 500
        response.close()
    assert "HTTP 500" in (runs.one("GET /prices/<sku>").error or "")
    assert (runs.one("legacy_price_book").error or "").startswith("TimeoutError: legacy price")


def test_pricing_health_is_not_traced(monkeypatch: pytest.MonkeyPatch) -> None:
    pricing = load("flask_app", monkeypatch)
    with capture_runs() as runs:
        pricing.app.test_client().get("/health").close()
    assert len(runs) == 0


async def test_inventory_stock(monkeypatch: pytest.MonkeyPatch) -> None:
    inventory = load("aiohttp_app", monkeypatch)
    with capture_runs() as runs:
        async with TestClient(TestServer(inventory.create_app())) as client:
            response = await client.get("/stock/kb-101")
            assert await response.json() == {"in_stock": 12}
            assert (await client.get("/stock/nope")).status == 404
    ok = [r for r in runs if r.name == "GET /stock/{sku}"]
    assert [r.status for r in ok] == ["success", "success"]  # a 404 is an answer, not a failure
    assert {(r.extra or {})["metadata"]["service"] for r in ok} == {"inventory"}

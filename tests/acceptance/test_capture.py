"""Test helpers see the runs whatever the environment says, and send nothing unless export is on.

Many CI environments set ``LANGSMITH_TRACING=false`` precisely so that tests send nothing; the
tests of an app traced with tracestitch must still see its runs in a capture.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from acceptance_helpers import ORDERS_SERVICE, Collector, clean_env, run_script

APP_TESTS = """
import httpx
import pytest
from starlette.testclient import TestClient

from service import app, price
from tracestitch import traceable, tracing_context
from tracestitch.clients.httpx import TracingTransport
from tracestitch.testing import capture_runs


def test_fixture_sees_the_request_and_its_child(captured_runs):
    with TestClient(app) as client:
        assert client.get("/orders/2").json() == {"price": 6}
    server = captured_runs.one("GET /orders/{n}")
    assert captured_runs.one("price").parent_run_id == server.id


def test_capture_runs_sees_a_client_call():
    def answer(request):
        return httpx.Response(200, json={"ok": True})

    client = httpx.Client(transport=TracingTransport(httpx.MockTransport(answer)))

    @traceable
    def restock():
        return client.get("http://inventory.internal/items/1").status_code

    with capture_runs() as runs:
        restock()
    call = next(r for r in runs if r.name.startswith("GET inventory.internal"))
    assert call.parent_run_id == runs.one("restock").id


def test_disabled_inside_a_capture_stays_disabled():
    with capture_runs() as runs:
        with tracing_context(enabled=False):
            price(1)
        price(2)
    assert [r.inputs for r in runs] == [{"n": 2}]


def test_nothing_is_traced_outside_a_capture():
    from tracestitch.exporter import add_listener, remove_listener

    seen = []
    add_listener(seen.append)
    try:
        price(3)
    finally:
        remove_listener(seen.append)
    assert seen == []
"""


@pytest.mark.parametrize(
    "switch",
    [
        {"LANGSMITH_TRACING": "false"},
        {"TRACESTITCH_TRACING": "false"},
        {"LANGCHAIN_TRACING_V2": "false"},
    ],
    ids=lambda s: next(iter(s)),
)
def test_an_apps_tests_see_its_runs_with_tracing_switched_off(
    collector: Collector, tmp_path: Path, switch: dict[str, str]
) -> None:
    (tmp_path / "service.py").write_text(ORDERS_SERVICE)
    (tmp_path / "test_app.py").write_text(APP_TESTS)
    env = clean_env(
        TRACESTITCH_ENDPOINT=collector.url,
        LANGSMITH_ENDPOINT=collector.url,
        LANGSMITH_API_KEY="unused",
        TRACESTITCH_SPOOL_DIR="off",
        **switch,
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "4 passed" in result.stdout, result.stdout[-2000:]
    assert collector.runs() == [], "a test sent runs with tracing switched off"


def test_local_mode_captures_without_exporting_while_export_is_on(collector: Collector) -> None:
    code = """
        from tracestitch import traceable, tracing_context
        from tracestitch.testing import capture_runs

        @traceable
        def step(x):
            return x

        with capture_runs() as runs:
            with tracing_context(enabled="local"):
                step("local")
            step("exported")
        print(sorted(r.inputs["x"] for r in runs))
    """
    env = clean_env(TRACESTITCH_ENDPOINT=collector.url, TRACESTITCH_SPOOL_DIR="off")
    result = run_script(textwrap.dedent(code), env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['exported', 'local']"
    rows = collector.runs()
    assert [r["name"] for r in rows] == ["step"]
    assert '"exported"' in rows[0]["post_json"]

"""``tracestitch demo`` end to end: real processes on 127.0.0.1, as a newcomer runs it."""

from __future__ import annotations

import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any

import pytest

from tracestitch.demo._scenarios import trace_complete

DEMO = [sys.executable, "-m", "tracestitch.demo", "--color", "never"]
DEMO_TIMEOUT = 90.0
READY_LINE = re.compile(r"✓ (\w+)\s+(http://127\.0\.0\.1:(\d+))")


def _stop(proc: subprocess.Popen[str]) -> None:
    # SIGTERM first: the demo then stops its services itself, leaving no stray processes.
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _closed(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def run_demo() -> tuple[int, str, str]:
    proc = subprocess.Popen(
        DEMO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8"
    )
    try:
        out, err = proc.communicate(timeout=DEMO_TIMEOUT)
    except subprocess.TimeoutExpired:
        _stop(proc)
        out, err = proc.communicate()
        pytest.fail(f"the demo took over {DEMO_TIMEOUT} s:\n{out}\n{err}")
    finally:
        _stop(proc)
    return proc.returncode, out, err


@pytest.mark.timeout(120)
def test_demo_prints_traces_across_three_services() -> None:
    code, out, err = run_demo()
    assert code == 0, f"exit {code}\nstdout:\n{out}\nstderr:\n{err}"
    # Three traces, each spanning the three services.
    assert out.count("services: gateway, inventory, pricing") == 3, out
    # The failing call is marked on every hop it crossed, down to the exception in pricing.
    failing = out.split("3. An order that fails")[1]
    assert "POST /orders [chain] gateway" in failing
    assert "! TimeoutError: legacy price book did not answer" in failing
    assert re.search(r"GET /prices/<sku> \[chain\] pricing [\d.]+ ms error", failing), failing
    assert re.search(r"POST /reservations \[chain\] inventory [\d.]+ ms error", failing)
    assert "! HTTP 502 Bad Gateway" in failing
    # The fan-out: both downstream calls hang directly under the gateway's request run.
    fanout = out.split("2. A product page")[1].split("3. An order")[0]
    assert re.search(r"├─ GET 127\.0\.0\.1:\d+/stock/ms-202 \[tool\] gateway", fanout), fanout
    assert re.search(r"└─ GET 127\.0\.0\.1:\d+/prices/ms-202 \[tool\] gateway", fanout), fanout
    # The viewer stops with the demo: the output says how to keep it running.
    assert "run the demo with --keep (make demo ARGS=--keep" in out
    # Everything it started is gone.
    ports = [int(m.group(3)) for m in READY_LINE.finditer(out)]
    assert len(ports) == 4, out
    assert all(_closed(port) for port in ports)


@pytest.mark.timeout(120)
def test_demo_keep_serves_the_viewer_until_stopped() -> None:
    proc = subprocess.Popen(
        [*DEMO, "--keep"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + DEMO_TIMEOUT
        while not seen or "Press Ctrl-C" not in seen[-1]:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line is not None, "demo ended early:\n" + "".join(seen)
            seen.append(line)
        text = "".join(seen)
        viewer = re.search(r"The viewer: (http://127\.0\.0\.1:\d+/)", text)
        assert viewer, text
        with urllib.request.urlopen(viewer.group(1), timeout=10) as response:
            assert response.status == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        _stop(proc)
    ports = [int(m.group(3)) for m in READY_LINE.finditer(text)]
    assert len(ports) == 4
    assert all(_closed(port) for port in ports)


def _doc(runs: list[dict[str, Any]], services: list[str]) -> dict[str, Any]:
    roots = [r["id"] for r in runs if not r.get("parent_run_id")]
    return {"runs": runs, "root_run_ids": roots, "summary": {"services": services}}


GATEWAY: dict[str, Any] = {"id": "a", "parent_run_id": None, "status": "success", "inputs": {}}
CALL: dict[str, Any] = {
    "id": "b",
    "parent_run_id": "a",
    "status": "success",
    "inputs": {"url": "http://x:1/p"},
}
SERVED: dict[str, Any] = {
    "id": "c",
    "parent_run_id": "b",
    "status": "success",
    "inputs": {"path": "/p"},
}
ALL = ["gateway", "inventory", "pricing"]


@pytest.mark.parametrize(
    ("runs", "services", "complete"),
    [
        ([GATEWAY, CALL, SERVED], ALL, True),
        ([], ALL, False),
        # The downstream service's run has not arrived yet.
        ([GATEWAY, CALL], ALL, False),
        ([GATEWAY, CALL, SERVED], ["gateway", "inventory"], False),
        ([{**GATEWAY, "status": "pending"}, CALL, SERVED], ALL, False),
        ([GATEWAY, CALL, {**SERVED, "orphan": True}], ALL, False),
    ],
)
def test_trace_complete(runs: list[dict[str, Any]], services: list[str], complete: bool) -> None:
    assert trace_complete(_doc(runs, services), ("http://x:1",)) is complete

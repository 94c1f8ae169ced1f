"""The requests the demo sends through the gateway, and how it knows each one's trace is
complete at the collector."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from tracestitch.demo._console import DemoError
from tracestitch.demo._services import POLL_INTERVAL, Service, http

COLLECT_TIMEOUT = 20.0


@dataclass(frozen=True)
class Scenario:
    title: str
    method: str
    path: str
    body: dict[str, Any] | None
    expected_status: int
    note: str = ""


SCENARIOS = (
    Scenario(
        "An order: gateway → inventory → pricing",
        "POST",
        "/orders",
        {"sku": "kb-101", "quantity": 2},
        201,
    ),
    Scenario(
        "A product page: the gateway asks inventory and pricing at the same time",
        "GET",
        "/products/ms-202",
        None,
        200,
    ),
    Scenario(
        "An order that fails two hops down, in pricing",
        "POST",
        "/orders",
        {"sku": "ms-legacy-7", "quantity": 1},
        502,
        "pricing fails, as planned",
    ),
)
EXPECTED_SERVICES = frozenset(("gateway", "inventory", "pricing"))


@dataclass
class Sent:
    scenario: Scenario
    status: int
    elapsed_ms: float
    trace_id: str
    doc: dict[str, Any] = field(default_factory=dict)


def send(gateway: Service, scenario: Scenario) -> Sent:
    began = time.perf_counter()
    try:
        status, headers, body = http(scenario.method, gateway.url + scenario.path, scenario.body)
    except OSError as exc:
        raise DemoError(
            f"{scenario.method} {scenario.path}: the gateway did not answer ({exc})"
        ) from None
    elapsed = (time.perf_counter() - began) * 1000
    if status != scenario.expected_status:
        raise DemoError(
            f"{scenario.method} {scenario.path}: expected {scenario.expected_status}, got"
            f" {status}: {body[:300]!r}; see the logs of the services"
        )
    trace_id = headers.get("x-trace-id")
    if not trace_id:
        raise DemoError(f"{scenario.method} {scenario.path}: no x-trace-id header in the answer")
    return Sent(scenario, status, elapsed, trace_id)


def trace_complete(doc: dict[str, Any], service_urls: tuple[str, ...]) -> bool:
    """Whether every service has delivered its part of the trace: one root, nothing pending,
    partial or orphaned, all three services present, and every call to one of the demo's
    services answered by that service's own run (its child)."""
    runs: list[dict[str, Any]] = doc.get("runs") or []
    if not runs or len(doc.get("root_run_ids") or ()) != 1:
        return False
    parents = {run.get("parent_run_id") for run in runs}
    for run in runs:
        if run.get("status") == "pending" or run.get("orphan") or run.get("partial"):
            return False
        inputs = run.get("inputs")
        url = inputs.get("url") if isinstance(inputs, dict) else None
        if isinstance(url, str) and url.startswith(service_urls) and run.get("id") not in parents:
            return False
    services = set((doc.get("summary") or {}).get("services") or ())
    return services >= EXPECTED_SERVICES


def collect(collector: Service, sent: list[Sent], service_urls: tuple[str, ...]) -> None:
    """Poll the collector until each trace is complete (bounded by :data:`COLLECT_TIMEOUT`)."""
    deadline = time.monotonic() + COLLECT_TIMEOUT
    waiting = list(sent)
    while waiting:
        for item in list(waiting):
            status, _, body = http("GET", f"{collector.url}/api/traces/{item.trace_id}")
            if status == 200:
                item.doc = json.loads(body)
                if trace_complete(item.doc, service_urls):
                    waiting.remove(item)
        if not waiting:
            return
        if time.monotonic() > deadline:
            missing = ", ".join(f"{w.scenario.method} {w.scenario.path}" for w in waiting)
            raise DemoError(
                f"the traces of {missing} were still incomplete after {COLLECT_TIMEOUT:.0f} s"
                " (a service did not deliver its runs); see the logs of the services"
            )
        time.sleep(POLL_INTERVAL)  # polling the collector, bounded by the deadline above


def describe(scenario: Scenario) -> str:
    body = f" {json.dumps(scenario.body)}" if scenario.body is not None else ""
    return f"{scenario.method} {scenario.path}{body}"

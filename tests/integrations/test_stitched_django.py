"""One trace across four processes and three kinds of hop: a FastAPI service publishes a Celery
task (a real Redis broker, a real worker process), the task calls a Django service over httpx,
and every process reports to the real ``tracestitch serve``, which must hold one tree: no
orphans, each run under the one that caused it, each server run named for its service."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from integration_helpers import Collector, Service, one_tree, serve_uvicorn, service, traced_env

#: The Django service (ASGI under uvicorn): prints ``ready <url>`` once it listens.
PAYMENTS = """

import django
from django.conf import settings
from django.http import JsonResponse
from django.urls import include, path

from tracestitch import traceable

settings.configure(
    DEBUG=False,
    SECRET_KEY="test-only",
    ALLOWED_HOSTS=["127.0.0.1"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=[],
    MIDDLEWARE=["tracestitch.middleware.django.TracingMiddleware"],
    TRACESTITCH_MIDDLEWARE={"service": "payments"},
)
django.setup()


@traceable(run_type="tool")
def authorize(order_id):
    return {"order": order_id, "authorized": True}


async def payment(request, order_id):
    return JsonResponse(authorize(order_id))


urlpatterns = [path("api/", include([path("payments/<int:order_id>", payment)]))]

from django.core.asgi import get_asgi_application
""" + serve_uvicorn("get_asgi_application()", config='lifespan="off"')

#: The Celery app the worker and the FastAPI service import (``stitch_tasks.py``).
TASKS = """
import os

import httpx
from celery import Celery

from tracestitch.clients.httpx import TracingTransport
from tracestitch.integrations.celery import instrument_celery

app = Celery("stitch", broker=os.environ["BROKER"], backend=os.environ["BROKER"])
app.conf.task_default_queue = os.environ["QUEUE"]
app.conf.broker_connection_retry_on_startup = True
instrument_celery(app)


@app.task
def charge(order_id):
    with httpx.Client(transport=TracingTransport()) as client:
        return client.get(f"{os.environ['PAYMENTS']}/api/payments/{order_id}").json()
"""

#: The FastAPI service that publishes the task and waits for its result.
ORDERS = """

from fastapi import FastAPI

import stitch_tasks
from tracestitch.middleware.asgi import TracingMiddleware

app = FastAPI()
app.add_middleware(TracingMiddleware, service="orders", trace_id_header="x-trace-id")


@app.post("/orders/{order_id}")
def place(order_id: int):
    return stitch_tasks.charge.delay(order_id).get(timeout=30)

""" + serve_uvicorn()


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("stitched")
    (folder / "stitch_tasks.py").write_text(TASKS)
    return folder


@pytest.fixture(scope="module")
def env(collector: Collector, redis_url: str) -> dict[str, str]:
    queue = f"tracestitch-stitched-{uuid.uuid4().hex[:12]}"  # this module's own queue
    return traced_env(collector.url, BROKER=f"{redis_url}/9", QUEUE=queue)


@pytest.fixture(scope="module")
def services(app_dir: Path, env: dict[str, str]) -> Iterator[str]:
    """The three services (Django, the worker, FastAPI); yields the FastAPI service's URL."""
    started: list[Service] = []
    try:
        payments = Service([sys.executable, "-c", PAYMENTS], env, app_dir, "ready ")
        started.append(payments)
        env = {**env, "PAYMENTS": payments.detail}
        worker = [sys.executable, "-m", "celery", "-A", "stitch_tasks", "worker"]
        worker += ["--concurrency=1", "-Q", env["QUEUE"], "-l", "info", "-n", f"{env['QUEUE']}@%h"]
        worker += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        started.append(Service(worker, env, app_dir, " ready."))
        orders = Service([sys.executable, "-c", ORDERS], env, app_dir, "ready ")
        started.append(orders)
        yield orders.detail
    finally:
        for service in reversed(started):
            service.stop()


def test_fastapi_to_celery_to_django_is_one_tree(services: str, collector: Collector) -> None:
    response = httpx.post(f"{services}/orders/7", timeout=60)
    assert response.status_code == 200, response.text
    assert response.json() == {"order": 7, "authorized": True}
    trace_id = response.headers["x-trace-id"]

    runs = collector.wait_for_runs(trace_id, 5)
    children = one_tree(runs, trace_id, 5)
    (root,) = children[None]
    assert root["name"] == "POST /orders/{order_id}"
    (task,) = children[root["id"]]
    assert task["name"] == "stitch_tasks.charge"
    assert task["extra"]["celery"]["attempt"] == 1 and task["inputs"]["args"] == [7]
    (client,) = children[task["id"]]
    assert client["extra"]["span_kind"] == "client"
    (django,) = children[client["id"]]
    assert django["name"] == "GET /api/payments/<int:order_id>"
    (authorize,) = children[django["id"]]
    assert authorize["name"] == "authorize"

    # Each service names its own runs; a service's name never travels to the next one. The
    # worker's is its Celery app's name (nothing else names it).
    assert service(root) == "orders"
    assert service(task) == "stitch" and service(client) == "stitch"
    assert service(django) == "payments" and service(authorize) == "payments"
    assert all(r["error"] is None for r in runs)

    # So the collector's service map has the worker between the two HTTP services.
    doc = httpx.get(f"{collector.url}/api/services", timeout=10).json()
    edges = {(e["caller"], e["callee"]): e["calls"] for e in doc["edges"]}
    assert edges == {("orders", "stitch"): 1, ("stitch", "payments"): 1}

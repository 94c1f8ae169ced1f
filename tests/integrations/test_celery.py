"""Celery over a real Redis broker and a real worker process: a task joins the trace of the run
that published it, its retries are siblings, its failures are recorded, and the runs of every
process reach the real ``tracestitch serve`` as one tree."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from integration_helpers import Collector, Service, one_tree, service, traced_env

#: The app the worker and the publishers import (written to ``celery_tasks.py``).
TASKS = """
import os

import httpx
from celery import Celery

from tracestitch import get_current_run_tree
from tracestitch.clients.httpx import TracingTransport
from tracestitch.integrations.celery import instrument_celery
from tracestitch.propagation import stats

app = Celery("tasks", broker=os.environ["BROKER"], backend=os.environ["BROKER"])
app.conf.task_default_queue = os.environ["QUEUE"]
app.conf.broker_connection_retry_on_startup = True
instrument_celery(app)


@app.task
def fetch(url):
    with httpx.Client(transport=TracingTransport()) as client:
        return client.get(url).json()


@app.task(bind=True, max_retries=3)
def flaky(self, fails):
    if self.request.retries < fails:
        raise self.retry(exc=ConnectionError("upstream busy"), countdown=0)
    return "done after %d" % self.request.retries


@app.task
def boom():
    raise ValueError("boom in task")


@app.task
def whoami():
    run = get_current_run_tree()
    return {
        "trace_id": str(run.trace_id),
        "parent_run_id": str(run.parent_run_id) if run.parent_run_id else None,
        "rejected": {k: v for k, v in stats().items() if v},
    }
"""


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("celery_app")
    (folder / "celery_tasks.py").write_text(TASKS)
    return folder


@pytest.fixture(scope="module")
def broker_env(collector: Collector, redis_url: str) -> dict[str, str]:
    # A queue of this module's own: other tests (or helpers) on the same Redis never see it.
    queue = f"tracestitch-test-{uuid.uuid4().hex[:12]}"
    return traced_env(collector.url, BROKER=f"{redis_url}/9", QUEUE=queue)


WORKER_SERVICE = "receipts"


@pytest.fixture(scope="module")
def worker(app_dir: Path, broker_env: dict[str, str]) -> Iterator[Service]:
    """A real worker (the default prefork pool, one child) consuming this module's queue."""
    args = [sys.executable, "-m", "celery", "-A", "celery_tasks", "worker"]
    args += ["--concurrency=1", "-Q", broker_env["QUEUE"], "-l", "info"]
    args += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    args += ["-n", f"{broker_env['QUEUE']}@%h"]
    # The worker's service named only through the environment, as a deployment names it.
    env = {**broker_env, "TRACESTITCH_SERVICE_NAME": WORKER_SERVICE}
    service = Service(args, env, app_dir, " ready.")
    yield service
    service.stop()


def publish(app_dir: Path, env: dict[str, str], body: str) -> dict[str, Any]:
    """Run ``body`` in a fresh publisher process (the tasks module imported as ``t``); it prints
    one JSON line, which is returned."""
    code = "import json, celery_tasks as t\nfrom tracestitch import trace\n" + textwrap.dedent(body)
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=app_dir,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def by_name(runs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [r for r in runs if r["name"] == name]


def celery_facts(run: dict[str, Any]) -> dict[str, Any]:
    return (run.get("extra") or {}).get("celery") or {}


def test_task_run_is_a_child_of_the_publisher_and_its_http_call_stitches_on(
    worker: Service,
    app_dir: Path,
    broker_env: dict[str, str],
    collector: Collector,
    downstream: str,
) -> None:
    out = publish(
        app_dir,
        broker_env,
        f"""
        with trace("checkout") as run:
            result = t.fetch.delay("{downstream}/items/7").get(timeout=30)
        print(json.dumps({{"trace_id": str(run.trace_id), "result": result}}))
        """,
    )
    assert out["result"] == {"item": 7}
    runs = collector.wait_for_runs(out["trace_id"], 4)
    one_tree(runs, out["trace_id"])
    (checkout,) = by_name(runs, "checkout")
    (task,) = by_name(runs, "celery_tasks.fetch")
    (server,) = by_name(runs, "GET /items/{n}")
    client = next(r for r in runs if r["parent_run_id"] == task["id"])
    assert task["parent_run_id"] == checkout["id"]
    assert server["parent_run_id"] == client["id"]
    assert celery_facts(task)["attempt"] == 1
    assert task["inputs"]["args"] == [f"{downstream}/items/7"]
    assert len(runs) == 4
    # The task's run names the worker's service, and so does the call it makes; the
    # publisher's plain trace() run names none, and the callee keeps its own.
    assert service(task) == WORKER_SERVICE and service(client) == WORKER_SERVICE
    assert service(checkout) is None and service(server) == "inventory"


def test_retries_are_siblings_numbered_by_attempt(
    worker: Service, app_dir: Path, broker_env: dict[str, str], collector: Collector
) -> None:
    out = publish(
        app_dir,
        broker_env,
        """
        with trace("nightly") as run:
            result = t.flaky.delay(2).get(timeout=30)
        print(json.dumps({"trace_id": str(run.trace_id), "result": result}))
        """,
    )
    assert out["result"] == "done after 2"
    runs = collector.wait_for_runs(out["trace_id"], 4)
    one_tree(runs, out["trace_id"])
    (nightly,) = by_name(runs, "nightly")
    attempts = sorted(by_name(runs, "celery_tasks.flaky"), key=lambda r: celery_facts(r)["attempt"])
    assert [celery_facts(r)["attempt"] for r in attempts] == [1, 2, 3]
    assert {r["parent_run_id"] for r in attempts} == {nightly["id"]}
    assert len({celery_facts(r)["task_id"] for r in attempts}) == 1
    assert {service(r) for r in attempts} == {WORKER_SERVICE}
    for failed in attempts[:2]:
        assert failed["error"].startswith("ConnectionError: upstream busy"), failed["error"]
        assert failed["outputs"]["state"] == "RETRY"
    assert attempts[2]["error"] is None
    assert attempts[2]["outputs"] == {"state": "SUCCESS", "output": "done after 2"}


def test_a_failure_is_recorded_with_its_traceback(
    worker: Service, app_dir: Path, broker_env: dict[str, str], collector: Collector
) -> None:
    out = publish(
        app_dir,
        broker_env,
        """
        with trace("cleanup") as run:
            try:
                t.boom.delay().get(timeout=30)
            except ValueError as exc:
                raised = str(exc)
        print(json.dumps({"trace_id": str(run.trace_id), "raised": raised}))
        """,
    )
    assert out["raised"] == "boom in task"
    runs = collector.wait_for_runs(out["trace_id"], 2)
    one_tree(runs, out["trace_id"])
    (task,) = by_name(runs, "celery_tasks.boom")
    assert task["error"].startswith("ValueError: boom in task")
    assert "Traceback" in task["error"] and "in boom" in task["error"]
    assert task["outputs"]["state"] == "FAILURE"


def test_countdown_and_eta_keep_the_parent(
    worker: Service, app_dir: Path, broker_env: dict[str, str], collector: Collector
) -> None:
    out = publish(
        app_dir,
        broker_env,
        """
        import datetime
        with trace("later") as run:
            soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=1)
            eta = t.whoami.apply_async(eta=soon)
            countdown = t.whoami.apply_async(countdown=1)
            results = [eta.get(timeout=30), countdown.get(timeout=30)]
        ids = {"trace_id": str(run.trace_id), "run_id": str(run.id)}
        print(json.dumps({**ids, "results": results}))
        """,
    )
    for result in out["results"]:
        assert result["trace_id"] == out["trace_id"]
        assert result["parent_run_id"] == out["run_id"]
    runs = collector.wait_for_runs(out["trace_id"], 3)
    one_tree(runs, out["trace_id"])
    tasks = by_name(runs, "celery_tasks.whoami")
    assert len(tasks) == 2 and all(celery_facts(r).get("eta") for r in tasks)


HOSTILE = {
    "langsmith-trace": "20261202T000000000000Z" + "x" * 5000,
    "baggage": "langsmith-metadata=%7Bnot json,langsmith-project=" + "p" * 9000,
    "traceparent": "00-00000000000000000000000000000000-0000000000000000-01",
}


def test_hostile_headers_get_the_same_as_none(
    worker: Service, app_dir: Path, broker_env: dict[str, str]
) -> None:
    out = publish(
        app_dir,
        broker_env,
        f"""
        hostile = t.whoami.apply_async(headers={HOSTILE!r}).get(timeout=30)
        plain = t.whoami.delay().get(timeout=30)
        print(json.dumps({{"hostile": hostile, "plain": plain}}))
        """,
    )
    hostile, plain = out["hostile"], out["plain"]
    # Both are new traces rooted at the task run, as an untraced publish is.
    assert hostile["parent_run_id"] is None and plain["parent_run_id"] is None
    assert hostile["trace_id"] != plain["trace_id"]
    assert hostile["rejected"], "the worker counts what it refused"

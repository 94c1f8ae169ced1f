"""Any message carrier, over a real Redis stream: a producer process injects the trace into the
message's headers (a Kafka-style list of ``(str, bytes)`` pairs, stored as stream fields), a
consumer process continues it with ``continue_trace``, and the real ``tracestitch serve`` stores
one tree. Skipped without Redis on a laptop, never in CI."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis  # a dev dependency (the Celery tests' broker client)
from integration_helpers import Collector, traced_env

PRODUCER = """
import json, os, redis
from tracestitch import inject, trace

r = redis.Redis.from_url(os.environ["REDIS"])
with trace("publish order", run_type="chain") as run:
    headers = [("content-type", b"application/json")]
    inject(run, headers)
    r.xadd(os.environ["STREAM"], {**dict(headers), "body": b'{"order": 7}'})
print(json.dumps({"trace_id": str(run.trace_id), "id": str(run.id)}))
"""

CONSUMER = """
import json, os, redis
from tracestitch import continue_trace, traceable

@traceable(run_type="tool")
def charge(order):
    return {"charged": order}

r = redis.Redis.from_url(os.environ["REDIS"])
# Bounded: the message is already there, so the first read returns it.
[(_stream, [(_id, fields)])] = r.xread({os.environ["STREAM"]: "0"}, count=1, block=10_000)
body = json.loads(fields.pop(b"body"))
with continue_trace(list(fields.items()), name="consume order") as run:
    charge(body["order"])
print(json.dumps({"trace_id": str(run.trace_id), "parent_run_id": str(run.parent_run_id)}))
"""


@pytest.fixture
def stream(redis_url: str) -> Iterator[tuple[str, str]]:
    url = f"{redis_url}/11"
    name = f"tracestitch-test-{uuid.uuid4().hex[:12]}"
    yield url, name
    redis.Redis.from_url(url).delete(name)


def run_python(code: str, env: dict[str, str], cwd: Path) -> dict[str, str]:
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_a_redis_stream_consumer_continues_the_producers_trace(
    collector: Collector, stream: tuple[str, str], tmp_path: Path
) -> None:
    url, name = stream
    env = traced_env(collector.url, REDIS=url, STREAM=name)
    produced = run_python(PRODUCER, env, tmp_path)
    consumed = run_python(CONSUMER, env, tmp_path)
    assert consumed == {"trace_id": produced["trace_id"], "parent_run_id": produced["id"]}

    runs = collector.wait_for_runs(produced["trace_id"], 3)
    by_name = {r["name"]: r for r in runs}
    assert sorted(by_name) == ["charge", "consume order", "publish order"]
    assert by_name["publish order"]["parent_run_id"] is None
    assert by_name["consume order"]["parent_run_id"] == by_name["publish order"]["id"]
    assert by_name["charge"]["parent_run_id"] == by_name["consume order"]["id"]
    assert {r["trace_id"] for r in runs} == {produced["trace_id"]}

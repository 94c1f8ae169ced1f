"""Any message carrier, over a real Redis stream and a real NATS JetStream stream: a producer
process injects the trace into the message's headers (a Kafka-style list of ``(str, bytes)``
pairs stored as Redis stream fields; NATS' own ``dict`` of text headers), a consumer process
continues it with ``continue_trace``, and the real ``tracestitch serve`` stores one tree.
Skipped without Redis or NATS on a laptop, never in CI."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import nats  # dev dependencies: nats-py, and redis (the Celery tests' broker client)
import pytest
import redis
from integration_helpers import Collector, need_service, traced_env

NATS_URL = "nats://127.0.0.1:4222"

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


def assert_continued(
    collector: Collector, producer: str, consumer: str, env: dict[str, str], cwd: Path
) -> None:
    """Run the producer, then the consumer, and find one tree at the collector: publish order
    -> consume order (a consumer run) -> charge."""
    produced = run_python(producer, env, cwd)
    consumed = run_python(consumer, env, cwd)
    assert consumed == {"trace_id": produced["trace_id"], "parent_run_id": produced["id"]}

    runs = collector.wait_for_runs(produced["trace_id"], 3)
    by_name = {r["name"]: r for r in runs}
    assert sorted(by_name) == ["charge", "consume order", "publish order"]
    assert by_name["publish order"]["parent_run_id"] is None
    assert by_name["consume order"]["parent_run_id"] == by_name["publish order"]["id"]
    assert by_name["consume order"]["extra"]["span_kind"] == "consumer"
    assert by_name["charge"]["parent_run_id"] == by_name["consume order"]["id"]
    assert {r["trace_id"] for r in runs} == {produced["trace_id"]}


def test_a_redis_stream_consumer_continues_the_producers_trace(
    collector: Collector, stream: tuple[str, str], tmp_path: Path
) -> None:
    url, name = stream
    env = traced_env(collector.url, REDIS=url, STREAM=name)
    assert_continued(collector, PRODUCER, CONSUMER, env, tmp_path)


NATS_PRODUCER = """
import asyncio, json, os
import nats
from tracestitch import inject, trace

async def main():
    nc = await nats.connect(os.environ["NATS"])
    with trace("publish order", run_type="chain") as run:
        headers = {"Content-Type": "application/json"}  # NATS headers: a dict of text
        inject(run, headers)
        await nc.jetstream().publish(os.environ["SUBJECT"], b'{"order": 7}', headers=headers)
    await nc.close()
    print(json.dumps({"trace_id": str(run.trace_id), "id": str(run.id)}))

asyncio.run(main())
"""

NATS_CONSUMER = """
import asyncio, json, os
import nats
from tracestitch import continue_trace, traceable

@traceable(run_type="tool")
def charge(order):
    return {"charged": order}

async def main():
    nc = await nats.connect(os.environ["NATS"])
    sub = await nc.jetstream().pull_subscribe(os.environ["SUBJECT"], stream=os.environ["STREAM"])
    [msg] = await sub.fetch(1, timeout=10)  # bounded: the message is already stored
    with continue_trace(msg.headers, name="consume order") as run:
        charge(json.loads(msg.data)["order"])
    await msg.ack()
    await nc.close()
    print(json.dumps({"trace_id": str(run.trace_id), "parent_run_id": str(run.parent_run_id)}))

asyncio.run(main())
"""


def _nats_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 4222), timeout=2) as sock:
            return sock.recv(5) == b"INFO "
    except OSError:
        return False


@pytest.fixture
def nats_stream() -> Iterator[tuple[str, str]]:
    """A JetStream stream of the test's own on the machine's NATS: (stream, subject)."""
    if not _nats_answers():
        need_service("NATS (127.0.0.1:4222)")
    suffix = uuid.uuid4().hex[:12]
    stream, subject = f"TRACESTITCH_TEST_{suffix}", f"tracestitch.test.{suffix}"

    async def admin(create: bool) -> None:
        nc = await nats.connect(NATS_URL)
        try:
            if create:
                await nc.jetstream().add_stream(name=stream, subjects=[subject])
            else:
                await nc.jetstream().delete_stream(stream)
        finally:
            await nc.close()

    asyncio.run(admin(True))
    yield stream, subject
    asyncio.run(admin(False))


def test_a_nats_consumer_continues_the_producers_trace(
    collector: Collector, nats_stream: tuple[str, str], tmp_path: Path
) -> None:
    stream, subject = nats_stream
    env = traced_env(collector.url, NATS=NATS_URL, STREAM=stream, SUBJECT=subject)
    assert_continued(collector, NATS_PRODUCER, NATS_CONSUMER, env, tmp_path)

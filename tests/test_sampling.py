"""Sampling decides as the LangSmith SDKs do: for one trace id and rate, tracestitch and the
installed SDK keep or drop the same traces, and the rate is read from the same variables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import langsmith
import pytest

from tracestitch import ids
from tracestitch.sampling import is_sampled
from tracestitch.settings import read_env

RATES = (0.0, 0.001, 0.1, 0.25, 0.5, 0.9, 0.999999, 1.0)


def _sdk_kept(trace_ids: list[str], rate: float) -> set[str]:
    """The trace ids the SDK's client keeps at ``rate``: the filter its run ingestion applies."""
    client = langsmith.Client(
        api_url="http://127.0.0.1:9", api_key="unused", tracing_sampling_rate=rate
    )
    try:
        kept = client._filter_for_sampling([{"trace_id": t} for t in trace_ids])
    finally:
        client.cleanup()
    return {run["trace_id"] for run in kept}


def test_decisions_match_the_sdk_over_ten_thousand_ids() -> None:
    # Our UUIDv7s, and others' ids (UUIDv4, upper-case text an upstream may send).
    trace_ids = [ids.uuid7() for _ in range(8000)] + [uuid.uuid4() for _ in range(2000)]
    texts = [str(t) for t in trace_ids]
    for rate in RATES:
        ours = {str(t) for t in trace_ids if is_sampled(t, rate)}
        assert ours == _sdk_kept(texts, rate), rate
        if 0.1 <= rate <= 0.9:
            assert abs(len(ours) / len(texts) - rate) < 0.03  # and it is a share, not a fluke
    upper = [t.upper() for t in texts[:500]]
    assert {t for t in upper if is_sampled(t, 0.5)} == _sdk_kept(upper, 0.5)


@pytest.mark.parametrize(
    ("env", "rate"),
    [
        ({}, None),
        ({"LANGCHAIN_TRACING_SAMPLING_RATE": "0.2"}, 0.2),
        ({"LANGSMITH_TRACING_SAMPLING_RATE": "0.3", "LANGCHAIN_TRACING_SAMPLING_RATE": "0.2"}, 0.3),
        (
            {"TRACESTITCH_TRACING_SAMPLING_RATE": "0.4", "LANGSMITH_TRACING_SAMPLING_RATE": "0.3"},
            0.4,
        ),
        ({"TRACESTITCH_TRACING_SAMPLING_RATE": "1.5"}, None),  # refused: kept all, one warning
    ],
)
def test_the_rate_is_read_from_the_sdks_variables_and_ours(
    env: dict[str, str], rate: float | None
) -> None:
    assert read_env(env, warn=False).sampling_rate == rate


_SERVICE = """
import asyncio, json, sys
from tracestitch import RunTree
from tracestitch.middleware.asgi import TracingMiddleware
from tracestitch.testing import capture_runs

async def app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})

async def main():
    mw = TracingMiddleware(app, service="s")
    callers = [RunTree("caller") for _ in range(200)]
    async def receive():
        return {"type": "http.request", "body": b""}
    async def send(message):
        pass
    with capture_runs() as runs:
        for caller in callers:
            headers = [(k.encode(), v.encode()) for k, v in caller.to_headers().items()]
            scope = {"type": "http", "method": "GET", "path": "/x", "headers": headers}
            await mw(scope, receive, send)
        for _ in range(200):  # new roots
            await mw({"type": "http", "method": "GET", "path": "/x", "headers": []}, receive, send)
    print(json.dumps({
        "callers": [str(c.trace_id) for c in callers],
        "kept": sorted({str(r.trace_id) for r in runs}),
    }))

asyncio.run(main())
"""


def test_a_service_configured_by_the_sdks_variable_keeps_what_the_sdk_keeps() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LANGSMITH_", "LANGCHAIN_"))}
    env.pop("TRACESTITCH_TRACING_SAMPLING_RATE", None)
    env["LANGSMITH_TRACING_SAMPLING_RATE"] = "0.3"
    done = subprocess.run(
        [sys.executable, "-c", _SERVICE], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    kept = set(result["kept"])
    callers = result["callers"]
    assert kept & set(callers) == _sdk_kept(callers, 0.3)
    new_roots = kept - set(callers)
    # New roots: each kept one's trace id is one the SDK keeps too; about 30% of 200 kept.
    assert _sdk_kept(sorted(new_roots), 0.3) == new_roots
    assert 20 <= len(new_roots) <= 100

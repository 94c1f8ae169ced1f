"""Collector benchmark: ingest throughput and trace query time.

Runs the collector as a subprocess (``tracestitch serve --port 0``) so its CPU time can be read
from /proc apart from the client's. Rows:

- ``/runs/batch`` with 100-run batches (pre-serialised bodies, 4 sender threads)
- ``/runs/multipart`` as the real ``langsmith`` SDK sends it (zstd), ``@traceable`` runs
- ``GET /api/traces/{id}`` of a 1,000-run trace (median of repeated queries)

``python bench/bench_collector.py [--quick]`` prints a table; ``run(quick)`` returns the rows.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import orjson

from tracestitch.testing import CollectorProcess

API_KEY = "bench-key"
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_seconds(pid: int) -> float | None:
    """User+system CPU seconds of a process (Linux /proc), None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _start(db: Path) -> tuple[subprocess.Popen[str], str]:
    collector = CollectorProcess(db, api_key=API_KEY, options=["--max-body-mb", "64"]).start()
    assert collector.proc is not None
    return collector.proc, collector.url


def _iso(base: datetime, ms: float) -> str:
    return (base + timedelta(milliseconds=ms)).isoformat()


def _order(base: datetime, ms: float, rid: str) -> str:
    return (base + timedelta(milliseconds=ms)).strftime("%Y%m%dT%H%M%S%fZ") + rid


def _trace(n: int) -> list[dict[str, Any]]:
    """A trace of n runs: a root with chains of depth 3 below it, LangSmith wire dicts."""
    base = datetime.now(timezone.utc)
    root_id = str(uuid.uuid4())
    root = {
        "id": root_id,
        "trace_id": root_id,
        "dotted_order": _order(base, 0, root_id),
        "name": "root",
        "run_type": "chain",
        "start_time": _iso(base, 0),
        "end_time": _iso(base, n + 10),
        "inputs": {"question": "how fast?"},
        "outputs": {"answer": "fast"},
        "session_name": "bench",
        "extra": {"metadata": {"service": "gateway"}},
    }
    runs = [root]
    parent = root
    for i in range(1, n):
        if i % 3 == 1:
            parent = root  # start a new chain under the root
        rid = str(uuid.uuid4())
        run = {
            "id": rid,
            "trace_id": root_id,
            "parent_run_id": parent["id"],
            "dotted_order": parent["dotted_order"] + "." + _order(base, i, rid),
            "name": f"step-{i}",
            "run_type": "llm" if i % 3 == 0 else "chain",
            "start_time": _iso(base, i),
            "end_time": _iso(base, i + 1),
            "inputs": {"prompt": f"prompt {i} " + "x" * 200},
            "outputs": {
                "text": "y" * 200,
                "usage_metadata": {"input_tokens": 50, "output_tokens": 20, "total_tokens": 70},
            },
            "session_name": "bench",
            "extra": {"metadata": {"service": f"svc-{i % 3}"}},
        }
        runs.append(run)
        parent = run
    return runs


def bench_batch(url: str, pid: int, batches: int) -> dict[str, Any]:
    bodies = [orjson.dumps({"post": _trace(100)}) for _ in range(batches)]
    queue = list(bodies)
    lock = threading.Lock()
    failures: list[int] = []

    def sender() -> None:
        with httpx.Client(base_url=url, headers={"x-api-key": API_KEY}, timeout=30) as client:
            while True:
                with lock:
                    if not queue:
                        return
                    body = queue.pop()
                resp = client.post(
                    "/runs/batch", content=body, headers={"content-type": "application/json"}
                )
                if resp.status_code != 200:
                    failures.append(resp.status_code)

    cpu0 = _cpu_seconds(pid)
    t0 = time.perf_counter()
    threads = [threading.Thread(target=sender) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    cpu1 = _cpu_seconds(pid)
    runs = batches * 100
    return {
        "case": "/runs/batch, 100-run batches x4 senders",
        "runs": runs,
        "wall_s": wall,
        "runs_per_s": runs / wall,
        "collector_cpu_s": (cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else None,
        "errors": len(failures),
    }


def bench_sdk_multipart(url: str, pid: int, traces: int) -> dict[str, Any]:
    import langsmith
    from langsmith import traceable

    client = langsmith.Client(api_url=url, api_key=API_KEY)
    deadline = time.monotonic() + 10
    while client.compressed_traces is None and time.monotonic() < deadline:
        time.sleep(0.005)  # wait for the SDK to read /info and switch to zstd multipart

    @traceable(run_type="llm")
    def leaf(i: int) -> dict[str, Any]:
        return {"text": "z" * 200, "usage_metadata": {"input_tokens": 5, "output_tokens": 5}}

    @traceable
    def mid(i: int) -> int:
        for j in range(3):
            leaf(j)
        return i

    @traceable
    def top(i: int) -> int:
        for j in range(2):
            mid(j)
        return i

    cpu0 = _cpu_seconds(pid)
    t0 = time.perf_counter()
    with langsmith.tracing_context(enabled=True, client=client, project_name="bench-sdk"):
        for i in range(traces):
            top(i)
    client.flush()
    wall = time.perf_counter() - t0
    cpu1 = _cpu_seconds(pid)
    client.cleanup()
    runs = traces * 9  # top + 2 mid + 6 leaf
    return {
        "case": "/runs/multipart from langsmith SDK (zstd), incl. SDK time",
        "runs": runs,
        "wall_s": wall,
        "runs_per_s": runs / wall,
        "collector_cpu_s": (cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else None,
        "errors": 0,
    }


def bench_query(url: str, pid: int, repeats: int) -> dict[str, Any]:
    runs = _trace(1000)
    with httpx.Client(base_url=url, headers={"x-api-key": API_KEY}, timeout=30) as client:
        for i in range(0, len(runs), 100):
            assert client.post("/runs/batch", json={"post": runs[i : i + 100]}).status_code == 200
        trace_id = runs[0]["id"]
        times = []
        cpu0 = _cpu_seconds(pid)
        for _ in range(repeats):
            t0 = time.perf_counter()
            resp = client.get(f"/api/traces/{trace_id}")
            times.append(time.perf_counter() - t0)
            assert len(resp.json()["runs"]) == 1000
        cpu1 = _cpu_seconds(pid)
    return {
        "case": "GET /api/traces/{id}, 1,000-run trace (median)",
        "runs": 1000,
        "wall_s": statistics.median(times),
        "runs_per_s": None,
        "collector_cpu_s": ((cpu1 - cpu0) / repeats) if cpu0 is not None and cpu1 else None,
        "errors": 0,
        "bytes": len(resp.content),
    }


def run(quick: bool) -> list[dict[str, Any]]:
    """Run every case against a fresh collector; returns one dict per case."""
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = _start(Path(tmp) / "bench.db")
        try:
            rows = [
                bench_batch(url, proc.pid, 20 if quick else 100),
                bench_sdk_multipart(url, proc.pid, 50 if quick else 300),
                bench_query(url, proc.pid, 5 if quick else 20),
            ]
        finally:
            proc.kill()
            proc.wait(10)
    for row in rows:
        row["cpu"] = f"{_cpu_model()} ({os.cpu_count()} logical)"
    return rows


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


if __name__ == "__main__":
    results = run(quick="--quick" in sys.argv)
    print(f"CPU: {results[0]['cpu']}; Python {platform.python_version()}")
    print(f"{'case':<58} {'runs':>6} {'wall s':>8} {'runs/s':>9} {'server CPU s':>12} {'err':>4}")
    for r in results:
        print(
            f"{r['case']:<58} {r['runs']:>6} {_fmt(r['wall_s'], '8.3f')} "
            f"{_fmt(r['runs_per_s'], '9.0f')} {_fmt(r['collector_cpu_s'], '12.3f')}"
            f" {r['errors']:>4}"
        )

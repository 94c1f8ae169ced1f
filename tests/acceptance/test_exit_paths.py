"""The other ways a process ends or reports: a uvicorn worker stopped by SIGTERM, the console and
file outputs, and an endpoint too slow to take everything before the exit deadline."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from acceptance_helpers import ORDERS_SERVICE, Collector, clean_env, run_script
from test_short_lived import TRACES


def test_sigterm_of_a_uvicorn_worker_delivers_every_request(
    collector: Collector, tmp_path: Path
) -> None:
    (tmp_path / "service.py").write_text(ORDERS_SERVICE)
    env = clean_env(TRACESTITCH_ENDPOINT=collector.url, TRACESTITCH_SPOOL_DIR="off")
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "service:app", "--port", "0", "--no-access-log"],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        url = ""
        for _ in range(50):
            line = proc.stderr.readline()
            if "Uvicorn running on" in line:
                url = line.split("running on ")[1].split()[0]
                break
        assert url, "uvicorn did not start"
        requests = 300
        with httpx.Client(base_url=url, timeout=10) as client:
            for n in range(requests):
                assert client.get(f"/orders/{n}").json() == {"price": 3 * n}
        proc.send_signal(signal.SIGTERM)  # right after the last answer: runs still queued
        _, err = proc.communicate(timeout=30)
        # uvicorn shuts the app down (lifespan), then re-raises the signal: no atexit hooks
        # run, so the middleware's lifespan flush is what delivers the last runs.
        assert proc.returncode in (0, -signal.SIGTERM), err
        assert "Application shutdown complete" in err
    finally:
        if proc.poll() is None:
            proc.kill()
    rows = collector.runs()
    assert len(rows) == 2 * requests, f"{len(rows)} of {2 * requests} runs stored"
    servers = [r for r in rows if r["parent_run_id"] is None]
    assert {r["name"] for r in servers} == {"GET /orders/{n}"}
    assert all(r["end_us"] is not None for r in rows)


def test_console_prints_every_trace_of_a_short_script() -> None:
    traces = 200
    env = clean_env(TRACESTITCH_CONSOLE="1")
    result = run_script(TRACES, env, str(traces))
    assert result.returncode == 0, result.stderr
    headers = [line for line in result.stderr.splitlines() if line.startswith("trace ")]
    assert len(headers) == traces, result.stderr[-2000:]
    assert result.stderr.count("└── child  chain") == traces


def test_file_output_holds_every_run_of_a_short_script(tmp_path: Path) -> None:
    traces = 1_000
    out = tmp_path / "runs.jsonl"
    env = clean_env(TRACESTITCH_FILE=str(out))
    result = run_script(TRACES, env, str(traces))
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    ids = {r["id"] for r in records if r.get("end_time")}
    assert len(ids) == 2 * traces


def test_exit_while_the_exporter_is_being_built_delivers_the_runs_it_holds(
    tmp_path: Path,
) -> None:
    # The real exporter registers for exit as it is made, before the stand-in hands it the
    # runs it held: an exit in between must not close it first (it would refuse them all).
    out = tmp_path / "runs.jsonl"
    code = f"""
    import threading
    from tracestitch import traceable
    from tracestitch.export.deferred import DeferredExporter
    from tracestitch.export.file import FileSink
    from tracestitch.export.worker import BatchExporter
    from tracestitch.exporter import set_exporter

    made = threading.Event()

    def build():
        real = BatchExporter(FileSink({str(out)!r}))
        made.set()
        threading.Event().wait(0.5)  # the rest of a slow build (imports, the endpoint's /info)
        return real

    set_exporter(DeferredExporter(build).start())

    @traceable
    def step(x):
        return x

    for i in range(100):
        step(i)
    made.wait(10)
    """
    result = run_script(code, clean_env())
    assert result.returncode == 0, result.stderr
    assert "dropped" not in result.stderr, result.stderr
    assert len(out.read_text().splitlines()) == 100


class _Slow(BaseHTTPRequestHandler):
    """A LangSmith-compatible endpoint that takes its time over every request."""

    delay = 0.3

    def do_GET(self) -> None:  # /info
        self._answer(b"{}")

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        time.sleep(self.delay)  # the endpoint's own slowness, not test synchronisation
        self._answer(b"{}")

    def _answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return None


@contextmanager
def slow_endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def _exit_stats_against_a_slow_endpoint(traces: int, **settings: str) -> tuple[dict[str, Any], str]:
    """A script configured by the environment makes ``traces`` traces against the slow
    endpoint with no spool and a 1 s shutdown timeout and exits: its exporter's stats at
    the end of the exit, and its stderr."""
    code = (
        TRACES
        + """
    import json
    from tracestitch.exporter import get_exporter, shutdown_all
    shutdown_all()
    print(json.dumps(get_exporter().stats()))
    """
    )
    with slow_endpoint() as url:
        env = clean_env(
            TRACESTITCH_ENDPOINT=url,
            TRACESTITCH_SPOOL_DIR="off",
            TRACESTITCH_SHUTDOWN_TIMEOUT="1",
            **settings,
        )
        result = run_script(code, env, str(traces))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), result.stderr


def test_exit_goes_on_while_a_slow_endpoint_keeps_taking_batches() -> None:
    # 2,000 operations in batches of 200, 0.3 s each: about 3 s, past the 1 s the endpoint
    # may go without taking a batch, within the 30 s exit may take.
    stats, _ = _exit_stats_against_a_slow_endpoint(1_000)
    assert stats["sent"] == stats["submitted"] == 2_000, stats
    assert stats["dropped"] == 0, stats


def test_runs_a_slow_endpoint_cannot_take_before_exit_are_counted_as_dropped() -> None:
    stats, stderr = _exit_stats_against_a_slow_endpoint(5_000, TRACESTITCH_SHUTDOWN_MAX="1")
    assert stats["submitted"] == 10_000
    assert stats["pending"] == 0
    assert stats["dropped"] > 0, stats
    assert stats["sent"] + stats["dropped"] == stats["submitted"], stats
    assert "not delivered by the shutdown deadline (no spool)" in stats["drop_reasons"]
    assert sum(stats["drop_reasons"].values()) == stats["dropped"], stats
    assert "not delivered by the shutdown deadline" in stderr

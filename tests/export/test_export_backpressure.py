"""A dead endpoint under 20,000 traced runs: memory stays within the configured bound and the
process exits within the shutdown timeout + 0.5 s (measured in a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[2] / "src")
BOUND = 8 << 20  # max_queue_bytes given to the exporter
SHUTDOWN = 1.0


def test_dead_endpoint_memory_bound_and_exit_time(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import json, sys
        sys.path.insert(0, {SRC!r})
        import tracestitch
        from tracestitch import RunTree, traceable
        from tracestitch.export.langsmith import LangSmithSink
        from tracestitch.export.worker import BatchExporter

        def rss():
            with open("/proc/self/statm") as fh:
                return int(fh.read().split()[1]) * 4096

        exporter = BatchExporter(
            LangSmithSink("http://127.0.0.1:9"),
            spool={str(tmp_path / "spool")!r},
            max_queue_bytes={BOUND},
            shutdown_timeout={SHUTDOWN},
        )
        tracestitch.set_exporter(exporter)

        @traceable
        def handler(i):
            return {{"echo": "x" * 200, "i": i}}

        for i in range(200):  # warm up allocator and imports
            handler(i)
        exporter.flush(2)
        before = rss()
        peak = 0
        for i in range(20_000):
            handler(i)
            if i % 500 == 0:
                peak = max(peak, rss())
        peak = max(peak, rss())
        print(json.dumps({{"growth": peak - before, "stats": exporter.stats()}}), flush=True)
        """
    )
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])
    # The exit itself: everything after the last line printed is the atexit shutdown.
    stats = result["stats"]
    assert result["growth"] <= BOUND, result
    assert stats["bytes_queued"] <= BOUND
    assert stats["submitted"] == 20_200  # one complete post per traced call
    settled = sum(stats[k] for k in ("sent", "spooled", "dropped", "rejected", "coalesced"))
    assert settled + stats["pending"] == stats["submitted"]  # nothing unaccounted for
    elapsed = time.monotonic() - started
    assert elapsed < 30
    _assert_exit_time(script)


def _assert_exit_time(script: str) -> None:
    """Time from the last line printed to process exit (the atexit shutdown)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    proc.stdout.readline()
    printed = time.monotonic()
    proc.wait(30)
    assert time.monotonic() - printed <= SHUTDOWN + 0.5

"""A process configured only by the environment that makes its runs and exits at once.

Every run it made reaches the collector before it exits; with the collector down, every run is
in the spool when it exits (within the shutdown timeout) and the next process, even one that
makes no run, replays them all, once each.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from acceptance_helpers import Collector, clean_env, run_script

#: N traces of two @traceable runs each, then exit.
TRACES = """
    import sys
    from tracestitch import traceable

    @traceable
    def child(x):
        return x + 1

    @traceable
    def parent(x):
        return child(x)

    for i in range(int(sys.argv[1])):
        parent(i)
"""


def dead_endpoint() -> str:
    """An address on 127.0.0.1 where nothing listens (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def assert_complete_traces(rows: list, traces: int) -> None:
    assert len(rows) == 2 * traces, f"{len(rows)} of {2 * traces} runs stored"
    assert len({r["id"] for r in rows}) == len(rows)
    assert all(r["end_us"] is not None for r in rows), "a run was stored unfinished"
    roots = [r for r in rows if r["parent_run_id"] is None]
    assert len(roots) == traces
    assert {r["name"] for r in roots} == {"parent"}


@pytest.mark.parametrize("traces", [1, 10, 1_000])
@pytest.mark.parametrize("naming", ["tracestitch", "langsmith"])
def test_every_run_arrives_before_exit(
    collector: Collector, tmp_path: Path, traces: int, naming: str
) -> None:
    if naming == "tracestitch":
        env = clean_env(TRACESTITCH_ENDPOINT=collector.url, TRACESTITCH_SPOOL_DIR="off")
    else:  # an app configured for LangSmith, pointed at the collector
        env = clean_env(
            LANGSMITH_TRACING="true",
            LANGSMITH_ENDPOINT=collector.url,
            LANGSMITH_API_KEY="unused-on-loopback",
            TRACESTITCH_SPOOL_DIR="off",
        )
    result = run_script(TRACES, env, str(traces))
    assert result.returncode == 0, result.stderr
    # The collector commits before it answers, so what the process delivered is stored now:
    # no waiting here (a run still missing was lost, not late).
    assert_complete_traces(collector.runs(), traces)


def test_a_burst_of_20000_traces_arrives_before_exit(collector: Collector) -> None:
    # More than the collector takes in the 2 s the exit may wait for a stalled endpoint: the
    # exit goes on while the collector keeps taking batches.
    traces = 20_000
    env = clean_env(TRACESTITCH_ENDPOINT=collector.url, TRACESTITCH_SPOOL_DIR="off")
    result = run_script(TRACES, env, str(traces))
    assert result.returncode == 0, result.stderr
    assert_complete_traces(collector.runs(), traces)


def _spool_down(tmp_path: Path, traces: int) -> tuple[str, dict[str, str], Path]:
    """A script makes ``traces`` traces with nothing listening at its endpoint and exits;
    (endpoint, its environment, the spool)."""
    spool = tmp_path / "spool"
    endpoint = dead_endpoint()
    env = clean_env(
        TRACESTITCH_ENDPOINT=endpoint,
        TRACESTITCH_SPOOL_DIR=str(spool),
        TRACESTITCH_SHUTDOWN_TIMEOUT="2",
    )
    code = TRACES + "\n    import time\n    print(time.monotonic())\n"
    result = run_script(code, env, str(traces))
    exited = time.monotonic()
    assert result.returncode == 0, result.stderr
    # A dead endpoint stops the exit after the shutdown timeout (2 s), not the 30 s it may go
    # on while an endpoint takes batches. The bound is loose for a loaded machine (the build of
    # the exporter may take longer there); bench_short_lived measures it: 0.2-1.4 s.
    assert exited - float(result.stdout) < 20, result.stderr
    assert any(spool.rglob("*.seg")), "nothing spooled"
    return endpoint, env, spool


def test_a_restarted_service_with_no_traffic_replays_the_spool(tmp_path: Path) -> None:
    traces = 2_000
    endpoint, env, spool = _spool_down(tmp_path, traces)
    # The collector comes up on that very address; the service starts again, makes no run
    # at all, and lives on (here: until its stdin closes).
    collector = Collector(tmp_path / "later.db", port=int(endpoint.rsplit(":", 1)[1])).start()
    service = subprocess.Popen(
        [sys.executable, "-c", "import sys, tracestitch; sys.stdin.read()"],
        env=env,
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        rows = collector.wait_for_runs(2 * traces, timeout=60)
        assert_complete_traces(rows, traces)
        _, err = service.communicate("", timeout=30)
        assert service.returncode == 0, err
        assert not any(spool.rglob("*.seg")), "replayed runs left in the spool"
    finally:
        if service.poll() is None:
            service.kill()
        collector.stop()


def test_a_process_that_exits_at_once_replays_the_whole_spool_once(tmp_path: Path) -> None:
    traces = 10_000
    endpoint, env, spool = _spool_down(tmp_path, traces)
    collector = Collector(tmp_path / "later.db", port=int(endpoint.rsplit(":", 1)[1])).start()
    try:
        # It makes no run and exits at once: the exit goes on while the collector takes the
        # spooled batches, and acknowledges each, so none is left or repeated.
        replay = run_script("import tracestitch", env)
        assert replay.returncode == 0, replay.stderr
        assert not any(p.is_file() for p in spool.rglob("*")), "runs left in the spool"
        assert_complete_traces(collector.runs(), traces)
    finally:
        collector.stop()

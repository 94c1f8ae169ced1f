"""The SIGTERM handler: where it is put and where not, what it calls, and a plain script
killed by SIGTERM (the default disposition: no atexit) still delivering its runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from tracestitch import sigterm
from tracestitch.exporter import set_exporter


@pytest.fixture
def handlers(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """SIGTERM's handler and the module's state as they were, after the test."""
    saved = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(sigterm, "_stopped_at", None)
    monkeypatch.setattr(sigterm, "_stalled", False)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, saved)


@pytest.mark.usefixtures("handlers")
def test_a_handler_the_host_set_is_chained_and_called_with_the_same_arguments() -> None:
    seen: list[tuple[int, FrameType | None]] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: seen.append((signum, frame)))
    assert sigterm.install()
    assert not sigterm.install()  # once
    assert not sigterm.stopping()
    signal.raise_signal(signal.SIGTERM)
    assert [s for s, _ in seen] == [signal.SIGTERM]
    assert seen[0][1] is not None
    assert sigterm.stopping()
    signal.raise_signal(signal.SIGTERM)  # a second one: passed on again
    assert len(seen) == 2


@pytest.mark.usefixtures("handlers")
def test_an_ignored_sigterm_stays_ignored() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    assert not sigterm.install()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN


@pytest.mark.usefixtures("handlers")
def test_nothing_is_installed_off_the_main_thread() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    results: list[bool] = []
    thread = threading.Thread(target=lambda: results.append(sigterm.install()))
    thread.start()
    thread.join(10)
    assert results == [False]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


class _Stuck:
    """An exporter whose endpoint takes nothing: every flush runs out of time."""

    shutdown_timeout = 0.25

    def __init__(self) -> None:
        self.timeouts: list[float | None] = []

    def submit(self, op: Any, run: Any) -> None:
        return None

    def flush(self, timeout: float | None = None) -> bool:
        self.timeouts.append(timeout)
        return False

    def shutdown(self, timeout: float | None = None) -> bool:
        return False


@pytest.mark.usefixtures("handlers")
def test_once_a_flush_ran_out_of_time_the_next_ones_do_not_wait() -> None:
    stuck = _Stuck()
    set_exporter(stuck)
    assert sigterm.flush_if_stopping()  # not stopping: nothing asked of the exporter
    assert stuck.timeouts == []
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    assert sigterm.install()
    signal.raise_signal(signal.SIGTERM)  # the handler's flush: the exporter's own bound
    assert not sigterm.flush_if_stopping()  # a request finished while draining: no wait
    assert stuck.timeouts[0] is not None and stuck.timeouts[0] > 0
    assert stuck.timeouts[1:] == [0.0]


_OWN = ("TRACESTITCH_", "LANGSMITH_", "LANGCHAIN_", "OTEL_")
SCRIPT = """
import os, signal, sys
from tracestitch import traceable

@traceable
def step(n):
    return n

for n in range(int(sys.argv[1])):
    step(n)
os.kill(os.getpid(), signal.SIGTERM)  # as `kill`, systemd or a container runtime would
raise SystemExit("still running after SIGTERM")
"""


@pytest.mark.parametrize("flush_interval", ["10", "0.2"])
def test_a_script_killed_by_sigterm_still_delivers_and_dies_of_it(
    tmp_path: Path, flush_interval: str
) -> None:
    out = tmp_path / "runs.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OWN)}
    env.update(TRACESTITCH_FILE=str(out), TRACESTITCH_FLUSH_INTERVAL=flush_interval)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT), "300"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == -signal.SIGTERM, result.stderr
    ids = {json.loads(line)["id"] for line in out.read_text().splitlines()}
    assert len(ids) == 300

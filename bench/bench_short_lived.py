"""A script configured only by the environment that makes N traces and exits at once.

For N traces of two ``@traceable`` runs, a fresh interpreter per case:

- ``up``: the real ``tracestitch serve`` is listening; the share of runs stored when the
  script has exited, and how long the exit took after the last run;
- ``down``: nothing listens; the share of runs in the spool at exit, the exit time, then a
  second process that makes no run with the collector up: the share stored after it exited
  (each run once).

Wall-clock figures: on a shared 2-core machine they move 20-40% from run to run.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from common import Result, print_table

from tracestitch.testing import CollectorProcess

SCRIPT = textwrap.dedent(
    """
    import sys, time
    from tracestitch import traceable

    @traceable
    def child(x):
        return x + 1

    @traceable
    def parent(x):
        return child(x)

    for i in range(int(sys.argv[1])):
        parent(i)
    print(time.monotonic())
    """
)


def _env(**settings: str) -> dict[str, str]:
    prefixes = ("TRACESTITCH_", "LANGSMITH_", "LANGCHAIN_", "OTEL_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(settings)
    return env


def _stored(db: Path) -> tuple[int, int]:
    """(runs stored, distinct ids)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        total = conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        distinct = conn.execute("SELECT COUNT(DISTINCT id) FROM runs").fetchone()[0]
    finally:
        conn.close()
    return int(total), int(distinct)


def _script(n: int, env: dict[str, str]) -> float:
    """Run the script; seconds from its last run to its exit."""
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(n)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return time.monotonic() - float(done.stdout.strip().splitlines()[-1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(quick: bool = True) -> list[Result]:
    sizes = [1, 10, 1_000, 20_000] if not quick else [1, 10, 1_000, 5_000]
    results = []
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            with CollectorProcess(root / "up.db", env=_env()) as collector:
                exit_s = _script(
                    n, _env(TRACESTITCH_ENDPOINT=collector.url, TRACESTITCH_SPOOL_DIR="off")
                )
                stored, _ = _stored(root / "up.db")
            results.append(
                Result(
                    "short-lived",
                    f"{n} traces, endpoint up",
                    {"delivered %": 100 * stored / (2 * n), "exit after last run s": exit_s},
                )
            )
            port = _free_port()
            env = _env(
                TRACESTITCH_ENDPOINT=f"http://127.0.0.1:{port}",
                TRACESTITCH_SPOOL_DIR=str(root / "spool"),
            )
            exit_s = _script(n, env)
            with CollectorProcess(root / "down.db", port=port, env=_env()):
                subprocess.run(
                    [sys.executable, "-c", "import tracestitch"], env=env, check=True, timeout=60
                )
                stored, distinct = _stored(root / "down.db")
            results.append(
                Result(
                    "short-lived",
                    f"{n} traces, endpoint down",
                    {
                        "replayed by next process %": 100 * stored / (2 * n),
                        "duplicates": stored - distinct,
                        "exit after last run s": exit_s,
                    },
                )
            )
    return results


if __name__ == "__main__":
    print_table(run(quick="--full" not in sys.argv))

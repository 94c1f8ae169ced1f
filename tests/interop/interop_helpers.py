"""The real ``tracestitch serve`` for the interop tests, and ways to read what it stored."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson

from tracestitch.testing import CollectorProcess

API_KEY = "interop-key-0123456789"
_OWN_PREFIXES = ("TRACESTITCH_", "LANGSMITH_", "LANGCHAIN_", "OTEL_")


def clean_env(**settings: str) -> dict[str, str]:
    """This process's environment without any tracing settings, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OWN_PREFIXES)}
    env.update(settings)
    return env


@contextmanager
def service_process(argv: list[str], env: dict[str, str]) -> Iterator[str]:
    """A peer's service as a subprocess that prints ``listening on URL`` once bound; yields
    that URL and terminates it on exit."""
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # printed once the server is bound
        assert line.startswith("listening on "), line + (proc.stdout.read() or "")
        yield line.split()[-1]
    finally:
        proc.terminate()
        proc.wait(10)


class Collector(CollectorProcess):
    """``tracestitch serve`` as a subprocess on 127.0.0.1 with an ephemeral port and a key."""

    def __init__(self, db: Path) -> None:
        super().__init__(db, api_key=API_KEY, env=clean_env())

    def get(self, path: str, **params: Any) -> Any:
        response = httpx.get(
            self.url + path, params=params, headers={"x-api-key": API_KEY}, timeout=10
        )
        response.raise_for_status()
        return response.json()

    def requests(self) -> dict[str, int]:
        """Requests answered so far, as ``"METHOD /path STATUS"`` (ids as ``{id}``)."""
        counts: dict[str, int] = self.get("/api/stats")["requests"]
        return counts

    def runs(self) -> list[dict[str, Any]]:
        """Every stored run, merged (post and patch), with its indexed columns."""
        if not self.db.exists():
            return []
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        conn.row_factory = sqlite3.Row
        try:
            rows = list(conn.execute("SELECT * FROM runs"))
        finally:
            conn.close()
        out = []
        for row in rows:
            run = orjson.loads(row["post_json"]) if row["post_json"] else {}
            patch = orjson.loads(row["patch_json"]) if row["patch_json"] else {}
            run.update({k: v for k, v in patch.items() if v is not None})
            run.update(
                id=row["id"],
                trace_id=row["trace_id"],
                parent_run_id=row["parent_run_id"],
                project=row["project"],
                service=row["service"],
                status=row["status"],
                start_us=row["start_us"],
                end_us=row["end_us"],
            )
            out.append(run)
        return out

    def wait_for(self, names: set[str], timeout: float = 30.0) -> dict[str, dict[str, Any]]:
        """{name: run} once runs of all ``names`` are stored and ended (else what is there
        after ``timeout``: the caller's assertions then say what is missing)."""
        deadline = time.monotonic() + timeout
        while True:
            by_name = {run.get("name"): run for run in self.runs()}
            done = all(n in by_name and by_name[n]["end_us"] is not None for n in names)
            if done or time.monotonic() > deadline:
                return by_name
            time.sleep(0.05)

"""Helpers for the acceptance tests: the real ``tracestitch serve`` as a subprocess, and fresh
interpreters configured only through the environment."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Mapping
from pathlib import Path

from tracestitch.testing import CollectorProcess

#: The environment variables a test process inherits: none of tracestitch's or LangSmith's,
#: so each test says exactly how its process is configured.
_OWN_PREFIXES = ("TRACESTITCH_", "LANGSMITH_", "LANGCHAIN_", "OTEL_")


def clean_env(**settings: str) -> dict[str, str]:
    """This process's environment without any tracing settings, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OWN_PREFIXES)}
    env.update(settings)
    return env


#: A small traced service: a Starlette route with a @traceable child (write it to a file named
#: ``service.py`` and import ``service:app``).
ORDERS_SERVICE = """
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from tracestitch import traceable
from tracestitch.middleware.asgi import TracingMiddleware


@traceable
def price(n):
    return n * 3


async def order(request):
    return JSONResponse({"price": price(int(request.path_params["n"]))})


app = Starlette(routes=[Route("/orders/{n:int}", order)])
app.add_middleware(TracingMiddleware, service="orders")
"""


class Collector(CollectorProcess):
    """The real ``tracestitch serve`` (started with no tracing settings of its own), with
    readers of what it stored."""

    def __init__(self, db: Path, *, port: int = 0, api_key: str | None = None) -> None:
        super().__init__(db, port=port, api_key=api_key, env=clean_env())
        self.db: Path = db

    def runs(self) -> list[sqlite3.Row]:
        """Every stored run (a fresh read-only connection: the collector commits before it
        acknowledges, so what a sender was told is stored is visible here)."""
        if not self.db.exists():
            return []
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        conn.row_factory = sqlite3.Row
        try:
            return list(conn.execute("SELECT * FROM runs"))
        finally:
            conn.close()

    def wait_for_runs(self, count: int, timeout: float = 20.0) -> list[sqlite3.Row]:
        """The stored runs once there are ``count`` of them (or whatever is there after
        ``timeout``: the caller's assertion then says what is missing)."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.runs()
            if len(rows) >= count or time.monotonic() > deadline:
                return rows
            time.sleep(0.05)


def run_script(
    code: str, env: Mapping[str, str], *args: str, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter with exactly ``env``; it exits right after its work."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )

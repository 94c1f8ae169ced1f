"""Helpers for the integration tests: the real ``tracestitch serve``, a broker, and services in
subprocesses configured only through the environment."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tracestitch.testing import CollectorProcess

_OWN_PREFIXES = ("TRACESTITCH_", "LANGSMITH_", "LANGCHAIN_", "OTEL_")
READY_TIMEOUT = 30.0


def clean_env(**settings: str) -> dict[str, str]:
    """This process's environment without any tracing settings, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OWN_PREFIXES)}
    env.update(settings)
    return env


def traced_env(collector_url: str, **settings: str) -> dict[str, str]:
    """The environment of a service that sends its runs to the collector at ``collector_url``."""
    return clean_env(
        TRACESTITCH_TRACING="true",
        TRACESTITCH_ENDPOINT=collector_url,
        TRACESTITCH_SPOOL_DIR="off",
        **settings,
    )


class Collector(CollectorProcess):
    """The real ``tracestitch serve`` with a reader of the traces it stored."""

    def __init__(self, db: Path) -> None:
        super().__init__(db, env=clean_env())

    def trace(self, trace_id: str) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"{self.url}/api/traces/{trace_id}", timeout=10) as r:
                doc: dict[str, Any] = json.load(r)
                return doc
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def wait_for_runs(
        self, trace_id: str, count: int, timeout: float = 30.0
    ) -> list[dict[str, Any]]:
        """The runs of ``trace_id`` once ``count`` have ended there (or whatever is there after
        ``timeout``: the caller's assertions say what is missing)."""
        deadline = time.monotonic() + timeout
        while True:
            doc = self.trace(trace_id)
            runs = flatten(doc) if doc else []
            ended = [r for r in runs if r.get("end_time") or r.get("end_us")]
            if len(ended) >= count or time.monotonic() > deadline:
                return runs
            time.sleep(0.1)


def flatten(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every run of a trace document (``/api/traces/{id}``), whatever its nesting."""
    found: list[dict[str, Any]] = []
    pending = list(doc.get("runs") or doc.get("tree") or [])
    while pending:
        node = pending.pop()
        found.append(node)
        pending.extend(node.get("children") or [])
    return found


def one_tree(
    runs: list[dict[str, Any]], trace_id: str, count: int | None = None
) -> dict[str | None, list[dict[str, Any]]]:
    """Assert that ``runs`` (``count`` of them, when given) are one tree: one trace, one root
    whose id is ``trace_id``, no run whose parent is missing. Returns each run's children by
    parent id (the root under ``None``)."""
    ids = {r["id"] for r in runs}
    assert {r["trace_id"] for r in runs} == {trace_id}
    orphans = [r["name"] for r in runs if r.get("parent_run_id") and r["parent_run_id"] not in ids]
    assert orphans == []
    if count is not None:
        assert len(runs) == count, sorted(r["name"] for r in runs)
    children: dict[str | None, list[dict[str, Any]]] = {}
    for run in runs:
        children.setdefault(run.get("parent_run_id"), []).append(run)
    (root,) = children[None]
    assert root["id"] == trace_id
    return children


def service(run: Mapping[str, Any]) -> str | None:
    """The service a run names (``metadata["service"]``), or ``None``."""
    found: str | None = ((run.get("extra") or {}).get("metadata") or {}).get("service")
    return found


def _ping(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def need_service(what: str) -> None:
    """Skip for a missing service on a laptop; fail in CI, where it must be there."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} is required in CI")
    pytest.skip(f"{what} is not available here")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def redis_server() -> Iterator[str]:
    """A Redis URL: the machine's Redis on 127.0.0.1:6379, else a throwaway ``redis-server``
    (nothing on disk), else skip (fail in CI)."""
    if _ping("127.0.0.1", 6379):
        yield "redis://127.0.0.1:6379"
        return
    binary = shutil.which("redis-server")
    if binary is None:
        need_service("Redis (127.0.0.1:6379 or a redis-server binary)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while not _ping("127.0.0.1", port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


class Service:
    """A subprocess that prints ``ready <detail>`` on one line once it serves; its other output
    is kept for failure messages."""

    def __init__(self, args: list[str], env: Mapping[str, str], cwd: Path, marker: str) -> None:
        self.output: list[str] = []
        self.proc = subprocess.Popen(
            args,
            env=dict(env),
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.proc.stdout is not None
        self.detail = ""
        for _ in range(500):  # bounded: the banner lines come before the marker
            line = self.proc.stdout.readline()
            if not line:
                break
            self.output.append(line)
            if marker in line:
                self.detail = line.split(marker, 1)[1].strip()
                return
        self.stop()
        raise RuntimeError(f"{args[:4]} did not start:\n" + "".join(self.output))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def serve_uvicorn(app: str = "app", scheme: str = "http", config: str = "") -> str:
    """The end of a service script: ``app`` (an expression) served by uvicorn on an ephemeral
    port of 127.0.0.1, announced as ``ready <scheme>://127.0.0.1:<port>`` (what
    :class:`Service` waits for); ``config``: more ``uvicorn.Config`` arguments."""
    extra = f", {config}" if config else ""
    return f"""
import socket as _socket
import uvicorn as _uvicorn
_sock = _socket.socket()
_sock.bind(("127.0.0.1", 0))
_sock.listen(64)
print("ready {scheme}://127.0.0.1:%d" % _sock.getsockname()[1], flush=True)
_uvicorn.Server(_uvicorn.Config({app}, log_level="warning"{extra})).run(sockets=[_sock])
"""


#: A downstream HTTP service (Starlette under uvicorn, traced by the ASGI middleware); prints
#: ``ready <url>`` once it listens on an ephemeral port.
DOWNSTREAM = """
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from tracestitch.middleware.asgi import TracingMiddleware

async def item(request):
    return JSONResponse({"item": request.path_params["n"]})

app = Starlette(routes=[Route("/items/{n:int}", item)])
app.add_middleware(TracingMiddleware, service="inventory")
""" + serve_uvicorn()


@contextmanager
def downstream_service(collector_url: str, cwd: Path) -> Iterator[str]:
    """The downstream HTTP service; yields its base URL."""
    service = Service([sys.executable, "-c", DOWNSTREAM], traced_env(collector_url), cwd, "ready ")
    try:
        yield service.detail
    finally:
        service.stop()

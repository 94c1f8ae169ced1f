"""The demo's processes: the collector and the three example services on free loopback ports,
started, waited for, and stopped in order; and the one HTTP helper that talks to them."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tracestitch.demo._console import DIM, GREEN, Console, DemoError

PROJECT = "tracestitch-demo"
HOST = "127.0.0.1"
START_TIMEOUT = 30.0
REQUEST_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
POLL_INTERVAL = 0.05
# Settings inherited from the user's shell could send the demo's runs elsewhere (or a real
# LangSmith key to the local collector); the children get only the demo's own.
_FOREIGN_ENV_PREFIXES = ("TRACESTITCH_", "LANGSMITH_", "LANGCHAIN_", "OTEL_")


@dataclass
class Service:
    name: str
    what: str
    argv: list[str]
    port: int
    ready_path: str
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


def examples_dir() -> Path:
    """The example apps: shipped in the wheel as ``tracestitch/_examples``, or the repository's
    ``examples/`` in an editable (development) install."""
    here = Path(__file__).resolve().parents[1]  # the tracestitch package
    for candidate in (here / "_examples", here.parent.parent / "examples"):
        if (candidate / "fastapi_app" / "app.py").is_file():
            return candidate
    raise DemoError(
        f"the example apps are not installed (looked in {here / '_examples'} and"
        f" {here.parent.parent / 'examples'}); run the demo from a clone with `make demo`"
    )


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports the kernel calls free right now (all bound at once, so they
    differ); each service binds its own a moment later."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def child_env(collector_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN_ENV_PREFIXES)}
    env.update(
        TRACESTITCH_ENDPOINT=collector_url,
        TRACESTITCH_PROJECT=PROJECT,
        # Nothing to replay later: the demo's collector is gone when the demo ends.
        TRACESTITCH_SPOOL_DIR="off",
        PYTHONUNBUFFERED="1",
        HOST=HOST,
        # Everything here is on loopback: never through the user's HTTP proxy.
        NO_PROXY=f"{HOST},localhost",
        no_proxy=f"{HOST},localhost",
    )
    return env


def build_services(workdir: Path, db: Path, examples: Path) -> list[Service]:
    """The collector first, then the services leaf first (the order they are stopped in,
    reversed: the collector goes last, so it receives everything sent at shutdown)."""
    collector_port, pricing_port, inventory_port, gateway_port = free_ports(4)
    collector_url = f"http://{HOST}:{collector_port}"
    env = child_env(collector_url)
    pricing_url = f"http://{HOST}:{pricing_port}"
    inventory_url = f"http://{HOST}:{inventory_port}"
    python = [sys.executable, "-u"]

    def app(folder: str, port: int) -> list[str]:
        return [*python, str(examples / folder / "app.py"), str(port)]

    serve = ["-m", "tracestitch.cli", "serve", "--host", HOST, "--port", str(collector_port)]
    return [
        Service(
            "collector",
            "tracestitch serve",
            [*python, *serve, "--db", str(db)],
            collector_port,
            "/info",
            env,
            workdir / "collector.log",
        ),
        Service(
            "pricing",
            "Flask + WSGI middleware",
            app("flask_app", pricing_port),
            pricing_port,
            "/health",
            env,
            workdir / "pricing.log",
        ),
        Service(
            "inventory",
            "aiohttp server + aiohttp client",
            app("aiohttp_app", inventory_port),
            inventory_port,
            "/health",
            {**env, "PRICING_URL": pricing_url},
            workdir / "inventory.log",
        ),
        Service(
            "gateway",
            "FastAPI + httpx, fans out",
            app("fastapi_app", gateway_port),
            gateway_port,
            "/health",
            {**env, "PRICING_URL": pricing_url, "INVENTORY_URL": inventory_url},
            workdir / "gateway.log",
        ),
    ]


def start(service: Service, cwd: Path) -> None:
    with service.log.open("wb") as log:
        # A session of its own: Ctrl-C in the terminal reaches only the demo, which then
        # stops the services in order (the collector last).
        service.proc = subprocess.Popen(
            service.argv,
            env=service.env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    service.started = time.monotonic()


def log_tail(service: Service, lines: int = 15) -> str:
    try:
        text = service.log.read_text(errors="replace")
    except OSError:
        return "    (no log)"
    tail = text.strip().splitlines()[-lines:]
    return "\n".join("    " + line for line in tail) or "    (empty log)"


# HTTP (standard library only, never through a proxy)
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(
    method: str, url: str, body: Any = None, timeout: float = REQUEST_TIMEOUT
) -> tuple[int, dict[str, str], bytes]:
    """``(status, lower-cased headers, body)``; HTTP errors are answers, not exceptions."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("content-type", "application/json")
    try:
        with _opener.open(request, timeout=timeout) as response:
            headers = {k.lower(): v for k, v in response.headers.items()}
            return int(response.status), headers, response.read()
    except urllib.error.HTTPError as exc:
        headers = {k.lower(): v for k, v in exc.headers.items()}
        return exc.code, headers, exc.read()


def _answers(url: str) -> bool:
    try:
        status, _, _ = http("GET", url, timeout=1.0)
    except (OSError, ValueError):
        return False
    return status == 200


def wait_ready(services: Sequence[Service], console: Console, timeout: float) -> None:
    """Poll each service's endpoint until it answers 200, reporting each as it comes up."""
    deadline = time.monotonic() + timeout
    pending = list(services)
    width = max(len(s.name) for s in services)
    while pending:
        for service in list(pending):
            assert service.proc is not None
            code = service.proc.poll()
            if code is not None:
                raise DemoError(
                    f"{service.name} exited (status {code}) while starting; its log"
                    f" ({service.log}):\n{log_tail(service)}"
                )
            if _answers(service.url + service.ready_path):
                pending.remove(service)
                took = time.monotonic() - service.started
                console.line(
                    f"  {console.paint('✓', GREEN)} {service.name:<{width}}  {service.url}  "
                    f"{console.paint(f'{service.what}  ({took:.1f} s)', DIM)}"
                )
        if not pending:
            return
        if time.monotonic() > deadline:
            names = ", ".join(s.name for s in pending)
            logs = "\n".join(f"  {s.name} ({s.log}):\n{log_tail(s)}" for s in pending)
            raise DemoError(f"not ready after {timeout:.0f} s: {names}\n{logs}")
        time.sleep(POLL_INTERVAL)  # polling an endpoint, bounded by the deadline above


def stop(services: Sequence[Service]) -> None:
    """SIGTERM the services (they flush their exporters on the way out), then the collector;
    SIGKILL whatever is still there after :data:`STOP_TIMEOUT`."""
    apps = [s for s in services if s.name != "collector"]
    collector = [s for s in services if s.name == "collector"]
    for group in (apps, collector):
        running = [s.proc for s in group if s.proc is not None and s.proc.poll() is None]
        for proc in running:
            proc.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT
        for proc in running:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

"""``tracestitch demo`` (and ``make demo``): three services, one trace per request.

Starts a collector (``tracestitch serve``, SQLite in a temporary directory unless ``--db``) and
the three example services (gateway: FastAPI, inventory: aiohttp, pricing: Flask) on free
loopback ports, sends a few requests through the gateway (an order, a fan-out, an order that
fails two hops down), waits until every service's runs have reached the collector, prints each
trace as a tree and the viewer's URL, then stops everything. ``--keep`` leaves it all running
until Ctrl-C, to explore the viewer::

    python -m tracestitch.demo --keep
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

__all__ = ["main"]

PROJECT = "tracestitch-demo"
HOST = "127.0.0.1"
#: Import name -> what to install when it is missing.
REQUIREMENTS = {
    "uvicorn": "uvicorn",
    "starlette": "starlette",
    "fastapi": "fastapi",
    "httpx": "httpx",
    "aiohttp": "aiohttp",
    "flask": "flask",
}
START_TIMEOUT = 30.0
REQUEST_TIMEOUT = 15.0
COLLECT_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0
POLL_INTERVAL = 0.05
# Settings inherited from the user's shell could send the demo's runs elsewhere (or a real
# LangSmith key to the local collector); the children get only the demo's own.
_FOREIGN_ENV_PREFIXES = ("TRACESTITCH_", "LANGSMITH_", "LANGCHAIN_", "OTEL_")

_RESET = "\x1b[0m"
_BOLD = "\x1b[1m"
_DIM = "\x1b[2m"
_RED = "\x1b[31m"
_GREEN = "\x1b[32m"
_CYAN = "\x1b[36m"


class DemoError(Exception):
    """Something the user should hear about in one clear sentence (exit status 1)."""


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


@dataclass(frozen=True)
class Scenario:
    title: str
    method: str
    path: str
    body: dict[str, Any] | None
    expected_status: int
    note: str = ""


SCENARIOS = (
    Scenario(
        "An order: gateway → inventory → pricing",
        "POST",
        "/orders",
        {"sku": "kb-101", "quantity": 2},
        201,
    ),
    Scenario(
        "A product page: the gateway asks inventory and pricing at the same time",
        "GET",
        "/products/ms-202",
        None,
        200,
    ),
    Scenario(
        "An order that fails two hops down, in pricing",
        "POST",
        "/orders",
        {"sku": "ms-legacy-7", "quantity": 1},
        502,
        "pricing fails, as planned",
    ),
)
EXPECTED_SERVICES = frozenset(("gateway", "inventory", "pricing"))


@dataclass
class Sent:
    scenario: Scenario
    status: int
    elapsed_ms: float
    trace_id: str
    doc: dict[str, Any] = field(default_factory=dict)


class Console:
    """The demo's output: plain when piped, coloured on a terminal (``NO_COLOR`` honoured)."""

    def __init__(self, out: TextIO, color: bool) -> None:
        self.out = out
        self.color = color
        self.closed = False

    def paint(self, text: str, code: str) -> str:
        return f"{code}{text}{_RESET}" if self.color else text

    def line(self, text: str = "") -> None:
        if self.closed:
            return
        try:
            print(text, file=self.out, flush=True)
        except BrokenPipeError:
            # `tracestitch demo | head`: the reader left. Keep going quietly, so the services
            # are still stopped, and point stdout at /dev/null so the exit flush stays quiet.
            self.closed = True
            with contextlib.suppress(OSError, ValueError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self.out.fileno())


# ---------------------------------------------------------------------------------------------
# Setting up
# ---------------------------------------------------------------------------------------------


def _missing_requirements() -> list[str]:
    return [pkg for module, pkg in REQUIREMENTS.items() if importlib.util.find_spec(module) is None]


def examples_dir() -> Path:
    """The example apps: shipped in the wheel as ``tracestitch/_examples``, or the repository's
    ``examples/`` in an editable (development) install."""
    here = Path(__file__).resolve().parent
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


# ---------------------------------------------------------------------------------------------
# HTTP (standard library only, never through a proxy)
# ---------------------------------------------------------------------------------------------

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
                    f"  {console.paint('✓', _GREEN)} {service.name:<{width}}  {service.url}  "
                    f"{console.paint(f'{service.what}  ({took:.1f} s)', _DIM)}"
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


# ---------------------------------------------------------------------------------------------
# Requests and traces
# ---------------------------------------------------------------------------------------------


def send(gateway: Service, scenario: Scenario) -> Sent:
    began = time.perf_counter()
    try:
        status, headers, body = http(scenario.method, gateway.url + scenario.path, scenario.body)
    except OSError as exc:
        raise DemoError(
            f"{scenario.method} {scenario.path}: the gateway did not answer ({exc})"
        ) from None
    elapsed = (time.perf_counter() - began) * 1000
    if status != scenario.expected_status:
        raise DemoError(
            f"{scenario.method} {scenario.path}: expected {scenario.expected_status}, got"
            f" {status}: {body[:300]!r}; see the logs of the services"
        )
    trace_id = headers.get("x-trace-id")
    if not trace_id:
        raise DemoError(f"{scenario.method} {scenario.path}: no x-trace-id header in the answer")
    return Sent(scenario, status, elapsed, trace_id)


def trace_complete(doc: dict[str, Any], service_urls: tuple[str, ...]) -> bool:
    """Whether every service has delivered its part of the trace: one root, nothing pending,
    partial or orphaned, all three services present, and every call to one of the demo's
    services answered by that service's own run (its child)."""
    runs: list[dict[str, Any]] = doc.get("runs") or []
    if not runs or len(doc.get("root_run_ids") or ()) != 1:
        return False
    parents = {run.get("parent_run_id") for run in runs}
    for run in runs:
        if run.get("status") == "pending" or run.get("orphan") or run.get("partial"):
            return False
        inputs = run.get("inputs")
        url = inputs.get("url") if isinstance(inputs, dict) else None
        if isinstance(url, str) and url.startswith(service_urls) and run.get("id") not in parents:
            return False
    services = set((doc.get("summary") or {}).get("services") or ())
    return services >= EXPECTED_SERVICES


def collect(collector: Service, sent: list[Sent], service_urls: tuple[str, ...]) -> None:
    """Poll the collector until each trace is complete (bounded by :data:`COLLECT_TIMEOUT`)."""
    deadline = time.monotonic() + COLLECT_TIMEOUT
    waiting = list(sent)
    while waiting:
        for item in list(waiting):
            status, _, body = http("GET", f"{collector.url}/api/traces/{item.trace_id}")
            if status == 200:
                item.doc = json.loads(body)
                if trace_complete(item.doc, service_urls):
                    waiting.remove(item)
        if not waiting:
            return
        if time.monotonic() > deadline:
            missing = ", ".join(f"{w.scenario.method} {w.scenario.path}" for w in waiting)
            raise DemoError(
                f"the traces of {missing} were still incomplete after {COLLECT_TIMEOUT:.0f} s"
                " (a service did not deliver its runs); see the logs of the services"
            )
        time.sleep(POLL_INTERVAL)  # polling the collector, bounded by the deadline above


def _describe(scenario: Scenario) -> str:
    body = f" {json.dumps(scenario.body)}" if scenario.body is not None else ""
    return f"{scenario.method} {scenario.path}{body}"


# ---------------------------------------------------------------------------------------------
# The demo
# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tracestitch demo",
        description=(
            "Start a collector and three example services (FastAPI, aiohttp, Flask) on"
            " loopback, send a few requests through them and print the stitched traces."
        ),
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="leave the collector and services running (to explore the viewer) until Ctrl-C",
    )
    parser.add_argument(
        "--db",
        metavar="PATH",
        help="SQLite database to keep the traces in (default: a temporary one, deleted at exit)",
    )
    parser.add_argument(
        "--color", choices=("auto", "always", "never"), default="auto", help="ANSI colour"
    )
    return parser


def _use_color(choice: str, out: TextIO) -> bool:
    if choice != "auto":
        return choice == "always"
    return not os.environ.get("NO_COLOR") and out.isatty()


def run(args: argparse.Namespace, console: Console, workdir: Path) -> int:
    from tracestitch.collector.terminal import render_trace

    examples = examples_dir()
    db = Path(args.db).expanduser().resolve() if args.db else workdir / "traces.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    services = build_services(workdir, db, examples)
    collector, gateway = services[0], services[-1]
    service_urls = tuple(s.url for s in services[1:])
    paint = console.paint

    console.line(paint("tracestitch demo: one request, three services, one trace", _BOLD))
    console.line()
    console.line(f"Starting a collector and three services on {HOST}")
    try:
        for service in services:
            start(service, workdir)
        wait_ready(services, console, START_TIMEOUT)

        console.line()
        console.line(f"Sending {len(SCENARIOS)} requests to the gateway")
        sent = []
        width = max(len(_describe(s)) for s in SCENARIOS)
        for scenario in SCENARIOS:
            item = send(gateway, scenario)
            sent.append(item)
            code = _RED if item.status >= 500 else _GREEN
            note = f"  {paint(f'({scenario.note})', _DIM)}" if scenario.note else ""
            console.line(
                f"  {_describe(scenario):<{width}}  {paint(str(item.status), code)}"
                f"  {item.elapsed_ms:6.1f} ms{note}"
            )

        console.line()
        began = time.monotonic()
        collect(collector, sent, service_urls)
        runs = sum(len(item.doc.get("runs") or ()) for item in sent)
        console.line(
            f"Every service delivered its runs to the collector: {len(sent)} traces, {runs} runs"
            f" {paint(f'(waited {time.monotonic() - began:.1f} s)', _DIM)}"
        )

        for number, item in enumerate(sent, 1):
            console.line()
            title = f"── {number}. {item.scenario.title} "
            console.line(paint(title + "─" * max(3, 96 - len(title)), _BOLD))
            console.line(
                f"{_describe(item.scenario)}  →  {item.status}"
                f" {paint(f'in {item.elapsed_ms:.0f} ms', _DIM)}"
            )
            console.line()
            console.line(render_trace(item.doc, color=console.color))
            console.line(paint(f"view: {collector.url}/traces/{item.trace_id}", _DIM))

        console.line()
        if args.keep:
            console.line(f"The viewer: {paint(collector.url + '/', _CYAN)}")
            return keep_running(services, console, db, workdir)
        # The collector stops with the demo: say how to keep it up to open those links.
        console.line(
            "To explore these traces in the web viewer, run the demo with --keep"
            " (make demo ARGS=--keep, or tracestitch demo --keep): it then leaves the collector"
            " and the services running until Ctrl-C."
        )
        return 0
    finally:
        console.line()
        console.line("Stopping the services and the collector …")
        stop(services)


def keep_running(services: Sequence[Service], console: Console, db: Path, workdir: Path) -> int:
    console.line()
    console.line("Everything keeps running; send your own requests, e.g.:")
    gateway = services[-1]
    console.line(f"  curl -X POST {gateway.url}/orders -H 'content-type: application/json' \\")
    console.line('       -d \'{"sku": "kb-101", "quantity": 1}\'')
    console.line(f"  curl {gateway.url}/products/kb-101")
    console.line(f"  tracestitch traces --db {db}")
    console.line(console.paint(f"The services' logs are in {workdir}", _DIM))
    console.line(console.paint("Press Ctrl-C to stop.", _BOLD))
    try:
        while True:
            for service in services:
                assert service.proc is not None
                if service.proc.poll() is not None:
                    raise DemoError(
                        f"{service.name} stopped (status {service.proc.returncode}):"
                        f"\n{log_tail(service)}"
                    )
            time.sleep(0.5)  # waiting for the user's Ctrl-C, watching the services meanwhile
    except KeyboardInterrupt:
        return 0


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns the exit status (0: every trace printed)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["--"]:
        # `tracestitch demo -- --keep`: argparse.REMAINDER in the CLI keeps the separator.
        arguments = arguments[1:]
    args = build_parser().parse_args(arguments)
    out = sys.stdout
    if hasattr(out, "reconfigure"):
        # Box-drawing characters on a terminal that cannot show them: degrade, do not crash.
        out.reconfigure(errors="replace")
    console = Console(out, _use_color(args.color, out))
    missing = _missing_requirements()
    if missing:
        print(
            f"tracestitch demo: error: the demo needs {', '.join(missing)}: install tracestitch"
            " with its demo extra (in a checkout: pip install -e '.[demo]')",
            file=sys.stderr,
        )
        return 1
    # SIGTERM (a CI runner, `timeout`) stops the services too, like Ctrl-C does.
    previous = None
    if hasattr(signal, "SIGTERM"):
        try:
            previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        except ValueError:  # not the main thread: leave signals alone
            previous = None
    workdir = Path(tempfile.mkdtemp(prefix="tracestitch-demo-"))
    try:
        status = run(args, console, workdir)
        console.line("Done.")
        return status
    except DemoError as exc:
        print(f"tracestitch demo: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        console.line("Interrupted.")
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())

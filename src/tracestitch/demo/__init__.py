"""``tracestitch demo`` (and ``make demo``): three services, one trace per request.

Starts a collector (``tracestitch serve``, SQLite in a temporary directory unless ``--db``) and
the three example services (gateway: FastAPI, inventory: aiohttp, pricing: Flask) on free
loopback ports, sends a few requests through the gateway (an order, a fan-out, an order that
fails two hops down), waits until every service's runs have reached the collector, prints each
trace as a tree and the viewer's URL, then stops everything. ``--keep`` leaves it all running
until Ctrl-C, to explore the viewer::

    python -m tracestitch.demo --keep

Here: ``main`` and the run from start to stop; the processes (collector, services, their
ports, readiness, stopping) in ``_services.py``, the requests sent and when their traces are
complete in ``_scenarios.py``, the output in ``_console.py``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TextIO

from tracestitch.demo._console import BOLD, CYAN, DIM, GREEN, RED, Console, DemoError
from tracestitch.demo._scenarios import SCENARIOS, collect, describe, send
from tracestitch.demo._services import (
    HOST,
    START_TIMEOUT,
    Service,
    build_services,
    examples_dir,
    log_tail,
    start,
    stop,
    wait_ready,
)

__all__ = ["main"]

#: Import name -> what to install when it is missing.
REQUIREMENTS = {
    "uvicorn": "uvicorn",
    "starlette": "starlette",
    "fastapi": "fastapi",
    "httpx": "httpx",
    "aiohttp": "aiohttp",
    "flask": "flask",
}


def _missing_requirements() -> list[str]:
    return [pkg for module, pkg in REQUIREMENTS.items() if importlib.util.find_spec(module) is None]


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

    console.line(paint("tracestitch demo: one request, three services, one trace", BOLD))
    console.line()
    console.line(f"Starting a collector and three services on {HOST}")
    try:
        for service in services:
            start(service, workdir)
        wait_ready(services, console, START_TIMEOUT)

        console.line()
        console.line(f"Sending {len(SCENARIOS)} requests to the gateway")
        sent = []
        width = max(len(describe(s)) for s in SCENARIOS)
        for scenario in SCENARIOS:
            item = send(gateway, scenario)
            sent.append(item)
            code = RED if item.status >= 500 else GREEN
            note = f"  {paint(f'({scenario.note})', DIM)}" if scenario.note else ""
            console.line(
                f"  {describe(scenario):<{width}}  {paint(str(item.status), code)}"
                f"  {item.elapsed_ms:6.1f} ms{note}"
            )

        console.line()
        began = time.monotonic()
        collect(collector, sent, service_urls)
        runs = sum(len(item.doc.get("runs") or ()) for item in sent)
        console.line(
            f"Every service delivered its runs to the collector: {len(sent)} traces, {runs} runs"
            f" {paint(f'(waited {time.monotonic() - began:.1f} s)', DIM)}"
        )

        for number, item in enumerate(sent, 1):
            console.line()
            title = f"── {number}. {item.scenario.title} "
            console.line(paint(title + "─" * max(3, 96 - len(title)), BOLD))
            console.line(
                f"{describe(item.scenario)}  →  {item.status}"
                f" {paint(f'in {item.elapsed_ms:.0f} ms', DIM)}"
            )
            console.line()
            console.line(render_trace(item.doc, color=console.color))
            console.line(paint(f"view: {collector.url}/traces/{item.trace_id}", DIM))

        console.line()
        if args.keep:
            console.line(f"The viewer: {paint(collector.url + '/', CYAN)}")
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
    console.line(console.paint(f"The services' logs are in {workdir}", DIM))
    console.line(console.paint("Press Ctrl-C to stop.", BOLD))
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

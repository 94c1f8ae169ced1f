"""Shared result type and table printing for the benchmarks."""

from __future__ import annotations

import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any


@dataclass
class Result:
    bench: str
    case: str
    figures: dict[str, float] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)


def machine() -> str:
    import os

    return (
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} cores, {platform.machine()}, {date.today().isoformat()}"
    )


def _fmt(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def print_table(results: list[Result]) -> None:
    if not results:
        print("(no results)")
        return
    fig_keys: list[str] = []
    ratio_keys: list[str] = []
    for r in results:
        fig_keys += [k for k in r.figures if k not in fig_keys]
        ratio_keys += [k for k in r.ratios if k not in ratio_keys]
    header = ["bench", "case", *fig_keys, *(f"{k} (x)" for k in ratio_keys)]
    rows = [
        [
            r.bench,
            r.case,
            *(_fmt(r.figures[k]) if k in r.figures else "" for k in fig_keys),
            *(f"{r.ratios[k]:.3f}" if k in r.ratios else "" for k in ratio_keys),
        ]
        for r in results
    ]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    line = " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    print(line)
    print("-" * len(line))
    for row in rows:
        print(" | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))


def asgi_scope(headers: list[tuple[bytes, bytes]], query: bytes = b"q=1") -> dict[str, Any]:
    """The bench's ASGI request: ``GET /items/42?q=1`` from 127.0.0.1 to 127.0.0.1:8000 with
    ``headers`` (a template: copy it per request, as a server makes a scope per request)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/items/42",
        "raw_path": b"/items/42",
        "query_string": query,
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


_sink_url: str | None = None


def ok_sink_url() -> str:
    """A loopback HTTP server answering 200 ``{}`` to everything (a stand-in ingest endpoint
    whose cost is the same for every peer)."""
    global _sink_url
    if _sink_url is None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _ok(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                body = (
                    b'{"batch_ingest_config": {"use_multipart_endpoint": true, "size_limit": 100,'
                    b' "size_limit_bytes": 20971520, "scale_up_qsize_trigger": 1000,'
                    b' "scale_up_nthreads_limit": 16, "scale_down_nempty_trigger": 4}}'
                )
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PATCH = _ok

            def log_message(self, format: str, *args: object) -> None:
                return None

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        _sink_url = f"http://127.0.0.1:{server.server_port}"
    return _sink_url


class DiscardSink:
    """An in-process sink: the batch is fully serialized (the worker's real cost) and then
    dropped, so the figures include export work but no network."""

    def __init__(self) -> None:
        self.ops = 0

    def send(self, ops: Any) -> None:
        self.ops += len(ops)

    def close(self) -> None:
        return None


def install_real_exporter() -> Any:
    """Make tracestitch's real background ``BatchExporter`` (with a :class:`DiscardSink`) the
    process-wide exporter, replacing any earlier one; returns it."""
    from tracestitch.export.worker import BatchExporter
    from tracestitch.exporter import get_exporter, set_exporter

    previous = get_exporter()
    exporter = BatchExporter(DiscardSink(), spool=None)
    set_exporter(exporter)
    if previous is not exporter:
        previous.shutdown(1.0)
    return exporter


def callgrind_instructions(script: str, *args: str, fair_sched: bool = False) -> int:
    """Instructions callgrind counts (all threads) for ``python script args...``.
    ``fair_sched``: for threads that hand work to each other (without it valgrind can leave
    the one holding the answer waiting for seconds)."""
    done = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            *(["--fair-sched=yes"] if fair_sched else []),
            sys.executable,
            script,
            *args,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(done.stderr[-2000:])
    return int(found.group(1))


def best_microseconds(cycle: Callable[[], Any], n: int, rounds: int = 3) -> float:
    """Wall-clock microseconds per call of ``cycle``: the best of ``rounds`` runs of ``n``
    calls (noisy on a shared machine; callgrind's counts are the figures to quote)."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(n):
            cycle()
        best = min(best, (time.perf_counter() - start) / n * 1e6)
    return best


def print_overheads(label: str, costs: dict[str, float], unit: str, width: int = 8) -> None:
    """One line per variant of ``costs`` (``bare``, ``tracestitch``, ``opentelemetry``): its
    cost and what it adds to bare, then tracestitch's addition over OpenTelemetry's."""
    bare = costs["bare"]
    for variant in ("bare", "tracestitch", "opentelemetry"):
        extra = costs[variant] - bare
        print(f"{label:<{width}}{variant:<15}{costs[variant]:>16,.0f}{extra:>16,.0f}  {unit}")
    ours, theirs = costs["tracestitch"] - bare, costs["opentelemetry"] - bare
    ratio = ours / theirs if theirs > 0 else float("nan")
    print(f"{label:<{width}}overhead tracestitch / opentelemetry = {ratio:.2f}")

"""Export benchmarks: worker throughput and submit cost, and backpressure against a dead and a
slow endpoint, each next to the ``langsmith`` client in the same run.

    python bench/bench_export.py [--quick]

Throughput: N finished runs handed over on the request path (``submit`` cost per run), then the
time until all are serialized and delivered to a loopback ingest server (runs/s).
Backpressure: a subprocess traces 20,000 runs against an unreachable endpoint (a socket that
listens but never accepts: requests hang until the client's timeout, like a blackholed host;
sandboxes often answer for "unroutable" addresses, so no real address is used) and a 5-s-slow
one; RSS growth, what was queued/spooled/dropped, and how long the process takes to exit after
its last run (capped; the peer may not exit at all), and then how many runs are *lost*: the
spool the process left is replayed to a live loopback server, and every traced run must have
arrived complete (with its end) at one of the two servers. Each scenario runs twice: a tight
loop of traced calls (submissions far outpace serialization), and a realistic rate (each
traced call does ~50 µs of work).
"""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Result, machine, print_table

SRC = str(Path(__file__).resolve().parents[1] / "src")
SHUTDOWN = 2.0


class _Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    delay = 0.0
    received = 0
    complete: set[str]  # ids of runs received with their end (our /runs/batch bodies)

    def log_message(self, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes: without this the body waits for the
        # client's delayed ACK (~40 ms a request), which would measure the server, not us.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        body = json.dumps(
            {
                "version": "bench",
                "batch_ingest_config": {
                    "use_multipart_endpoint": False,
                    "size_limit_bytes": 20_000_000,
                    "size_limit": 100,
                    "scale_up_qsize_trigger": 1000,
                    "scale_up_nthreads_limit": 16,
                    "scale_down_nempty_trigger": 4,
                },
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.endswith("/runs/batch"):
            self._record(body)
        if type(self).delay:
            time.sleep(type(self).delay)  # the slow endpoint
        type(self).received += 1
        self.send_response(202)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def _record(self, body: bytes) -> None:
        encoding = self.headers.get("Content-Encoding")
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "zstd":
            import zstandard

            body = zstandard.ZstdDecompressor().decompressobj().decompress(body)
        doc = json.loads(body)
        for run in [*doc.get("post", []), *doc.get("patch", [])]:
            if run.get("end_time"):
                type(self).complete.add(run["id"])


def _serve(delay: float = 0.0) -> tuple[ThreadingHTTPServer, str]:
    handler = type("H", (_Sink,), {"delay": delay, "received": 0, "complete": set()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def _throughput(n: int) -> list[Result]:
    import langsmith
    from langsmith.run_trees import RunTree as LSRunTree

    from tracestitch import RunTree
    from tracestitch.export.langsmith import LangSmithSink
    from tracestitch.export.worker import BatchExporter

    server, url = _serve()
    ours = BatchExporter(LangSmithSink(url, "k", compression="none"), max_queue_bytes=1 << 30)
    runs = []
    for i in range(n):
        run = RunTree(name="r", inputs={"q": "hello", "i": i}, exporter=ours)
        run.end(outputs={"a": "world" * 10})
        runs.append(run)
    t0 = time.perf_counter()
    for run in runs:
        run.post()
    t1 = time.perf_counter()
    ours.flush(60)
    t2 = time.perf_counter()
    ours.shutdown()
    ours_submit, ours_rate = (t1 - t0) / n * 1e6, n / (t2 - t0)

    client = langsmith.Client(api_url=url, api_key="k", auto_batch_tracing=True)
    ls_runs = []
    for i in range(n):
        run = LSRunTree(name="r", inputs={"q": "hello", "i": i}, client=client)
        run.end(outputs={"a": "world" * 10})
        ls_runs.append(run)
    t0 = time.perf_counter()
    for run in ls_runs:
        run.post()
    t1 = time.perf_counter()
    flusher = threading.Thread(target=client.flush, daemon=True)
    flusher.start()
    flusher.join(60)  # bounded: the peer's flush has no timeout of its own
    t2 = time.perf_counter()
    ls_submit, ls_rate = (t1 - t0) / n * 1e6, n / (t2 - t0)
    server.shutdown()
    return [
        Result(
            "export",
            f"throughput tracestitch n={n}",
            {"submit_us": ours_submit, "runs_per_s": ours_rate},
            {"submit_vs_ls": ours_submit / ls_submit, "rate_vs_ls": ours_rate / ls_rate},
        ),
        Result(
            "export", f"throughput langsmith n={n}", {"submit_us": ls_submit, "runs_per_s": ls_rate}
        ),
    ]


_CHILD = """
import json, os, sys, time
sys.path.insert(0, {src!r})
who, url, n, work = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[5])

def rss():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096

if who == "tracestitch":
    import tracestitch
    from tracestitch import traceable
    from tracestitch.export.langsmith import LangSmithSink
    from tracestitch.export.worker import BatchExporter
    exporter = BatchExporter(LangSmithSink(url, "k", timeout=3), spool=sys.argv[4],
                             max_queue_bytes=16 << 20, shutdown_timeout={shutdown})
    tracestitch.set_exporter(exporter)
    # The sender imports these on its first request; the peer imports its HTTP stack at
    # import time. Import them here so both baselines include the library code.
    import http.client, ssl
    from tracestitch.export.wire import zstd_available
    if zstd_available():
        import zstandard
else:
    os.environ.update(LANGSMITH_TRACING="true", LANGSMITH_ENDPOINT=url, LANGSMITH_API_KEY="k")
    from langsmith import traceable

@traceable
def handler(i):
    if work:  # a realistic request: some work of its own per traced call
        until = time.perf_counter() + work
        while time.perf_counter() < until:
            pass
    return {{"echo": "x" * 200, "i": i}}

for i in range(100):
    handler(i)
before = rss()
peak = 0
for i in range(n):
    handler(i)
    if i % 500 == 0:
        peak = max(peak, rss())
time.sleep(0.5)  # let the worker catch up before measuring
stats = exporter.stats() if who == "tracestitch" else {{}}
print(json.dumps({{"growth": max(peak, rss()) - before, "stats": stats}}), flush=True)
"""


def _backpressure(who: str, url: str, n: int, cap: float, work: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as spool:
        code = textwrap.dedent(_CHILD.format(src=SRC, shutdown=SHUTDOWN))
        proc = subprocess.Popen(
            [sys.executable, "-c", code, who, url, str(n), spool, str(work)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert proc.stdout is not None
        line = proc.stdout.readline()
        printed = time.monotonic()
        try:
            proc.wait(cap)
            exit_s = time.monotonic() - printed
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            exit_s = float("inf")
        data = json.loads(line) if line else {"growth": float("nan"), "stats": {}}
        data["exit_s"] = exit_s
        data["spool_files"] = len(os.listdir(spool))
        if who == "tracestitch":
            data["replayed_complete"] = _replay(spool)
        return data


def _replay(spool: str) -> set[str]:
    """The endpoint is back: a new process replays the spool; which runs arrive complete."""
    from tracestitch.export.langsmith import LangSmithSink
    from tracestitch.export.worker import BatchExporter

    server, url = _serve()
    exporter = BatchExporter(LangSmithSink(url, "k"), spool=spool)
    assert exporter.spool is not None
    exporter.spool.open()  # adopt the dead process's segments before looking at them
    exporter.start()
    idle = threading.Event()
    for _ in range(3000):  # bounded: 30 s
        if exporter.spool.stats.segments == 0 and not exporter.spool.pending():
            break
        idle.wait(0.01)
    exporter.shutdown()
    server.shutdown()
    complete: set[str] = server.RequestHandlerClass.complete  # type: ignore[attr-defined]
    return complete


def run(quick: bool = False) -> list[dict[str, Any]]:
    n = 5000 if quick else 20_000
    results = _throughput(n)
    cap = 6.0 if quick else 10.0
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(0)
    unreachable = f"http://127.0.0.1:{blackhole.getsockname()[1]}"
    for work, rate in ((0.0, "tight loop"), (50e-6, "50us/call")):
        for scenario in ("unreachable", "slow 5s"):
            figures: dict[str, dict[str, Any]] = {}
            arrived: set[str] = set()
            for who in ("tracestitch", "langsmith"):
                # A server of its own for each, so one's runs are not counted for the other.
                slow_server, slow_url = _serve(delay=5.0)
                url = unreachable if scenario == "unreachable" else slow_url
                figures[who] = _backpressure(who, url, 20_000, cap, work)
                slow_server.shutdown()
                if who == "tracestitch":
                    handler: Any = slow_server.RequestHandlerClass
                    arrived = figures[who]["replayed_complete"] | handler.complete
            ours, peer = figures["tracestitch"], figures["langsmith"]
            s = ours["stats"]
            traced = 20_000 + 100  # the measured runs and the warm-up
            ratios = {"rss_vs_ls": ours["growth"] / max(peer["growth"], 1)}
            if peer["exit_s"] != float("inf"):
                ratios["exit_vs_ls"] = ours["exit_s"] / peer["exit_s"]
            results.append(
                Result(
                    "backpressure",
                    f"{scenario} {rate} tracestitch",
                    {
                        "rss_growth_mib": ours["growth"] / 2**20,
                        "exit_s": ours["exit_s"],
                        "spooled": s.get("spooled", 0),
                        "coalesced": s.get("coalesced", 0),
                        "dropped": s.get("dropped", 0),
                        "lost": traced - len(arrived),
                        "queued_mib": s.get("bytes_queued", 0) / 2**20,
                    },
                    ratios,
                )
            )
            results.append(
                Result(
                    "backpressure",
                    f"{scenario} {rate} langsmith",
                    {"rss_growth_mib": peer["growth"] / 2**20, "exit_s": peer["exit_s"]},
                )
            )
    blackhole.close()
    return [asdict(r) for r in results]


if __name__ == "__main__":
    print(machine())
    rows = run(quick="--quick" in sys.argv)
    print_table([Result(**r) for r in rows])
    print(
        f"(exit capped; inf = still running at the cap, no exit ratio then; shutdown timeout "
        f"{SHUTDOWN} s; lost = traced runs that never arrived complete, after the spool's replay)"
    )

"""End to end: two services in subprocesses, A calling B once per request, under ASGI (uvicorn,
httpx), WSGI (werkzeug threaded, requests) and aiohttp (aiohttp.web, aiohttp's client), each
untraced, with tracestitch, with its middleware only, with OpenTelemetry and (ASGI) LangSmith.
The services and modes are described in ``e2e_services.py``.

A round sends N requests at concurrency 32 (httpx from this process) to A of every
(server, mode) pair in turn, the order rotated each round so drift on a shared machine hits
every variant alike. Per pair and round: throughput, and all-thread CPU per request of A plus B
(``/proc/<pid>/stat`` utime + stime of both service processes, read before the load and after
``/flush`` has made each exporter hand on what it was given). Ratios are taken against the same
server's untraced pair of the same round; the median across rounds is reported. The load
generator's own CPU per request is shown too: it shares the machine's cores with the services,
so it dilutes what the services' added CPU costs in throughput.

    python bench/bench_e2e.py [--quick] [--rounds R] [--requests N] [--servers asgi,wsgi]
                              [--loader httpx|aiohttp] [--json]
    python bench/bench_e2e.py --profile asgi/tracestitch [--requests N]
    python bench/bench_e2e.py --threads asgi/tracestitch [--requests N]

cProfile's figures are inflated by its per-call cost and show only where time goes; under
``time.thread_time`` it also books a thread's blocked lock waits ("acquire") as its own time
(the exporter's idle worker): ``--threads`` (from /proc, unprofiled) gives the real split.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from e2e_services import SERVERS, missing  # noqa: E402

FULL = (3000, 5)  # requests per round, rounds
QUICK = (200, 1)
CONCURRENCY = 32
WARMUP = 300  # requests per pair before the rounds (at most the round's)
#: (server, mode) -> one (requests/s, CPU µs per request of A + B, records per request, CPU µs
#: per request of the load generator) per round.
Samples = dict[tuple[str, str], list[tuple[float, float, float, float]]]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_us(pid: int) -> float:
    """All-thread CPU of process ``pid`` so far (user + system), in µs."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime, all threads
    return ticks / os.sysconf("SC_CLK_TCK") * 1e6


class Pair:
    """Services A and B of one (server, mode), each in its own process; started at once (A
    calls B only when a request comes), ready after :meth:`wait_ready`."""

    def __init__(self, server: str, mode: str, profile_dir: str | None = None) -> None:
        self.server, self.mode = server, mode
        self.urls = [f"http://127.0.0.1:{_free_port()}" for _ in ("a", "b")]
        self.a_url = self.urls[0]
        self.procs: list[subprocess.Popen[bytes]] = []
        for role, url, downstream in (("b", self.urls[1], ""), ("a", self.a_url, self.urls[1])):
            port = url.rsplit(":", 1)[1]
            script = str(HERE / "e2e_services.py")
            args = [sys.executable, script, server, mode, role, port, downstream]
            env = dict(os.environ)
            if profile_dir is not None:
                env["E2E_PROFILE"] = os.path.join(profile_dir, f"{role}.prof")
            self.procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, env=env))

    def wait_ready(self, timeout: float = 120) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        for url, proc in zip(self.urls, reversed(self.procs), strict=True):
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.05)  # bench only: polling the child's port until it answers
            else:
                raise RuntimeError(f"{self.server}/{self.mode} at {url} did not start")

    def cpu_us(self) -> float:
        return sum(cpu_us(proc.pid) for proc in self.procs)

    def flush(self) -> int:
        """Flush both exporters; the records both have handed on so far."""
        import httpx

        records = 0
        for url in self.urls:
            response = httpx.get(f"{url}/flush", timeout=60)
            response.raise_for_status()
            records += int(response.text)
        return records

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


#: The client that sends the load: httpx (as the issue's figures were taken) or aiohttp's
#: (``--loader aiohttp``: about a third of httpx's CPU per request, so less of the machine
#: goes to the load and the services' costs weigh more in throughput).
LOADER = {"name": "httpx"}


async def load(url: str, n: int) -> float:
    """Send ``n`` requests to ``url``/a/{i} at concurrency 32; requests per second."""
    if LOADER["name"] == "aiohttp":
        return await _load_aiohttp(url, n)
    import httpx

    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        todo = iter(range(n))

        async def worker() -> None:
            for i in todo:
                for attempt in range(3):  # a connection reset under load is retried, bounded
                    try:
                        response = await client.get(f"{url}/a/{i}")
                        break
                    except httpx.TransportError:
                        if attempt == 2:
                            raise
                response.raise_for_status()

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return n / (time.perf_counter() - start)


async def _load_aiohttp(url: str, n: int) -> float:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        todo = iter(range(n))

        async def worker() -> None:
            for i in todo:
                async with session.get(f"{url}/a/{i}") as response:
                    response.raise_for_status()
                    await response.read()

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return n / (time.perf_counter() - start)


def measure(n: int, rounds: int, servers: list[str], modes: list[str] | None = None) -> Samples:
    """Every (server, mode) of ``servers`` (and of ``modes`` if given: untraced is always
    measured), ``rounds`` rounds of ``n`` requests."""
    wanted = set(modes or ()) | {"untraced"}
    keys = []
    for server in servers:
        for mode in SERVERS[server]:
            if modes is not None and mode not in wanted:
                continue
            if absent := missing(server, mode):
                print(f"{server} {mode}: n/a (not installed: {', '.join(absent)})")
                continue
            keys.append((server, mode))
    pairs: dict[tuple[str, str], Pair] = {}
    samples: Samples = {k: [] for k in keys}
    try:
        for key in keys:
            pairs[key] = Pair(*key)
        for pair in pairs.values():
            pair.wait_ready()
        for key in keys:
            asyncio.run(load(pairs[key].a_url, min(WARMUP, n)))
            pairs[key].flush()
        records = {key: pairs[key].flush() for key in keys}
        for r in range(rounds):
            shift = r * len(keys) // max(rounds, 1)
            for key in keys[shift:] + keys[:shift]:
                pair = pairs[key]
                before, load_before = pair.cpu_us(), time.process_time()
                rps = asyncio.run(load(pair.a_url, n))
                load_cpu = (time.process_time() - load_before) / n * 1e6
                done = pair.flush()
                cpu = (pair.cpu_us() - before) / n
                samples[key].append((rps, cpu, (done - records[key]) / n, load_cpu))
                records[key] = done
    finally:
        for pair in pairs.values():
            pair.stop()
    return samples


NAN = float("nan")


def rows(samples: Samples, n: int) -> list[dict[str, Any]]:
    """One row per (server, mode): medians across rounds, ratios against the same server's
    untraced pair in the same round."""
    out = []
    for (server, mode), runs in samples.items():
        base = samples[(server, "untraced")]
        rps_x = [run[0] / b[0] for run, b in zip(runs, base, strict=True)]
        # /proc counts CPU in 10 ms ticks: a short round (a smoke run) may read none at all;
        # such a round has no CPU ratio, and a run with none left reports NaN.
        cpu_x = [run[1] / b[1] for run, b in zip(runs, base, strict=True) if b[1]] or [NAN]
        out.append(
            {
                "bench": "end-to-end",
                "server": server,
                "mode": mode,
                "requests": n,
                "rounds": len(runs),
                "rps": round(statistics.median(run[0] for run in runs), 1),
                "x_untraced_rps": round(statistics.median(rps_x), 3),
                "rps_x_range": [round(min(rps_x), 3), round(max(rps_x), 3)],
                "cpu_us_per_req": round(statistics.median(run[1] for run in runs), 1),
                "x_untraced_cpu": round(statistics.median(cpu_x), 3),
                "records_per_req": round(statistics.median(run[2] for run in runs), 2),
                "load_cpu_us_per_req": round(statistics.median(run[3] for run in runs), 1),
            }
        )
    return out


def thread_cpu_us(pid: int) -> dict[str, float]:
    """CPU so far (µs) of each thread of process ``pid``, keyed ``main`` (the thread whose id
    is the process id) or ``other threads`` (a server's request threads, exporters' workers)."""
    out = {"main": 0.0, "other threads": 0.0}
    tick_us = 1e6 / os.sysconf("SC_CLK_TCK")
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        key = "main" if int(tid) == pid else "other threads"
        out[key] += (int(fields[11]) + int(fields[12])) * tick_us
    return out


def threads(server: str, mode: str, n: int) -> None:
    """Unprofiled: CPU per request of each service's main thread and its other threads (the
    background exporter's, and under WSGI the request threads), over ``n`` requests."""
    pair = Pair(server, mode)
    try:
        pair.wait_ready()
        asyncio.run(load(pair.a_url, WARMUP))
        pair.flush()
        before = [thread_cpu_us(proc.pid) for proc in pair.procs]
        rps = asyncio.run(load(pair.a_url, n))
        pair.flush()
        after = [thread_cpu_us(proc.pid) for proc in pair.procs]
    finally:
        pair.stop()
    print(f"{server}/{mode}: {rps:.1f} req/s; CPU µs per request (threads that ended are lost)")
    for role, first, last in zip(("B", "A"), before, after, strict=True):
        for key in first:
            print(f"  {role} {key:<14}{(last[key] - first[key]) / n:>9.1f}")


def _by_package(stats: Any) -> dict[str, float]:
    """Own CPU seconds per top-level package (``tracestitch`` for this project's code)."""
    totals: dict[str, float] = {}
    for (filename, _, name), (_, _, own, _, _) in stats.stats.items():
        if name.startswith("<method 'acquire'"):
            continue  # blocked waits, not CPU (see the module's docstring)
        if "/tracestitch/" in filename and "site-packages" not in filename:
            key = "tracestitch"
        elif "site-packages/" in filename:
            key = filename.split("site-packages/", 1)[1].split("/", 1)[0]
        elif filename.startswith("~") or filename.startswith("<"):
            key = "builtins (C)"
        else:
            key = "stdlib/other"
        totals[key] = totals.get(key, 0.0) + own
    return dict(sorted(totals.items(), key=lambda item: -item[1]))


def profile(server: str, mode: str, n: int, top: int = 25) -> None:
    """cProfile (all threads, thread CPU time) of A and B of one pair under ``n`` requests of
    load after a warm-up: own CPU per package, the ``top`` functions by own time, and
    tracestitch's functions by cumulative time, per request (blocked lock waits left out)."""
    import pstats
    import tempfile

    tmp = tempfile.mkdtemp(prefix=f"e2e-{server}-{mode}-")
    pair = Pair(server, mode, profile_dir=tmp)
    try:
        pair.wait_ready()
        asyncio.run(load(pair.a_url, WARMUP))
        rps = asyncio.run(load(pair.a_url, n))
        pair.flush()
    finally:
        pair.stop()
    requests = n + WARMUP
    print(f"{server}/{mode}: {rps:.1f} req/s under the profiler; profiles in {tmp}")
    for role in ("a", "b"):
        stats = pstats.Stats(os.path.join(tmp, f"{role}.prof"))
        entries = stats.stats  # type: ignore[attr-defined]
        waits = sum(v[2] for k, v in entries.items() if k[2].startswith("<method 'acquire'"))
        total = stats.total_tt - waits  # type: ignore[attr-defined]
        print(f"\n=== service {role.upper()}: {server}/{mode}, {requests} requests")
        print(f"CPU {total:.2f} s = {total / requests * 1e6:.0f} µs/request (profiled, no waits)")
        for package, own in _by_package(stats).items():
            if own / total >= 0.005:
                print(f"  {package:<24}{own:>8.2f} s {own / total:>7.1%}")
        stats.sort_stats("tottime").print_stats(top)
        ours = [(v[3], v[2], v[1], k) for k, v in entries.items() if "/src/tracestitch/" in k[0]]
        print("tracestitch by cumulative time, µs/request: cumulative, own, calls/request")
        for cum, own, calls, (path, line, name) in sorted(ours, reverse=True)[:top]:
            where = f"{path.split('/src/tracestitch/')[1]}:{line}({name})"
            per = 1e6 / requests
            print(f"  {cum * per:>8.0f}{own * per:>7.0f}{calls / requests:>7.2f}  {where}")


def run(quick: bool) -> list[dict[str, Any]]:
    """Rows for ``make bench`` (``run.py``)."""
    n, rounds = QUICK if quick else FULL
    return rows(measure(n, rounds, list(SERVERS)), n)


def table(result: list[dict[str, Any]]) -> str:
    head = (
        f"{'server':<9}{'mode':<16}{'req/s':>9}{'x untraced':>12}{'(min-max)':>15}"
        f"{'CPU µs/req A+B':>16}{'x untraced':>12}{'records/req':>13}{'load CPU µs/req':>17}"
    )
    lines = [head, "-" * len(head)]
    for r in result:
        low, high = r["rps_x_range"]
        lines.append(
            f"{r['server']:<9}{r['mode']:<16}{r['rps']:>9.1f}{r['x_untraced_rps']:>12.3f}"
            f"{f'{low:.3f}-{high:.3f}':>15}{r['cpu_us_per_req']:>16.1f}{r['x_untraced_cpu']:>12.3f}"
            f"{r['records_per_req']:>13.2f}{r['load_cpu_us_per_req']:>17.1f}"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (200 requests, 1 round)")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--requests", type=int)
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--modes", help="a subset of the modes (untraced always runs)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--loader", choices=("httpx", "aiohttp"), default="httpx")
    parser.add_argument("--profile", metavar="SERVER/MODE", help="cProfile one pair instead")
    parser.add_argument(
        "--threads", metavar="SERVER/MODE", help="one pair's CPU per thread instead"
    )
    args = parser.parse_args(argv)
    LOADER["name"] = args.loader
    n, rounds = QUICK if args.quick else FULL
    n, rounds = args.requests or n, args.rounds or rounds
    if args.profile:
        profile(*args.profile.split("/"), n)
        return 0
    if args.threads:
        threads(*args.threads.split("/"), n)
        return 0
    servers = args.servers.split(",")
    print(
        f"{n} requests x {rounds} rounds at concurrency {CONCURRENCY} ({args.loader});"
        f" load {os.getloadavg()}"
    )
    modes = args.modes.split(",") if args.modes else None
    result = rows(measure(n, rounds, servers, modes), n)
    print(table(result))
    print(f"load after: {os.getloadavg()}")
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

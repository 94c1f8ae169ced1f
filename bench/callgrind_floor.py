"""tracestitch against the floor and the peers, in one run: instructions per request (callgrind,
all threads) and all-thread CPU per request, on ``bench_middleware``'s ASGI harness.

Three tables, each printed with its ratios:

1. **Requests** (``requests:<handler>``): the bench app (a Starlette route, a server run plus one
   child, export included) for the variants ``bare``, ``floor`` (``floor.py``: the same runs and
   wire fields done plainly, the reference), ``tracestitch``, ``opentelemetry``, ``langsmith``,
   for the incoming-header cases ``root`` (none), ``parent`` (``langsmith-trace`` + ``baggage``)
   and ``w3c`` (``traceparent`` + ``tracestate``) where a variant reads them (OpenTelemetry reads
   no ``langsmith-trace``, LangSmith no ``traceparent``), and for two handlers: ``hello`` (5 bytes
   of text) and ``json5k`` (a ~5 KB JSON body). Columns: instructions/request, x bare; CPU
   µs/request, x bare. Ratios: tracestitch/floor (same case), tracestitch/OTel (``parent`` is
   compared with OTel's ``w3c``: each variant's own way of receiving a parent), tracestitch/
   LangSmith (``w3c``: n/a).
2. **The core hop** (``hop``): the caller's run from headers, this service's run under it, the
   headers for a downstream call, its end handed to a do-nothing exporter. tracestitch
   (``RunTree.from_headers`` → ``create_child`` → ``to_headers`` → ``end`` + ``post`` to a
   ``NoopExporter``), the LangSmith SDK (the same calls, its client stubbed), OpenTelemetry
   (``extract`` → child span → ``inject`` → ``end``: SDK tracer with no span processor; with the
   ``tracecontext`` propagator alone, and with the default ``tracecontext`` + ``baggage``); with
   ``str`` keys (a dict) and ``bytes`` keys (a dict of bytes for tracestitch and LangSmith;
   OpenTelemetry's own ASGI getter over byte pairs, as its middleware reads them).

How to read it: instruction counts are exact and repeatable (to ~0.1 %): each case runs twice
under callgrind with two request counts and the difference of the totals divided by the
difference of the counts is the per-request cost, so start-up and imports cancel. They are what
to judge a change by. The CPU columns (``time.process_time`` over N requests, the whole
process, after a warm-up; the median of several repeats) show what the instructions miss
(cache misses, branch mispredictions, a hand-off to another core), but they are **wall/CPU
figures: noise-prone on a shared machine**; only their ratios in one run mean anything.

    python bench/callgrind_floor.py --measure           # the full tables (~30-40 min on 2 cores)
    python bench/callgrind_floor.py --measure --quick   # smaller counts (~10 min)
    python bench/callgrind_floor.py --measure --only requests:hello   # one table
    make bench-floor [ARGS=--quick]
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from callgrind_asgi import _BASE_HEADERS, CASES  # noqa: E402 (bench/ on the path first)
from common import asgi_scope, callgrind_instructions  # noqa: E402

os.environ.setdefault("LANGSMITH_TRACING", "true")
os.environ.setdefault("LANGSMITH_API_KEY", "bench-not-used")

VARIANTS = ("bare", "floor", "tracestitch", "opentelemetry", "langsmith")
#: The header cases each variant reads (bare reads none: one row is its every case).
APPLIES = {
    "bare": ("root",),
    "floor": ("root", "parent", "w3c"),
    "tracestitch": ("root", "parent", "w3c"),
    "opentelemetry": ("root", "w3c"),
    "langsmith": ("root", "parent"),
}
#: The peer's case a tracestitch case is compared with (None: the peer cannot read it).
PEER_CASE = {
    "opentelemetry": {"root": "root", "parent": "w3c", "w3c": "w3c"},
    "langsmith": {"root": "root", "parent": "parent", "w3c": None},
}
HANDLERS = ("hello", "json5k")
HOPS = ("tracestitch", "langsmith", "otel-tracecontext", "otel-default")
KEYS = ("str", "bytes")

FULL = {"low": 400, "high": 2000, "hop_low": 2000, "hop_high": 10000, "cpu_n": 3000, "reps": 7}
QUICK = {"low": 100, "high": 500, "hop_low": 500, "hop_high": 2500, "cpu_n": 1000, "reps": 5}

# ---------------------------------------------------------------------------------------------
# Drivers (each run in its own process: under callgrind, or for the CPU figures)
# ---------------------------------------------------------------------------------------------


def _request_driver(variant: str, handler: str, case: str) -> Callable[[int], None]:
    """``drive(n)``: n requests through the variant's app, then its exporter drained."""
    import asyncio

    import bench_middleware

    app, reset = bench_middleware._asgi_app(variant, handler)
    reset()
    scope = asgi_scope([*_BASE_HEADERS, *CASES[case]])
    request = {"type": "http.request", "body": b"", "more_body": False}
    # OpenTelemetry's in-memory exporter keeps every span: emptied as a real exporter would be,
    # so memory (and the collector's traversals) stay flat over the run.
    clear_every = 500 if variant == "opentelemetry" else 0

    async def receive() -> dict[str, Any]:
        return request

    async def send(message: Any) -> None:
        return None

    async def many(n: int) -> None:
        for i in range(n):
            await app(dict(scope), receive, send)
            if clear_every and i % clear_every == clear_every - 1:
                reset()

    loop = asyncio.new_event_loop()

    def drive(n: int) -> None:
        loop.run_until_complete(many(n))
        bench_middleware.flush_exporters(120)

    return drive


_PARENT_ORDER = CASES["parent"][0][1]
_BAGGAGE = CASES["parent"][1][1]
_TRACEPARENT = CASES["w3c"][0][1]
_TRACESTATE = CASES["w3c"][1][1]


def _hop_driver(hop: str, keys: str) -> Callable[[int], None]:
    """``drive(n)``: n core hops (see the module docstring)."""
    if hop == "tracestitch":
        from tracestitch.exporter import NoopExporter, set_exporter
        from tracestitch.run_tree import RunTree

        set_exporter(NoopExporter())
        raw = {b"langsmith-trace": _PARENT_ORDER, b"baggage": _BAGGAGE}
        headers: Any = raw if keys == "bytes" else {k.decode(): v.decode() for k, v in raw.items()}

        def ts_drive(n: int) -> None:
            for _ in range(n):
                parent = RunTree.from_headers(headers)
                assert parent is not None
                run = parent.create_child("server", inputs={"x": 1})
                run.to_headers()
                run.end(outputs={"y": 1})
                run.post()

        return ts_drive
    if hop == "langsmith":
        from bench_middleware import _StubLangSmithClient
        from langsmith.run_trees import RunTree as LangSmithRunTree

        client = _StubLangSmithClient()
        raw = {b"langsmith-trace": _PARENT_ORDER, b"baggage": _BAGGAGE}
        headers = raw if keys == "bytes" else {k.decode(): v.decode() for k, v in raw.items()}

        def ls_drive(n: int) -> None:
            for _ in range(n):
                parent = LangSmithRunTree.from_headers(headers, client=client)
                assert parent is not None
                run = parent.create_child("server", inputs={"x": 1})
                run.to_headers()
                run.end(outputs={"y": 1})
                run.post()

        return ls_drive
    if hop in ("otel-tracecontext", "otel-default"):
        from opentelemetry import trace
        from opentelemetry.baggage.propagation import W3CBaggagePropagator
        from opentelemetry.instrumentation.asgi import asgi_getter
        from opentelemetry.propagators.composite import CompositePropagator
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        tracer = TracerProvider().get_tracer("bench")  # no span processor: ending does nothing
        propagator: Any = TraceContextTextMapPropagator()
        if hop == "otel-default":
            propagator = CompositePropagator([propagator, W3CBaggagePropagator()])
        pairs = [(b"traceparent", _TRACEPARENT), (b"tracestate", _TRACESTATE)]
        pairs.append((b"baggage", _BAGGAGE))
        carrier: Any = (
            {"headers": pairs} if keys == "bytes" else {k.decode(): v.decode() for k, v in pairs}
        )
        getter: Any = asgi_getter if keys == "bytes" else None
        extract_kwargs = {"getter": getter} if getter is not None else {}
        server_kind = trace.SpanKind.SERVER

        def otel_drive(n: int) -> None:
            for _ in range(n):
                ctx = propagator.extract(carrier, **extract_kwargs)
                span = tracer.start_span("server", ctx, server_kind, attributes={"x": 1})
                out: dict[str, str] = {}
                propagator.inject(out, trace.set_span_in_context(span, ctx))
                span.set_attribute("y", 1)
                span.end()

        return otel_drive
    raise ValueError(hop)


def _cpu(drive: Callable[[int], None], n: int, reps: int) -> list[float]:
    """All-thread CPU µs per request over ``n`` requests, ``reps`` times after a warm-up."""
    drive(max(100, n // 4))
    found = []
    for _ in range(reps):
        gc.collect()
        cpu0 = time.process_time()
        drive(n)
        found.append((time.process_time() - cpu0) / n * 1e6)
    return found


# ---------------------------------------------------------------------------------------------
# Measuring (the parent process: runs the drivers in subprocesses)
# ---------------------------------------------------------------------------------------------


def _per_item(args: tuple[str, ...], low: int, high: int) -> float:
    """Instructions per item by the two-count difference (start-up cancels)."""
    lo = callgrind_instructions(__file__, *args, str(low))
    hi = callgrind_instructions(__file__, *args, str(high))
    per_item = (hi - lo) / (high - low)
    print(f"  {' '.join(args)}: {per_item:,.0f} instructions", file=sys.stderr, flush=True)
    return per_item


def _cpu_child(args: tuple[str, ...], n: int, reps: int) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "cpu", *args, str(n), str(reps)],
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    )
    median = statistics.median(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"  {' '.join(args)}: {median:.1f} µs CPU", file=sys.stderr, flush=True)
    return median


def _cells(cases: list[tuple[str, ...]], counts: dict[str, int], jobs: int, hop: bool) -> Any:
    low, high = (counts["hop_low"], counts["hop_high"]) if hop else (counts["low"], counts["high"])
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {c: pool.submit(_per_item, c, low, high) for c in cases}
        instructions = {c: f.result() for c, f in futures.items()}
    # CPU after callgrind, one process at a time: the figures are noisy enough alone.
    cpu = {c: _cpu_child(c, counts["cpu_n"] * (4 if hop else 1), counts["reps"]) for c in cases}
    return instructions, cpu


def _fmt_ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or b is None or b == 0 else f"{a / b:.2f}"


def measure_requests(handler: str, counts: dict[str, int], jobs: int) -> None:
    cases = [("req", v, handler, c) for v in VARIANTS for c in APPLIES[v]]
    ins, cpu = _cells(cases, counts, jobs, hop=False)
    bare_i, bare_c = ins[("req", "bare", handler, "root")], cpu[("req", "bare", handler, "root")]
    print(f"\n## requests:{handler} — per request, all threads (bare: any case)")
    head = f"{'variant':<15}{'case':<8}{'instructions':>14}{'x bare':>8}{'CPU µs':>10}{'x bare':>8}"
    print(head)
    print("-" * len(head))
    for _, v, _, c in cases:
        i, u = ins[("req", v, handler, c)], cpu[("req", v, handler, c)]
        print(f"{v:<15}{c:<8}{i:>14,.0f}{i / bare_i:>8.2f}{u:>10.1f}{u / bare_c:>8.2f}")

    def get(table: dict[Any, float], v: str, c: str | None) -> float | None:
        return None if c is None else table.get(("req", v, handler, c))

    print(f"\ntracestitch ratios, requests:{handler} (instructions | CPU)")
    head = f"{'case':<8}{'ts/floor':>18}{'ts/OTel':>18}{'ts/LangSmith':>18}"
    print(head)
    print("-" * len(head))
    for c in APPLIES["tracestitch"]:
        row = f"{c:<8}"
        for peer, peer_case in (
            ("floor", c),
            ("opentelemetry", PEER_CASE["opentelemetry"][c]),
            ("langsmith", PEER_CASE["langsmith"][c]),
        ):
            r_i = _fmt_ratio(get(ins, "tracestitch", c), get(ins, peer, peer_case))
            r_c = _fmt_ratio(get(cpu, "tracestitch", c), get(cpu, peer, peer_case))
            row += f"{r_i + ' | ' + r_c:>18}"
        print(row)


def measure_hops(counts: dict[str, int], jobs: int) -> None:
    cases = [("hop", h, k) for k in KEYS for h in HOPS]
    ins, cpu = _cells(cases, counts, jobs, hop=True)
    print("\n## hop — from headers, child, to headers, end (+ post to a no-op), per hop")
    head = (
        f"{'hop':<19}{'keys':<7}{'instructions':>14}{'CPU µs':>9}"
        f"{'ts/this instr':>15}{'ts/this CPU':>13}"
    )
    print(head)
    print("-" * len(head))
    for _, h, k in cases:
        i, u = ins[("hop", h, k)], cpu[("hop", h, k)]
        ts_i, ts_u = ins[("hop", "tracestitch", k)], cpu[("hop", "tracestitch", k)]
        print(f"{h:<19}{k:<7}{i:>14,.0f}{u:>9.1f}{ts_i / i:>15.2f}{ts_u / u:>13.2f}")


def measure(quick: bool, only: list[str], jobs: int) -> None:
    counts = QUICK if quick else FULL
    from common import machine

    print(
        f"callgrind_floor ({'quick' if quick else 'full'}: {counts}) on {machine()}\n"
        "Instructions: callgrind, all threads, two-count difference (exact, repeatable). "
        "CPU: time.process_time, all threads, median of repeats: wall/CPU, noise-prone."
    )
    tables = [f"requests:{h}" for h in HANDLERS] + ["hop"]
    for table in tables:
        if only and table not in only:
            continue
        started = time.perf_counter()
        if table == "hop":
            measure_hops(counts, jobs)
        else:
            measure_requests(table.partition(":")[2], counts, jobs)
        print(f"({time.perf_counter() - started:.0f} s)", flush=True)


def _driver(args: list[str]) -> Callable[[int], None]:
    if args[0] == "req":
        return _request_driver(args[1], args[2], args[3])
    return _hop_driver(args[1], args[2])


def main(argv: list[str]) -> None:
    if argv[:1] == ["--measure"]:
        only = [argv[i + 1] for i, a in enumerate(argv) if a == "--only"]
        jobs = int(next((argv[i + 1] for i, a in enumerate(argv) if a == "--jobs"), "2"))
        measure("--quick" in argv, only, jobs)
    elif argv[:1] == ["cpu"]:  # cpu <driver args...> n reps
        drive = _driver(argv[1:-2])
        print(json.dumps(_cpu(drive, int(argv[-2]), int(argv[-1]))))
    else:  # <driver args...> n: one run, counted by callgrind from outside
        _driver(argv[:-1])(int(argv[-1]))


if __name__ == "__main__":
    main(sys.argv[1:])

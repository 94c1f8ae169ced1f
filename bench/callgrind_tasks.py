"""Instructions per Celery task and per gRPC unary call, counted by callgrind: bare, with
tracestitch's integration, and with OpenTelemetry's instrumentation of the same library, in
one run.

- **celery:** one cycle is a publish (``apply_async`` through kombu's in-memory transport: the
  real publishing path, ``before_task_publish`` included) inside a parent run/span, and one
  execution of the task from the message that publish made, through Celery's own task tracer
  (``build_tracer``: the ``task_prerun``/``task_postrun`` path a worker takes), minus the broker
  round trip and the worker's message handling, which cost every variant the same.
- **grpc:** one cycle is a unary call inside a parent run/span over a real channel to a real
  ``grpc.server`` on 127.0.0.1 (client and server interceptors).

tracestitch exports through its real background exporter (a sink that serializes and drops);
OpenTelemetry through the SDK's ``SimpleSpanProcessor`` into an in-memory exporter, as in
``bench_middleware``. Each case runs twice under callgrind (two cycle counts); the difference of
the totals divided by the difference of the counts is the per-cycle cost, start-up and imports
cancelled out. The overhead is a variant minus bare; the headline is tracestitch's overhead over
OpenTelemetry's::

    python bench/callgrind_tasks.py --measure          # runs valgrind itself, prints the table
    python bench/callgrind_tasks.py --wall             # the same cycles timed, no valgrind

Needs ``opentelemetry-instrumentation-celery`` and ``-grpc`` (bench/requirements.txt). Not part
of ``make test``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import (  # noqa: E402 (bench/ on the path first)
    best_microseconds,
    callgrind_instructions,
    print_overheads,
)

os.environ.setdefault("TRACESTITCH_TRACING", "true")  # before tracestitch is imported

VARIANTS = ("bare", "tracestitch", "opentelemetry")
LIBRARIES = ("celery", "grpc")


_OTEL: dict[str, Any] = {}


def _otel_tracer() -> Any:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _OTEL["exporter"] = exporter
    return provider.get_tracer("bench"), exporter


def _parent(variant: str) -> Callable[[], Any]:
    """A context manager factory: the parent run (span) each cycle runs in."""
    if variant == "tracestitch":
        from tracestitch import trace

        return lambda: trace("parent")
    if variant == "opentelemetry":
        tracer, exporter = _otel_tracer()

        def span() -> Any:
            exporter.clear()  # memory stays flat over thousands of cycles
            return tracer.start_as_current_span("parent")

        return span
    from contextlib import nullcontext

    return nullcontext


def _celery_cycle(variant: str) -> Callable[[], None]:
    from celery import Celery
    from celery.app.trace import build_tracer

    app = Celery("bench", broker="memory://", backend="cache+memory://")
    app.conf.task_ignore_result = True
    app.conf.broker_connection_retry_on_startup = True
    captured: dict[str, Any] = {}
    if variant == "tracestitch":
        from tracestitch.integrations.celery import instrument_celery

        instrument_celery(app)
    elif variant == "opentelemetry":
        from opentelemetry.instrumentation.celery import CeleryInstrumentor

        parent = _parent(variant)  # the provider first: the instrumentor takes the global one
        CeleryInstrumentor().instrument()
    from celery import signals

    @signals.before_task_publish.connect(weak=False)
    def keep(headers: Any = None, **_: Any) -> None:  # what the worker would receive
        captured["headers"] = dict(headers or {})

    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    if variant != "opentelemetry":
        parent = _parent(variant)
    producer = app.producer_pool.acquire(block=True)
    # The worker's own path: Celery's task tracer called with the request as a worker builds it
    # from the message (its headers as attributes, the custom ones also under "headers"), so
    # each variant finds the context where it looks for it.
    tracer = build_tracer(add.name, add, app=app, hostname="bench")

    def cycle() -> None:
        with parent():
            add.apply_async((1, 2), producer=producer)
        headers = captured["headers"]
        request = {**headers, "headers": headers, "delivery_info": {"routing_key": "celery"}}
        tracer(headers["id"], (1, 2), {}, request)

    return cycle


def _grpc_cycle(variant: str) -> Callable[[], None]:
    import grpc

    server_interceptors: list[Any] = []
    client_interceptors: list[Any] = []
    if variant == "tracestitch":
        from tracestitch.integrations.grpc import client_interceptor, server_interceptor

        server_interceptors.append(server_interceptor())
        client_interceptors.append(client_interceptor())
    parent = _parent(variant)
    otel_client = None
    if variant == "opentelemetry":
        from opentelemetry.instrumentation import grpc as otel_grpc

        server_interceptors.append(otel_grpc.server_interceptor())
        otel_client = otel_grpc.client_interceptor()

    def echo(request: bytes, context: Any) -> bytes:
        return request

    server = grpc.server(futures.ThreadPoolExecutor(2), interceptors=server_interceptors)
    handlers = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
    )
    server.add_generic_rpc_handlers((handlers,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.intercept_channel(
        grpc.insecure_channel(f"127.0.0.1:{port}"), *client_interceptors
    )
    if otel_client is not None:
        # OpenTelemetry's client interceptor is of its own kind, wired by its own helper.
        from opentelemetry.instrumentation.grpc import grpcext

        channel = grpcext.intercept_channel(channel, otel_client)
    call = channel.unary_unary("/bench.Echo/Echo")
    call(b"warm-up")

    def cycle() -> None:
        with parent():
            call(b"ping")

    cycle.server = server  # type: ignore[attr-defined]  # a server collected is a server stopped
    return cycle


#: Runs (spans) one cycle makes: the parent, the task's; the parent, the client's, the server's.
EXPECTED = {"celery": 2, "grpc": 3}


def _build(library: str, variant: str) -> Callable[[], None]:
    if variant == "tracestitch":
        from common import install_real_exporter

        install_real_exporter()
    cycle = _celery_cycle(variant) if library == "celery" else _grpc_cycle(variant)
    _check(library, variant, cycle)
    return cycle


def _check(library: str, variant: str, cycle: Callable[[], None]) -> None:
    """One cycle, making sure the variant records what it should (a bench of a tracer that
    records nothing would flatter it)."""
    if variant == "tracestitch":
        from tracestitch.testing import capture_runs

        with capture_runs() as runs:
            cycle()
        made = len(runs)
    elif variant == "opentelemetry":
        cycle()  # the parent clears the exporter as it starts: what is there is this cycle's
        made = len(_OTEL["exporter"].get_finished_spans())
    else:
        return
    if made < EXPECTED[library]:
        raise RuntimeError(f"{library}/{variant} made {made} runs, not {EXPECTED[library]}")


def _drive(library: str, variant: str, n: int) -> None:
    cycle = _build(library, variant)
    for _ in range(n):
        cycle()
    if variant == "tracestitch":
        from tracestitch.exporter import get_exporter

        get_exporter().flush(60)  # the worker's serialization is part of each cycle's cost
    os._exit(0)  # grpc's threads and Celery's pools would otherwise outlive the count


def _instructions(library: str, variant: str, n: int) -> int:
    # gRPC's threads and the export worker hand work to each other: fair scheduling.
    return callgrind_instructions(__file__, library, variant, str(n), fair_sched=True)


def measure(low: int, high: int, libraries: tuple[str, ...] = LIBRARIES) -> None:
    print(f"{'lib':<8}{'variant':<15}{'per cycle':>16}{'over bare':>16}")
    for library in libraries:
        costs = {
            v: (_instructions(library, v, high) - _instructions(library, v, low)) / (high - low)
            for v in VARIANTS
        }
        print_overheads(library, costs, "instructions")


def wall(n: int) -> None:
    """Wall clock per cycle (best of 3, each variant in its own process): noisy on a shared
    machine; the callgrind figures are the ones to quote."""
    print(f"{'lib':<8}{'variant':<15}{'per cycle':>16}{'over bare':>16}")
    for library in LIBRARIES:
        costs = {}
        for variant in VARIANTS:
            out = subprocess.run(
                [sys.executable, __file__, "--time", library, variant, str(n)],
                capture_output=True,
                text=True,
                check=True,
            )
            costs[variant] = float(out.stdout.strip().splitlines()[-1])
        print_overheads(library, costs, "µs")


def _time(library: str, variant: str, n: int) -> None:
    print(best_microseconds(_build(library, variant), n), flush=True)
    os._exit(0)


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--measure"]:
        low, high = (int(args[1]), int(args[2])) if len(args) > 2 else (100, 400)
        measure(low, high, tuple(args[3:]) or LIBRARIES)
    elif args[:1] == ["--wall"]:
        wall(int(args[1]) if len(args) > 1 else 500)
    elif args[:1] == ["--time"]:
        _time(args[1], args[2], int(args[3]))
    else:
        _drive(args[0], args[1], int(args[2]))

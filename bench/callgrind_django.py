"""Instructions per Django request, counted by callgrind: bare, with tracestitch's middleware
(``tracestitch.middleware.django``) and with OpenTelemetry's Django instrumentation
(``opentelemetry-instrumentation-django``), in one run.

One cycle is one request through Django's own handler, in process: ``wsgi`` calls the
``WSGIHandler`` with an environ and drains the response (a sync view), ``asgi`` runs the
``ASGIHandler`` on one event loop with a scope (an async view). Both answer a small JSON body
from a route with a converter (``/orders/<int:order_id>``), the request carrying no trace
(a new root each time) or a W3C ``traceparent`` (``--case w3c``, what both tracers read).

tracestitch exports through its real background exporter (a sink that serializes and drops);
OpenTelemetry through the SDK's ``SimpleSpanProcessor`` into an in-memory exporter, as in
``callgrind_tasks``. Each case runs twice under callgrind (two request counts); the difference
of the totals divided by the difference of the counts is the per-request cost, start-up and
imports cancelled out. The overhead is a variant minus bare; the headline is tracestitch's
overhead over OpenTelemetry's::

    python bench/callgrind_django.py --measure          # runs valgrind itself, prints the table
    python bench/callgrind_django.py --measure 50 250 asgi --case w3c   # one mode, one case
    python bench/callgrind_django.py --wall             # the same requests timed, no valgrind

Needs ``opentelemetry-instrumentation-django`` (bench/requirements.txt, the dev extra). Not
part of ``make test``.
"""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
from collections.abc import Callable
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
MODES = ("wsgi", "asgi")
CASES = {
    "root": {},
    "w3c": {"traceparent": "00-0190a4f37f2b7c3d8e4f0123456789ab-8e4f0123456789ac-01"},
}
_OTEL: dict[str, Any] = {}


def _order(request: Any, order_id: int) -> Any:
    from django.http import JsonResponse

    return JsonResponse({"id": order_id})


async def _order_async(request: Any, order_id: int) -> Any:
    from django.http import JsonResponse

    return JsonResponse({"id": order_id})


def _urls(mode: str) -> list[Any]:
    from django.urls import include, path

    view = _order if mode == "wsgi" else _order_async
    return [path("api/", include([path("orders/<int:order_id>", view)]))]


def _setup(mode: str, variant: str) -> None:
    import django
    from django.conf import settings

    middleware = ["django.middleware.common.CommonMiddleware"]
    if variant == "tracestitch":
        from common import install_real_exporter

        install_real_exporter()
        middleware.insert(0, "tracestitch.middleware.django.TracingMiddleware")
    settings.configure(
        DEBUG=False,
        SECRET_KEY="bench",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=middleware,
        INSTALLED_APPS=[],
        TRACESTITCH_MIDDLEWARE={"service": "bench"},
    )
    django.setup()
    sys.modules[__name__].urlpatterns = _urls(mode)  # type: ignore[attr-defined]
    if variant == "opentelemetry":
        from opentelemetry import trace
        from opentelemetry.instrumentation.django import DjangoInstrumentor
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        provider = TracerProvider()
        exporter = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        _OTEL["exporter"] = exporter
        DjangoInstrumentor().instrument()  # inserts its middleware into settings.MIDDLEWARE


def _wsgi_cycle(headers: dict[str, str]) -> Callable[[], None]:
    from django.core.handlers.wsgi import WSGIHandler

    handler = WSGIHandler()
    base = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/api/orders/7",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_USER_AGENT": "bench/1.0",
        "wsgi.url_scheme": "http",
        "wsgi.version": (1, 0),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        **{"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()},
    }
    statuses: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        statuses.append(status)

    def cycle() -> None:
        environ = {**base, "wsgi.input": io.BytesIO(b"")}
        response = handler(environ, start_response)
        body = b"".join(response)
        response.close()
        if body != b'{"id": 7}' or statuses.pop() != "200 OK":
            raise RuntimeError(f"unexpected answer {body!r}")

    return cycle


def _asgi_cycle(headers: dict[str, str]) -> Callable[[], None]:
    from django.core.handlers.asgi import ASGIHandler

    handler = ASGIHandler()
    loop = asyncio.new_event_loop()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/api/orders/7",
        "raw_path": b"/api/orders/7",
        "query_string": b"",
        "root_path": "",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"user-agent", b"bench/1.0"),
            *((k.encode(), v.encode()) for k, v in headers.items()),
        ],
    }
    sent: list[dict[str, Any]] = []

    async def request() -> None:
        delivered = False
        forever = loop.create_future()

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if delivered:
                return await forever  # Django listens for a disconnect until it answered
            delivered = True
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await handler(dict(scope), receive, send)

    def cycle() -> None:
        loop.run_until_complete(request())
        body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        if sent[0]["status"] != 200 or body != b'{"id": 7}':
            raise RuntimeError(f"unexpected answer {sent!r}")
        sent.clear()

    return cycle


def _build(mode: str, variant: str, case: str) -> Callable[[], None]:
    _setup(mode, variant)
    cycle = (_wsgi_cycle if mode == "wsgi" else _asgi_cycle)(CASES[case])
    _check(variant, cycle)
    if variant == "opentelemetry":
        exporter = _OTEL["exporter"]
        inner = cycle

        def cycle() -> None:
            inner()
            exporter.clear()  # memory stays flat over thousands of requests

    return cycle


def _check(variant: str, cycle: Callable[[], None]) -> None:
    """One request, making sure the variant records its server run/span, named by the route
    (a bench of a tracer that records nothing would flatter it)."""
    if variant == "tracestitch":
        from tracestitch.testing import capture_runs

        with capture_runs() as runs:
            cycle()
        names = [r.name for r in runs]
    elif variant == "opentelemetry":
        cycle()
        names = [s.name for s in _OTEL["exporter"].get_finished_spans()]
        _OTEL["exporter"].clear()
    else:
        cycle()
        return
    if len(names) != 1 or "orders/<int:order_id>" not in names[0]:
        raise RuntimeError(f"{variant} recorded {names}")


def _drive(mode: str, variant: str, case: str, n: int) -> None:
    cycle = _build(mode, variant, case)
    for _ in range(n):
        cycle()
    if variant == "tracestitch":
        from tracestitch.exporter import get_exporter

        get_exporter().flush(60)  # the worker's serialization is part of each request's cost
    os._exit(0)


def measure(low: int, high: int, case: str, modes: tuple[str, ...] = MODES) -> None:
    print(f"{'mode/case':<12}{'variant':<15}{'per request':>16}{'over bare':>16}")
    for mode in modes:
        costs = {}
        for variant in VARIANTS:
            # The export worker and Django's sync_to_async threads hand work to each other.
            counts = [
                callgrind_instructions(__file__, mode, variant, case, str(n), fair_sched=True)
                for n in (low, high)
            ]
            costs[variant] = (counts[1] - counts[0]) / (high - low)
        print_overheads(f"{mode}/{case}", costs, "instructions", width=12)


def wall(n: int, case: str) -> None:
    """Wall clock per request (best of 3, each variant in its own process): noisy on a shared
    machine; the callgrind figures are the ones to quote."""
    print(f"{'mode/case':<12}{'variant':<15}{'per request':>16}{'over bare':>16}")
    for mode in MODES:
        costs = {}
        for variant in VARIANTS:
            out = subprocess.run(
                [sys.executable, __file__, "--time", mode, variant, case, str(n)],
                capture_output=True,
                text=True,
                check=True,
            )
            costs[variant] = float(out.stdout.strip().splitlines()[-1])
        print_overheads(f"{mode}/{case}", costs, "µs", width=12)


def _time(mode: str, variant: str, case: str, n: int) -> None:
    print(best_microseconds(_build(mode, variant, case), n), flush=True)
    os._exit(0)


if __name__ == "__main__":
    args = sys.argv[1:]
    case = "root"
    if "--case" in args:
        at = args.index("--case")
        case = args[at + 1]
        del args[at : at + 2]
    if args[:1] == ["--measure"]:
        low, high = (int(args[1]), int(args[2])) if len(args) > 2 else (100, 400)
        measure(low, high, case, tuple(args[3:]) or MODES)
    elif args[:1] == ["--wall"]:
        wall(int(args[1]) if len(args) > 1 else 500, case)
    elif args[:1] == ["--time"]:
        _time(args[1], args[2], args[3], int(args[4]))
    else:
        _drive(args[0], args[1], args[2], int(args[3]))

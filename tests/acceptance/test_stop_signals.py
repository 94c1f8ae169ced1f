"""SIGTERM and SIGINT while a service answers, the way it is stopped in production: a fresh
uvicorn (or werkzeug) process configured only through the environment, exporting to the real
``tracestitch serve``, signalled right after its last answers and while requests are in flight.
Every request that got a response has its runs in the collector once the process is gone.

uvicorn drains its connections, runs the ASGI lifespan shutdown (Django has none), restores the
handlers it found and raises SIGTERM again, so no ``atexit`` hook runs; with ``--workers`` the
app is imported after uvicorn took the signal. werkzeug leaves SIGTERM at its default.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from acceptance_helpers import Collector, clean_env

#: A Starlette service: a fast route, and one held until the test drops the release file
#: (``RELEASE_FILE``), so that it is answered during the server's shutdown.
STARLETTE = """
import asyncio, os
from pathlib import Path
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from tracestitch import traceable
from tracestitch.middleware.asgi import TracingMiddleware

@traceable
def price(n):
    return n * 3

async def order(request):
    return JSONResponse({"price": price(request.path_params["n"])})

async def held(request):
    n = request.path_params["n"]
    print(f"holding {n}", flush=True)
    release = Path(os.environ["RELEASE_FILE"])
    for _ in range(6000):  # the app's own wait for its release, bounded
        if release.exists():
            break
        await asyncio.sleep(0.01)
    return JSONResponse({"price": price(n)})

app = Starlette(routes=[Route("/orders/{n:int}", order), Route("/held/{n:int}", held)])
app.add_middleware(TracingMiddleware, service="orders")
"""

#: The same service as a Django project (``shop``), configured by DJANGO_SETTINGS_MODULE.
DJANGO = {
    "shop/__init__.py": "",
    "shop/settings.py": """
SECRET_KEY = "test-only"
ALLOWED_HOSTS = ["127.0.0.1"]
ROOT_URLCONF = "shop.urls"
MIDDLEWARE = ["tracestitch.middleware.django.TracingMiddleware"]
""",
    "shop/urls.py": """
import asyncio, os
from pathlib import Path
from django.http import JsonResponse
from django.urls import path
from tracestitch import traceable

@traceable
def price(n):
    return n * 3

def order(request, n):
    return JsonResponse({"price": price(n)})

async def held(request, n):
    print(f"holding {n}", flush=True)
    release = Path(os.environ["RELEASE_FILE"])
    for _ in range(6000):  # the app's own wait for its release, bounded
        if release.exists():
            break
        await asyncio.sleep(0.01)
    return JsonResponse({"price": price(n)})

urlpatterns = [path("orders/<int:n>", order), path("held/<int:n>", held)]
""",
    "shop/asgi.py": """
from django.core.asgi import get_asgi_application
application = get_asgi_application()
""",
}

#: A Flask service (WSGI middleware) for ``flask run``, werkzeug's server.
FLASK = """
from flask import Flask
from tracestitch import traceable
from tracestitch.middleware.wsgi import TracingMiddleware

app = Flask(__name__)

@traceable
def price(n):
    return n * 3

@app.get("/orders/<int:n>")
def order(n):
    return {"price": price(n)}

app.wsgi_app = TracingMiddleware(app.wsgi_app, service="orders")
"""

DEADLINE = 30.0
#: A batch leaves every 10 s (a setting users choose): whatever is not flushed on the way out
#: is certainly still queued when the signal comes, where the default 0.2 s would only lose
#: some of it, some of the time.
SLOW_BATCHES = {"TRACESTITCH_FLUSH_INTERVAL": "10"}
#: Requests answered before the signal.
FAST = 20


class Service:
    """A service process whose output lines are collected as they come (both pipes read on
    threads, so the test can wait for a line without blocking on the other pipe)."""

    def __init__(self, command: list[str], cwd: Path, env: dict[str, str], fds: list[int]):
        self.proc = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            pass_fds=fds,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read, args=(pipe,), daemon=True)
            for pipe in (self.proc.stdout, self.proc.stderr)
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, pipe: object) -> None:
        for line in pipe:  # type: ignore[attr-defined]
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()

    def wait_for(self, text: str, count: int = 1) -> None:
        """Until ``text`` appeared ``count`` times (the process's own progress reports).
        Occurrences, not lines: two worker processes writing to one pipe at once can put two
        reports on one line ("holding 101holding 102")."""
        with self._changed:
            found = self._changed.wait_for(
                lambda: sum(line.count(text) for line in self.lines) >= count, DEADLINE
            )
        assert found, f"{count} x {text!r} not seen:\n{self.output()}"

    def wait(self) -> int:
        code = self.proc.wait(DEADLINE)
        for reader in self._readers:
            reader.join(DEADLINE)
        return code

    def output(self) -> str:
        return "".join(self.lines)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(DEADLINE)


@contextmanager
def uvicorn_service(
    tmp_path: Path, target: str, env: dict[str, str], *options: str
) -> Iterator[tuple[Service, str]]:
    """``uvicorn target`` on a listening socket bound here (port 0) and passed as ``--fd``,
    so several workers share it; yields once it answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    command = [sys.executable, "-m", "uvicorn", target, "--fd", str(sock.fileno())]
    service = Service([*command, "--no-access-log", *options], tmp_path, env, [sock.fileno()])
    sock.close()  # the server holds it now
    try:
        yield service, url
    finally:
        service.kill()


def _answered(client: httpx.Client, path: str) -> bool:
    """GET ``path``; whether it was answered 200 with the right price."""
    n = int(path.rsplit("/", 1)[1])
    try:
        response = client.get(path)
    except httpx.TransportError:
        return False
    return response.status_code == 200 and response.json() == {"price": 3 * n}


def _answers(url: str, requests: int) -> int:
    """Once the server answers (it is starting: a bounded wait on that condition), GET
    ``requests`` fast routes; how many were answered."""
    with httpx.Client(base_url=url, timeout=DEADLINE) as client:
        deadline = time.monotonic() + DEADLINE
        while not _answered(client, "/orders/0"):
            assert time.monotonic() < deadline, "the service never answered"
            time.sleep(0.05)
        return 1 + sum(_answered(client, f"/orders/{n}") for n in range(1, requests))


def _held(url: str, n: int, results: list[bool]) -> None:
    with httpx.Client(base_url=url, timeout=DEADLINE) as client:
        results.append(_answered(client, f"/held/{n}"))


#: name: (app files, uvicorn target, uvicorn options). A single uvicorn process imports the
#: app before it takes SIGTERM, so it re-raises the signal into tracestitch's handler; its
#: workers (``--workers``) import the app after, so tracestitch's handler calls uvicorn's and
#: the middleware flushes each request answered during the drain.
CASES = {
    "starlette": ({"service.py": STARLETTE}, "service:app", ()),
    "starlette, --lifespan off, 2 workers": (
        {"service.py": STARLETTE},
        "service:app",
        ("--lifespan", "off", "--workers", "2"),
    ),
    "django": (DJANGO, "shop.asgi:application", ()),
    "django, 2 workers": (DJANGO, "shop.asgi:application", ("--workers", "2")),
}


@pytest.mark.parametrize(
    ("case", "signum"),
    [
        *((case, signal.SIGTERM) for case in CASES),
        ("django", signal.SIGINT),
    ],
)
def test_every_answered_request_is_stored_after_a_stop_signal(
    collector: Collector, tmp_path: Path, case: str, signum: signal.Signals
) -> None:
    files, target, options = CASES[case]
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    release = tmp_path / "release"
    env = clean_env(
        TRACESTITCH_ENDPOINT=collector.url,
        TRACESTITCH_SPOOL_DIR="off",
        DJANGO_SETTINGS_MODULE="shop.settings",
        PYTHONPATH=str(tmp_path),
        RELEASE_FILE=str(release),
        **SLOW_BATCHES,
    )
    workers = 2 if "--workers" in options else 1
    held = 4
    with uvicorn_service(tmp_path, target, env, *options) as (service, url):
        answered = _answers(url, FAST)
        results: list[bool] = []
        clients = [
            threading.Thread(target=_held, args=(url, n, results)) for n in range(100, 100 + held)
        ]
        for client in clients:
            client.start()
        service.wait_for("holding", held)  # in flight
        service.proc.send_signal(signum)  # right after the last fast answer: runs still queued
        # Every worker is draining before the held requests are answered.
        service.wait_for("Shutting down", workers)
        release.touch()
        for client in clients:
            client.join(DEADLINE)
        code = service.wait()
    answered += sum(results)
    assert answered == FAST + held, service.output()
    assert code in (0, -signum), service.output()  # a supervisor exits 0 after its workers
    rows = collector.wait_for_runs(2 * answered, timeout=2.0)
    assert len(rows) == 2 * answered, f"{len(rows)} of {2 * answered} runs stored"
    assert all(r["end_us"] is not None for r in rows)
    servers = {r["name"] for r in rows if r["parent_run_id"] is None}
    route = "<int:n>" if files is DJANGO else "{n}"
    assert servers == {f"GET /orders/{route}", f"GET /held/{route}"}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_flask_dev_server_stopped_by_a_signal_delivers_its_answered_requests(
    collector: Collector, tmp_path: Path, signum: signal.Signals
) -> None:
    # werkzeug leaves SIGTERM at its default: the process is killed, no atexit hook runs.
    # SIGINT exits through atexit while the request threads still run: the last request's
    # run ends (its body's close) just after its response, as the exporter shuts down.
    (tmp_path / "service.py").write_text(FLASK)
    env = clean_env(TRACESTITCH_ENDPOINT=collector.url, TRACESTITCH_SPOOL_DIR="off", **SLOW_BATCHES)
    command = [sys.executable, "-m", "flask", "--app", "service", "run", "--port", "0"]
    service = Service(command, tmp_path, env, [])
    try:
        service.wait_for("Running on")
        line = next(line for line in service.lines if "Running on" in line)
        url = line.split("Running on ")[1].split()[0]
        answered = _answers(url, FAST)
        service.proc.send_signal(signum)
        code = service.wait()
    finally:
        service.kill()
    assert answered == FAST
    assert code == (-signal.SIGTERM if signum == signal.SIGTERM else 0), service.output()
    rows = collector.wait_for_runs(2 * answered, timeout=2.0)
    assert len(rows) == 2 * answered, f"{len(rows)} of {2 * answered} runs stored"


def test_a_dead_collector_does_not_hold_the_stop(tmp_path: Path) -> None:
    # Nothing listens at the endpoint: the flush gives up after TRACESTITCH_SHUTDOWN_TIMEOUT
    # and every worker still ends (how long it took is not asserted here: 1.2-1.9 s against
    # 0.2-0.7 s with no export, measured by hand).
    for name, text in DJANGO.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{closed.getsockname()[1]}"
    env = clean_env(
        TRACESTITCH_ENDPOINT=dead,
        TRACESTITCH_SPOOL_DIR="off",
        TRACESTITCH_SHUTDOWN_TIMEOUT="1",
        DJANGO_SETTINGS_MODULE="shop.settings",
        PYTHONPATH=str(tmp_path),
    )
    with uvicorn_service(tmp_path, "shop.asgi:application", env, "--workers", "2") as (
        service,
        url,
    ):
        assert _answers(url, FAST) == FAST
        service.proc.send_signal(signal.SIGTERM)
        code = service.wait()
    assert code == 0, service.output()  # the supervisor's own exit, once its workers ended
    assert service.output().count("Finished server process") >= 2, service.output()

"""Testing helpers, and the pytest plugin (registered through the ``pytest11`` entry point).

``capture_runs()`` is to tracestitch what ``structlog.testing.capture_logs`` is to structlog::

    from tracestitch.testing import capture_runs

    def test_checkout_is_traced(client):
        with capture_runs() as runs:
            client.post("/checkout")
        assert runs.one("POST /checkout").status == "success"

The ``captured_runs`` fixture does the same for a whole test and also makes tracestitch's
internal errors raise instead of being swallowed, so a bug cannot hide behind the
never-break-the-app rule.

For a test across processes, :class:`CollectorProcess` runs the real ``tracestitch serve`` on
127.0.0.1 with an ephemeral port::

    with CollectorProcess(tmp_path / "traces.db") as collector:
        run_my_services(env={"TRACESTITCH_ENDPOINT": collector.url})
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import TracebackType

from tracestitch._guard import set_strict
from tracestitch.export.memory import RunCollector

__all__ = [
    "CollectorProcess",
    "capture_runs",
    "captured_runs",
    "strict_tracing",
    "throwaway_database",
]


class CollectorProcess:
    """``tracestitch serve`` in a subprocess on 127.0.0.1: :attr:`url` is set once it listens.

    ``db`` is its SQLite file, or a ``postgresql://`` URL (None: as the environment says),
    ``port`` 0 picks a free one, ``api_key`` is required from senders when given, ``options``
    are more ``serve`` flags, ``env`` its environment (default: this process's). Use it as a
    context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        db: str | os.PathLike[str] | None,
        *,
        port: int = 0,
        api_key: str | None = None,
        options: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.db = db
        self.port = port
        self.api_key = api_key
        self.options = list(options)
        self.env = dict(env) if env is not None else None
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        #: What it printed before it listened.
        self.output: list[str] = []

    def start(self) -> CollectorProcess:
        command = [sys.executable, "-m", "tracestitch.cli", "serve", "--port", str(self.port)]
        if self.db is not None:
            # A postgresql:// URL is a database several collectors may share.
            target = os.fspath(self.db)
            url = target.startswith(("postgresql://", "postgres://"))
            command += ["--database" if url else "--db", target]
        command += self.options
        if self.api_key:
            command += ["--api-key", self.api_key]
        self.proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env
        )
        assert self.proc.stdout is not None
        for _ in range(50):  # a few banner lines; the URL line comes once it is bound
            line = self.proc.stdout.readline()
            self.output.append(line)
            if line.startswith("listening on "):
                self.url = line.split()[-1]
                return self
            if not line:
                break
        self.stop()
        raise RuntimeError("tracestitch serve did not start: " + "".join(self.output))

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL after 10 s)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def __enter__(self) -> CollectorProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@contextmanager
def capture_runs(example_id: uuid.UUID | str | None = None) -> Iterator[RunCollector]:
    """Collect every run that finishes in the process inside the block."""
    with RunCollector(example_id=example_id) as collector:
        yield collector


@contextmanager
def strict_tracing() -> Iterator[None]:
    """Make tracestitch's internal errors raise inside the block."""
    previous = set_strict(True)
    try:
        yield
    finally:
        set_strict(previous)


try:  # the fixtures need pytest; capture_runs() does not
    import pytest
except ImportError:  # pragma: no cover - pytest is installed wherever the plugin is loaded
    pass
else:

    @pytest.fixture
    def captured_runs() -> Iterator[RunCollector]:
        """The runs finished during the test; tracestitch's internal errors raise."""
        with strict_tracing(), capture_runs() as collector:
            yield collector

    @pytest.fixture
    def tracestitch_strict() -> Iterator[None]:
        """tracestitch's internal errors raise during the test."""
        with strict_tracing():
            yield


@contextmanager
def throwaway_database(server: str, prefix: str = "tracestitch_test") -> Iterator[str]:
    """The URL of a new PostgreSQL database of a random name on ``server`` (a
    ``postgresql://`` URL of a database to connect to for ``CREATE DATABASE``), dropped
    afterwards, connections and all. Needs the ``postgres`` extra."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield server.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

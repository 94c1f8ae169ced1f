"""A real PostgreSQL for the collector tests: the machine's (127.0.0.1:5432) when it answers,
else a throwaway cluster started from the PostgreSQL binaries; a database of a random name per
test session (dropped after it), a schema of a random name per store.

Without either, the PostgreSQL tests skip on a laptop, and fail in CI (CI=1): there they must run.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import pytest

from tracestitch.testing import throwaway_database

MACHINE_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


def _answers(url: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def _throwaway_cluster() -> Iterator[str | None]:
    """A cluster initialised in a temporary directory on an ephemeral port, stopped after."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or [
        p for p in [shutil.which("initdb")] if p
    ]
    if not found:
        yield None
        return
    bin_dir = os.path.dirname(found[-1])
    root = tempfile.mkdtemp(prefix="tracestitch-pg-")
    data = os.path.join(root, "data")
    # initdb refuses to run as root: run the cluster as the postgres user then.
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    subprocess.run(
        [*as_user, f"{bin_dir}/initdb", "-D", data, "-U", "postgres", "-A", "trust"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
    # The server's output goes to a log file: a server holding our pipes open would keep
    # subprocess.run waiting for their end forever.
    log = os.path.join(root, "server.log")
    subprocess.run(
        [*as_user, f"{bin_dir}/pg_ctl", "-D", data, "-o", options, "-l", log, "-w", "start"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=120,
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_user, f"{bin_dir}/pg_ctl", "-D", data, "-m", "immediate", "stop"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=120,
        )
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def session_database() -> Iterator[str]:
    """The URL of a new database of a random name, dropped afterwards."""
    try:
        import psycopg  # noqa: F401 (is it installed?)
    except ImportError:
        _unavailable("psycopg is not installed (pip install 'tracestitch[postgres]')")
    with _throwaway_cluster() if not _answers(MACHINE_SERVER) else _nothing() as cluster:
        server = cluster or (MACHINE_SERVER if _answers(MACHINE_SERVER) else None)
        if server is None:
            _unavailable("no PostgreSQL at 127.0.0.1:5432 and no PostgreSQL binaries to start one")
        with throwaway_database(server) as url:
            yield url


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


def _unavailable(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL tests cannot run in CI: {why}")
    pytest.skip(why)


def new_schema(database_url: str) -> str:
    """A URL of ``database_url`` whose connections use a new, empty schema."""
    import psycopg

    schema = f"s_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    return f"{database_url}?options={quote(f'-csearch_path={schema}')}"

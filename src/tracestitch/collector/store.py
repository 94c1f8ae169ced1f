"""SQLite store of runs (LangSmith wire dicts) and per-trace summaries.

Runs are kept as the post and patch dicts exactly as they arrived (merged on read, so the order
they arrive in does not matter and a repeat is a no-op), next to indexed columns derived from
the merged run. The ``traces`` table holds one summary row per trace, recomputed inside the same
transaction as the runs it summarises, so the trace list is one indexed query.

This module holds the connections, transactions and retention; the SQL of the write path is in
:mod:`.writes` and the queries in :mod:`.reads`.

Thread-safety: one writer connection behind a lock (SQLite allows one writer anyway), one reader
connection per thread; WAL mode lets readers run while a write commits.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from . import feedback as feedback_sql
from . import projects as projects_sql
from .feedback import FeedbackOp
from .ingest import RunOp
from .migrations import migrate, register_functions
from .multipart import Attachment
from .retention import delete_expired, write_attachments
from .runs import merge_run, run_service
from .sql_store import SqlStore
from .writes import summarise_traces, write_ops

__all__ = ["Store", "merge_run", "run_service"]


class Store(SqlStore):
    """The collector's run store.

    >>> store = Store(":memory:")  # doctest: +SKIP
    >>> store.ingest([validate_op("post", run_dict, "run")])  # doctest: +SKIP
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_runs: int | None = None,
        max_age_s: float | None = None,
        synchronous: str = "FULL",
        retention_interval_s: float = 30.0,
    ) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        self.max_runs = max_runs
        self.max_age_s = max_age_s
        self._synchronous = synchronous if synchronous in ("FULL", "NORMAL", "EXTRA") else "FULL"
        self._retention_interval_s = retention_interval_s
        self._last_retention = 0.0
        self._write_lock = threading.Lock()
        self._local = threading.local()
        self._all_conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._writer = self._connect()
        with self._write_lock:
            migrate(self._writer)
        self.apply_retention()

    # -- connections ---------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE), never implicit.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.row_factory = sqlite3.Row
        register_functions(conn)
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL fsyncs the WAL at each commit: a run we acknowledged survives power loss, not
        # only a killed process. NORMAL is faster and still survives a crash of this process.
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        with self._conns_lock:
            self._all_conns.append(conn)
        return conn

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        yield conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._write_lock:
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def close(self) -> None:
        """Close every connection; the store is unusable afterwards."""
        with self._conns_lock:
            for conn in self._all_conns:
                conn.close()
            self._all_conns.clear()

    # -- writes --------------------------------------------------------------------------------

    def ingest(
        self,
        ops: Iterable[RunOp],
        attachments: Iterable[Attachment] = (),
        feedback: Iterable[FeedbackOp] = (),
    ) -> int:
        """Apply validated ops (and attachments, and feedback) in one transaction; return the
        number of ops.

        When this returns, the transaction has committed: only then may the caller acknowledge.
        """
        ops = list(ops)
        now_us = int(time.time() * 1_000_000)
        with self._write() as conn:
            touched, projects, before = write_ops(conn, ops, now_us)
            projects_sql.ensure_projects(conn, projects, now_us)
            for item in feedback:
                feedback_sql.write_feedback(conn, item)
            write_attachments(conn, attachments)
            summarise_traces(conn, touched, now_us, before)
        if time.monotonic() - self._last_retention > self._retention_interval_s:
            self.apply_retention()
        self._after_ingest()
        return len(ops)

    def apply_retention(self, now: float | None = None) -> int:
        """Delete traces beyond ``max_age_s`` and the oldest traces beyond ``max_runs``.

        Returns the number of runs deleted. Runs happen as part of ingest at most every
        ``retention_interval_s`` seconds, and at start-up.
        """
        self._last_retention = time.monotonic()
        if self.max_age_s is None and self.max_runs is None:
            return 0
        now_us = int((now if now is not None else time.time()) * 1_000_000)
        cutoff = now_us - int(self.max_age_s * 1_000_000) if self.max_age_s is not None else None
        with self._write() as conn:
            return delete_expired(conn, cutoff_us=cutoff, max_runs=self.max_runs)

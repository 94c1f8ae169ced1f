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
from typing import Any

from . import reads
from .ingest import RunOp
from .migrations import migrate
from .multipart import Attachment
from .query import TraceFilter
from .runs import merge_run, run_service
from .writes import summarise_traces, write_ops

__all__ = ["Store", "merge_run", "run_service"]


class Store:
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
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL fsyncs the WAL at each commit: a run we acknowledged survives power loss, not
        # only a killed process. NORMAL is faster and still survives a crash of this process.
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        with self._conns_lock:
            self._all_conns.append(conn)
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
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

    def ingest(self, ops: Iterable[RunOp], attachments: Iterable[Attachment] = ()) -> int:
        """Apply validated ops (and attachments) in one transaction; return the number of ops.

        When this returns, the transaction has committed: only then may the caller acknowledge.
        """
        ops = list(ops)
        now_us = int(time.time() * 1_000_000)
        with self._transaction() as conn:
            touched = write_ops(conn, ops, now_us)
            for att in attachments:
                conn.execute(
                    "INSERT OR REPLACE INTO attachments(run_id, name, content_type, data)"
                    " VALUES (?, ?, ?, ?)",
                    (att.run_id, att.name, att.content_type, att.data),
                )
            summarise_traces(conn, touched, now_us)
        if time.monotonic() - self._last_retention > self._retention_interval_s:
            self.apply_retention()
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
        doomed: list[str] = []
        with self._transaction() as conn:
            if self.max_age_s is not None:
                cutoff = now_us - int(self.max_age_s * 1_000_000)
                doomed += [
                    r[0]
                    for r in conn.execute(
                        "SELECT trace_id FROM traces WHERE updated_us < ?", (cutoff,)
                    )
                ]
                conn.execute(
                    "DELETE FROM runs WHERE trace_id IS NULL AND received_us < ?", (cutoff,)
                )
            if self.max_runs is not None:
                total = conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
                excess = total - self.max_runs
                gone = set(doomed)
                for row in conn.execute(
                    "SELECT trace_id, run_count FROM traces ORDER BY start_us, trace_id"
                ).fetchall():
                    if excess <= 0:
                        break
                    if row[0] not in gone:
                        doomed.append(row[0])
                    excess -= row[1]
            deleted = 0
            for trace_id in doomed:
                conn.execute(
                    "DELETE FROM attachments WHERE run_id IN"
                    " (SELECT id FROM runs WHERE trace_id = ?)",
                    (trace_id,),
                )
                deleted += conn.execute("DELETE FROM runs WHERE trace_id = ?", (trace_id,)).rowcount
                conn.execute("DELETE FROM traces WHERE trace_id = ?", (trace_id,))
        return deleted

    # -- reads (the queries live in reads.py) ----------------------------------------------------

    def list_traces(self, flt: TraceFilter) -> dict[str, Any]:
        """One page of trace summaries, newest first, plus the total matching count."""
        return reads.list_traces(self._reader(), flt)

    def trace_summary(self, trace_id: str) -> dict[str, Any] | None:
        """The summary row of one trace, or None."""
        return reads.trace_summary(self._reader(), trace_id)

    def trace_runs(self, trace_id: str) -> list[dict[str, Any]]:
        """Every stored run of a trace (merged wire dicts), in dotted order."""
        return reads.trace_runs(self._reader(), trace_id)

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """One merged run, or None."""
        return reads.get_run(self._reader(), run_id)

    def child_runs(self, run_id: str) -> list[dict[str, Any]]:
        """The direct children of a run, in dotted order."""
        return reads.child_runs(self._reader(), run_id)

    def get_attachment(self, run_id: str, name: str) -> tuple[str, bytes] | None:
        """(content type, bytes) of one attachment, or None."""
        return reads.get_attachment(self._reader(), run_id, name)

    def count_runs(self) -> int:
        """Number of stored runs."""
        return reads.count_runs(self._reader())

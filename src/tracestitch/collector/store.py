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

from . import feedback as feedback_sql
from . import projects as projects_sql
from . import reads
from .feedback import FeedbackFilter, FeedbackOp
from .ingest import RunOp
from .migrations import migrate, register_functions
from .multipart import Attachment
from .projects import ProjectFilter
from .query import TraceFilter
from .run_query import RunQuery, build_run_query, encode_cursor
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
        register_functions(conn)
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
        with self._transaction() as conn:
            touched, projects = write_ops(conn, ops, now_us)
            projects_sql.ensure_projects(conn, projects, now_us)
            for item in feedback:
                feedback_sql.write_feedback(conn, item)
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
                feedback_sql.delete_for_trace(conn, trace_id)
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

    def runs_by_ids(self, run_ids: list[str]) -> list[dict[str, Any]]:
        """The stored runs among ``run_ids`` (merged, with attachments and feedback), in order."""
        return reads.runs_by_ids(self._reader(), run_ids)

    def query_runs(self, query: RunQuery) -> tuple[list[dict[str, Any]], str | None]:
        """One page of runs matching ``query`` (``/runs/query``) and the cursor of the next."""
        conn = self._reader()
        projects = None
        if query.session_ids is not None:
            projects = list(projects_sql.names_for_ids(conn, query.session_ids).values())
        sql, params = build_run_query(query, projects)
        rows = conn.execute(sql, params).fetchall()
        runs = reads.runs_by_ids(conn, [row["id"] for row in rows])
        cursor = None
        if len(rows) == query.limit:
            cursor = encode_cursor(rows[-1]["start_us"], rows[-1]["id"])
        return runs, cursor

    def span_run_ids(self, trace_id: str, span_ids: list[str]) -> dict[str, str]:
        """{span id: run id} of the runs of a trace that answer to ``span_ids``."""
        return reads.span_run_ids(self._reader(), trace_id, span_ids)

    # -- projects and feedback -------------------------------------------------------------------

    def find_projects(self, flt: ProjectFilter) -> list[dict[str, Any]]:
        """One page of projects matching ``flt``, oldest first."""
        return projects_sql.find_projects(self._reader(), flt)

    def project_names(self, project_ids: list[str]) -> dict[str, str]:
        """{project id: name} of the ``project_ids`` this collector knows."""
        return projects_sql.names_for_ids(self._reader(), project_ids)

    def create_project(
        self,
        name: str,
        *,
        description: str | None = None,
        extra: dict[str, Any] | None = None,
        upsert: bool = False,
    ) -> dict[str, Any]:
        """Create a project (:class:`~.projects.ProjectExists` if the name is taken and not
        ``upsert``); return it."""
        with self._transaction() as conn:
            projects_sql.create_project(
                conn, name, description, extra, upsert=upsert, now_us=int(time.time() * 1e6)
            )
        return self.find_projects(ProjectFilter(name=name))[0]

    def add_feedback(self, item: FeedbackOp) -> None:
        """Store one validated feedback document (committed when this returns)."""
        with self._transaction() as conn:
            feedback_sql.write_feedback(conn, item)

    def get_feedback(self, feedback_id: str) -> dict[str, Any] | None:
        """One feedback document, or None."""
        return feedback_sql.get_feedback(self._reader(), feedback_id)

    def find_feedback(self, flt: FeedbackFilter) -> list[dict[str, Any]]:
        """One page of feedback documents matching ``flt``, oldest first."""
        return feedback_sql.find_feedback(self._reader(), flt)

"""The read side and the small writes that both stores share, over :mod:`.sql`'s portable SQL.

:class:`~tracestitch.collector.store.Store` (SQLite) and
:class:`~tracestitch.collector.pg_store.PgStore` (PostgreSQL) inherit these methods and supply
the two context managers they use: a connection to read from, and a write transaction.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from typing import Any

from . import feedback as feedback_sql
from . import projects as projects_sql
from . import reads, rollups, services
from .feedback import FeedbackFilter, FeedbackOp
from .projects import ProjectFilter
from .query import TraceFilter
from .run_query import RunQuery, build_run_query, encode_cursor
from .services import ServiceFilter
from .sql import Connection

__all__ = ["SqlStore"]


class SqlStore:
    """Store methods written once for both databases (see :class:`~.trace_store.TraceStore`)."""

    #: Seconds between compactions of the services rollup, done after an ingest.
    compact_interval_s = 10.0
    _last_compaction = 0.0

    def _read(self) -> AbstractContextManager[Connection]:
        """A connection to read from, for the ``with`` block."""
        raise NotImplementedError

    def _write(self) -> AbstractContextManager[Connection]:
        """A write transaction, committed when the ``with`` block ends without an error."""
        raise NotImplementedError

    def compact_rollups(self) -> int:
        """Fold the services rollup's fresh rows (:func:`~.rollups.compact`), in a transaction
        of its own; returns the buckets compacted."""
        self._last_compaction = time.monotonic()
        with self._write() as conn:
            return rollups.compact(conn)

    def _after_ingest(self) -> None:
        # Every compact_interval_s: the rows ingest added since fold into one per key.
        if time.monotonic() - self._last_compaction > self.compact_interval_s:
            self.compact_rollups()

    # -- reads (the queries live in reads.py) --------------------------------------------------

    def list_traces(self, flt: TraceFilter) -> dict[str, Any]:
        """One page of trace summaries, newest first, plus the total matching count."""
        with self._read() as conn:
            return reads.list_traces(conn, flt)

    def trace_summary(self, trace_id: str) -> dict[str, Any] | None:
        """The summary row of one trace, or None."""
        with self._read() as conn:
            return reads.trace_summary(conn, trace_id)

    def service_stats(self, flt: ServiceFilter) -> dict[str, Any]:
        """Per service and route: requests, errors, p50/p95; and the service map's edges."""
        with self._read() as conn:
            return services.service_stats(conn, flt)

    def trace_ids_with_prefix(self, prefix: str, limit: int = 2) -> list[str]:
        """Up to ``limit`` stored trace ids that start with ``prefix``."""
        with self._read() as conn:
            return reads.trace_ids_with_prefix(conn, prefix, limit)

    def trace_runs(self, trace_id: str) -> list[dict[str, Any]]:
        """Every stored run of a trace (merged wire dicts), in dotted order."""
        with self._read() as conn:
            return reads.trace_runs(conn, trace_id)

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """One merged run, or None."""
        with self._read() as conn:
            return reads.get_run(conn, run_id)

    def child_runs(self, run_id: str) -> list[dict[str, Any]]:
        """The direct children of a run, in dotted order."""
        with self._read() as conn:
            return reads.child_runs(conn, run_id)

    def get_attachment(self, run_id: str, name: str) -> tuple[str, bytes] | None:
        """(content type, bytes) of one attachment, or None."""
        with self._read() as conn:
            return reads.get_attachment(conn, run_id, name)

    def count_runs(self) -> int:
        """Number of stored runs."""
        with self._read() as conn:
            return reads.count_runs(conn)

    def runs_by_ids(self, run_ids: list[str]) -> list[dict[str, Any]]:
        """The stored runs among ``run_ids`` (merged, with attachments and feedback), in order."""
        with self._read() as conn:
            return reads.runs_by_ids(conn, run_ids)

    def query_runs(self, query: RunQuery) -> tuple[list[dict[str, Any]], str | None]:
        """One page of runs matching ``query`` (``/runs/query``) and the cursor of the next."""
        with self._read() as conn:
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
        with self._read() as conn:
            return reads.span_run_ids(conn, trace_id, span_ids)

    # -- projects and feedback -------------------------------------------------------------------

    def find_projects(self, flt: ProjectFilter) -> list[dict[str, Any]]:
        """One page of projects matching ``flt``, oldest first."""
        with self._read() as conn:
            return projects_sql.find_projects(conn, flt)

    def project_names(self, project_ids: list[str]) -> dict[str, str]:
        """{project id: name} of the ``project_ids`` this collector knows."""
        with self._read() as conn:
            return projects_sql.names_for_ids(conn, project_ids)

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
        with self._write() as conn:
            projects_sql.create_project(
                conn, name, description, extra, upsert=upsert, now_us=int(time.time() * 1e6)
            )
        return self.find_projects(ProjectFilter(name=name))[0]

    def add_feedback(self, item: FeedbackOp) -> None:
        """Store one validated feedback document (committed when this returns)."""
        with self._write() as conn:
            feedback_sql.write_feedback(conn, item)

    def get_feedback(self, feedback_id: str) -> dict[str, Any] | None:
        """One feedback document, or None."""
        with self._read() as conn:
            return feedback_sql.get_feedback(conn, feedback_id)

    def find_feedback(self, flt: FeedbackFilter) -> list[dict[str, Any]]:
        """One page of feedback documents matching ``flt``, oldest first."""
        with self._read() as conn:
            return feedback_sql.find_feedback(conn, flt)

"""The store interface the collector's ingest and query APIs are written against.

Two implementations stand side by side: :class:`~tracestitch.collector.store.Store` (SQLite, one
file, the default) and :class:`~tracestitch.collector.pg_store.PgStore` (PostgreSQL, for several
collectors behind one database). :func:`open_store` picks one from a path or a URL.
Every implementation keeps the same promises: a post and its patch merge in either order, a
repeat is a no-op, and :meth:`TraceStore.ingest` returns only after its transaction committed
(the caller acknowledges then, and not before).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable

from .feedback import FeedbackFilter, FeedbackOp
from .ingest import RunOp
from .multipart import Attachment
from .projects import ProjectFilter
from .query import TraceFilter
from .run_query import RunQuery
from .services import ServiceFilter

__all__ = ["TraceStore", "is_database_url", "open_store"]

_URL_SCHEMES = ("postgresql://", "postgres://")


@runtime_checkable
class TraceStore(Protocol):
    """What the collector needs of a store. Methods may be called from any thread."""

    def ingest(
        self,
        ops: Iterable[RunOp],
        attachments: Iterable[Attachment] = (),
        feedback: Iterable[FeedbackOp] = (),
    ) -> int:
        """Apply validated ops, attachments and feedback atomically; return the number of ops.
        Returns only once committed."""
        ...

    def apply_retention(self, now: float | None = None) -> int:
        """Forget what is past the store's retention limits; return the runs deleted."""
        ...

    def close(self) -> None:
        """Release connections; the store is unusable afterwards."""
        ...

    def list_traces(self, flt: TraceFilter) -> dict[str, Any]:
        """One page of trace summaries, newest first, plus the total matching count."""
        ...

    def trace_summary(self, trace_id: str) -> dict[str, Any] | None:
        """The summary of one trace, or None."""
        ...

    def service_stats(self, flt: ServiceFilter) -> dict[str, Any]:
        """Per service and route over the traces started in ``flt``'s range: ``routes``
        (requests, errors, pending, p50_ms, p95_ms) and the service map's ``edges`` (caller,
        callee, calls, errors); see :mod:`.services`."""
        ...

    def trace_ids_with_prefix(self, prefix: str, limit: int = 2) -> list[str]:
        """Up to ``limit`` stored trace ids that start with ``prefix`` (lowercase), in order."""
        ...

    def trace_runs(self, trace_id: str) -> list[dict[str, Any]]:
        """Every stored run of a trace (merged wire dicts), in dotted (tree) order."""
        ...

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """One merged run, or None."""
        ...

    def child_runs(self, run_id: str) -> list[dict[str, Any]]:
        """The direct children of a run, in dotted order."""
        ...

    def get_attachment(self, run_id: str, name: str) -> tuple[str, bytes] | None:
        """(content type, bytes) of one attachment, or None."""
        ...

    def count_runs(self) -> int:
        """Number of stored runs."""
        ...

    def runs_by_ids(self, run_ids: list[str]) -> list[dict[str, Any]]:
        """The stored runs among ``run_ids`` (merged, with attachments and feedback), in order."""
        ...

    def query_runs(self, query: RunQuery) -> tuple[list[dict[str, Any]], str | None]:
        """One page of runs matching ``query`` and the cursor of the next."""
        ...

    def span_run_ids(self, trace_id: str, span_ids: list[str]) -> dict[str, str]:
        """{span id: run id} of the runs of a trace that answer to ``span_ids``."""
        ...

    def find_projects(self, flt: ProjectFilter) -> list[dict[str, Any]]:
        """One page of projects matching ``flt``, oldest first."""
        ...

    def project_names(self, project_ids: list[str]) -> dict[str, str]:
        """{project id: name} of the ``project_ids`` this store knows."""
        ...

    def create_project(
        self,
        name: str,
        *,
        description: str | None = None,
        extra: dict[str, Any] | None = None,
        upsert: bool = False,
    ) -> dict[str, Any]:
        """Create (or with ``upsert``, update) a project; return it."""
        ...

    def add_feedback(self, item: FeedbackOp) -> None:
        """Store one validated feedback document (committed when this returns)."""
        ...

    def get_feedback(self, feedback_id: str) -> dict[str, Any] | None:
        """One feedback document, or None."""
        ...

    def find_feedback(self, flt: FeedbackFilter) -> list[dict[str, Any]]:
        """One page of feedback documents matching ``flt``, oldest first."""
        ...


def is_database_url(target: str | os.PathLike[str]) -> bool:
    """Whether ``target`` names a PostgreSQL database (``postgresql://...``) rather than a
    SQLite file."""
    return str(target).startswith(_URL_SCHEMES)


def open_store(
    target: str | os.PathLike[str],
    *,
    max_runs: int | None = None,
    max_age_s: float | None = None,
) -> TraceStore:
    """The store at ``target``: a ``postgresql://`` URL (needs the ``postgres`` extra) or the
    path of a SQLite file.

    >>> store = open_store("postgresql://tracestitch@db:5432/traces")  # doctest: +SKIP
    """
    if is_database_url(target):
        from .pg_store import PgStore

        return PgStore(str(target), max_runs=max_runs, max_age_s=max_age_s)
    from .store import Store

    return Store(target, max_runs=max_runs, max_age_s=max_age_s)

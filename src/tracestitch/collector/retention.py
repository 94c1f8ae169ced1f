"""Retention SQL shared by both stores: which traces are past the limits, and deleting them.

A trace goes whole (its runs, their attachments and feedback, its summary, its requests in the
services rollup), never a run at a time, so no trace is left half there. The PostgreSQL store
first drops whole day partitions (:mod:`.pg_schema`) and runs this only for what is left inside
the boundary day.
"""

from __future__ import annotations

from collections.abc import Iterable

from . import feedback as feedback_sql
from . import rollups
from .multipart import Attachment
from .sql import Connection

__all__ = ["delete_expired", "write_attachments"]


def write_attachments(conn: Connection, attachments: Iterable[Attachment]) -> None:
    """Store attachments; one sent again under the same run and name replaces the first."""
    conn.executemany(
        "INSERT INTO attachments(run_id, name, content_type, data) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (run_id, name) DO UPDATE SET content_type = excluded.content_type,"
        " data = excluded.data",
        [(att.run_id, att.name, att.content_type, att.data) for att in attachments],
    )


def delete_expired(
    conn: Connection, *, cutoff_us: int | None = None, max_runs: int | None = None
) -> int:
    """Delete the traces last written before ``cutoff_us`` and the oldest traces beyond
    ``max_runs`` stored runs (inside the caller's transaction); return the runs deleted."""
    doomed: list[str] = []
    if cutoff_us is not None:
        doomed += [
            r[0]
            for r in conn.execute("SELECT trace_id FROM traces WHERE updated_us < ?", (cutoff_us,))
        ]
        conn.execute("DELETE FROM runs WHERE trace_id IS NULL AND received_us < ?", (cutoff_us,))
    if max_runs is not None:
        total = conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        excess = total - max_runs
        gone = set(doomed)
        for row in conn.execute(
            "SELECT trace_id, run_count FROM traces ORDER BY start_us, trace_id"
        ).fetchall():
            if excess <= 0:
                break
            if row[0] not in gone:
                doomed.append(row[0])
            excess -= row[1]
    rollups.forget(conn, doomed)
    deleted = 0
    for trace_id in doomed:
        feedback_sql.delete_for_trace(conn, trace_id)
        conn.execute(
            "DELETE FROM attachments WHERE run_id IN (SELECT id FROM runs WHERE trace_id = ?)",
            (trace_id,),
        )
        deleted += conn.execute("DELETE FROM runs WHERE trace_id = ?", (trace_id,)).rowcount
        conn.execute("DELETE FROM traces WHERE trace_id = ?", (trace_id,))
    return deleted

"""The PostgreSQL schema: versioned migrations and the daily partitions of runs and traces.

``runs`` and ``traces`` are partitioned by ``day`` (days since the epoch, UTC), the day a trace
was first received: every run of a trace lives in its trace's partition, so retention drops a
day's partitions whole (no table rewrite, no vacuum debt) and never splits a trace. Text
columns sort byte-wise (``COLLATE "C"``), as SQLite does, so dotted orders give tree order.

Several collectors may start at once against one database: migrations and partition changes
take a transaction-scoped advisory lock, so exactly one of them does each.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .migrations import ROLLUP_TABLES

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "create_partitions",
    "drop_partitions_before",
    "migrate",
    "partition_days",
]

#: Advisory lock keys (pg_advisory_xact_lock): schema changes, partition changes.
_MIGRATE_LOCK = 0x7472_6163_6500_0001
_PARTITION_LOCK = 0x7472_6163_6500_0002
_PARTITIONED = ("runs", "traces")
_PARTITION_NAME = re.compile(r"^(runs|traces)_d([0-9]+)$")
#: Marks a statement a migration may do without (it is tried in a savepoint).
_OPTIONAL = "/* optional */"

MIGRATIONS: list[str] = [
    # 1: the SQLite schema's tables (see migrations.py), partitioned by day where they grow.
    """
    CREATE TABLE runs (
        id TEXT COLLATE "C" NOT NULL,
        day INTEGER NOT NULL,
        trace_id TEXT COLLATE "C",
        parent_run_id TEXT COLLATE "C",
        dotted_order TEXT COLLATE "C",
        name TEXT COLLATE "C",
        run_type TEXT COLLATE "C",
        project TEXT COLLATE "C",
        service TEXT COLLATE "C",
        status TEXT COLLATE "C" NOT NULL,
        start_us BIGINT,
        end_us BIGINT,
        total_tokens BIGINT,
        total_cost DOUBLE PRECISION,
        post_json TEXT,
        patch_json TEXT,
        received_us BIGINT NOT NULL,
        span_id TEXT COLLATE "C",
        PRIMARY KEY (id, day)
    ) PARTITION BY RANGE (day);
    CREATE INDEX runs_trace ON runs (trace_id, dotted_order);
    CREATE INDEX runs_parent ON runs (parent_run_id);
    CREATE INDEX runs_service ON runs (service, trace_id);
    CREATE INDEX runs_project_start ON runs (project, start_us DESC)
        INCLUDE (status, total_tokens, total_cost);
    CREATE TABLE traces (
        trace_id TEXT COLLATE "C" NOT NULL,
        day INTEGER NOT NULL,
        root_name TEXT COLLATE "C",
        project TEXT COLLATE "C" NOT NULL,
        status TEXT COLLATE "C" NOT NULL,
        start_us BIGINT,
        end_us BIGINT,
        duration_us BIGINT,
        run_count INTEGER NOT NULL,
        error_count INTEGER NOT NULL,
        services TEXT NOT NULL,
        total_tokens BIGINT,
        total_cost DOUBLE PRECISION,
        has_root INTEGER NOT NULL,
        updated_us BIGINT NOT NULL,
        PRIMARY KEY (trace_id, day)
    ) PARTITION BY RANGE (day);
    CREATE INDEX traces_start ON traces (start_us DESC, trace_id DESC);
    CREATE INDEX traces_project_start ON traces (project, start_us DESC, trace_id DESC);
    CREATE INDEX traces_status_start ON traces (status, start_us DESC);
    CREATE INDEX traces_updated ON traces (updated_us);
    CREATE TABLE attachments (
        run_id TEXT COLLATE "C" NOT NULL,
        name TEXT COLLATE "C" NOT NULL,
        content_type TEXT NOT NULL,
        data BYTEA NOT NULL,
        PRIMARY KEY (run_id, name)
    );
    CREATE TABLE projects (
        id TEXT COLLATE "C" PRIMARY KEY,
        name TEXT COLLATE "C" NOT NULL UNIQUE,
        description TEXT,
        extra_json TEXT,
        created_us BIGINT NOT NULL
    );
    CREATE TABLE feedback (
        id TEXT COLLATE "C" PRIMARY KEY,
        run_id TEXT COLLATE "C",
        trace_id TEXT COLLATE "C",
        key TEXT COLLATE "C" NOT NULL,
        score DOUBLE PRECISION,
        source_type TEXT COLLATE "C",
        created_us BIGINT NOT NULL,
        doc_json TEXT NOT NULL
    );
    CREATE INDEX feedback_run ON feedback (run_id, created_us);
    CREATE INDEX feedback_trace ON feedback (trace_id)
    """,
    # 2: the trace list's name search (ILIKE '%text%') through a trigram index, where the
    # server has pg_trgm and lets this user create it; without, the search scans.
    f"""
    {_OPTIONAL} CREATE EXTENSION IF NOT EXISTS pg_trgm;
    {_OPTIONAL} CREATE INDEX traces_root_name_trgm ON traces USING gin (root_name gin_trgm_ops)
    """,
    # 3: the services view's covering index (as SQLite's migration 3; see services.py).
    """
    CREATE INDEX runs_stats ON runs (trace_id, id)
        INCLUDE (service, parent_run_id, name, status, start_us, end_us)
    """,
    # 4: the services view's rollups (as SQLite's migration 4), filled by the backfill the
    # store passes to migrate(). Not partitioned: their rows are per minute or hour and route.
    ";".join(table.replace("TEXT", 'TEXT COLLATE "C"') for table in ROLLUP_TABLES),
    # 5: as SQLite's migration 5, runs_stats goes (its partitions' indexes with it).
    "DROP INDEX IF EXISTS runs_stats",
]

SCHEMA_VERSION = len(MIGRATIONS)


class SchemaTooNew(RuntimeError):
    """The database was written by a newer tracestitch than this one."""


def migrate(conn: Any, backfill: Callable[[int], None] | None = None) -> int:
    """Bring the schema up to :data:`SCHEMA_VERSION` inside one transaction (``conn`` is a
    psycopg connection, not in autocommit); return the version found before. ``backfill(v)``
    runs after migration ``v``, in the same transaction (the store passes
    :data:`~.migrations.BACKFILLS` on its connection shape)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATE_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS tracestitch_schema (version INTEGER NOT NULL)")
        row = conn.execute("SELECT version FROM tracestitch_schema").fetchone()
        found = int(row[0]) if row else 0
        if row is None:
            conn.execute("INSERT INTO tracestitch_schema (version) VALUES (0)")
        if found > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"database schema version {found} is newer than this tracestitch supports"
                f" ({SCHEMA_VERSION}); upgrade tracestitch"
            )
        for version in range(found, SCHEMA_VERSION):
            for statement in MIGRATIONS[version].split(";"):
                if statement.strip().startswith(_OPTIONAL):
                    _try(conn, statement)
                elif statement.strip():
                    conn.execute(statement)
            if backfill is not None:
                backfill(version + 1)
            conn.execute("UPDATE tracestitch_schema SET version = %s", (version + 1,))
    return found


def _try(conn: Any, statement: str) -> None:
    import psycopg

    try:
        with conn.transaction():  # a savepoint: a failure leaves the migration going
            conn.execute(statement)
    except psycopg.Error:
        pass


def partition_days(conn: Any) -> set[int]:
    """The days that have a ``runs`` partition."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'runs'::regclass"
    ).fetchall()
    days = set()
    for (name,) in rows:
        match = _PARTITION_NAME.match(name)
        if match:
            days.add(int(match.group(2)))
    return days


def create_partitions(conn: Any, days: set[int]) -> None:
    """Create the ``runs`` and ``traces`` partitions of ``days`` that are missing, in a
    transaction of their own (creating a partition locks its parent table: keep it short)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PARTITION_LOCK,))
        for day in sorted(days - partition_days(conn)):
            for table in _PARTITIONED:
                conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {table}_d{day} PARTITION OF {table}"
                    f" FOR VALUES FROM ({day}) TO ({day + 1})"
                )


def drop_partitions_before(
    conn: Any, day: int, forget: Callable[[list[str]], None] | None = None
) -> int:
    """Drop the partitions of the days before ``day`` (whole traces: a trace lives in one
    partition), with the attachments and feedback of their runs; return the runs dropped.
    ``forget(trace_ids)`` is called with each partition's traces first, in the transaction."""
    dropped = 0
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PARTITION_LOCK,))
        for old in sorted(d for d in partition_days(conn) if d < day):
            runs = f"runs_d{old}"
            if forget is not None:
                forget([row[0] for row in conn.execute(f"SELECT trace_id FROM traces_d{old}")])
            conn.execute(f"DELETE FROM attachments WHERE run_id IN (SELECT id FROM {runs})")
            conn.execute(
                f"DELETE FROM feedback WHERE run_id IN (SELECT id FROM {runs})"
                f" OR trace_id IN (SELECT trace_id FROM {runs})"
            )
            dropped += int(conn.execute(f"SELECT COUNT(*) FROM {runs}").fetchone()[0])
            for table in _PARTITIONED:
                conn.execute(f"DROP TABLE IF EXISTS {table}_d{old}")
    return dropped

"""Versioned SQLite schema: ``PRAGMA user_version`` counts the migrations applied.

Append a migration to :data:`MIGRATIONS` to change the schema; never edit one that shipped.
Migrations may call the SQL functions :func:`register_functions` defines on every connection;
what SQL cannot compute is filled in Python afterwards, in the same transaction
(:data:`BACKFILLS`, shared with the PostgreSQL store).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from . import rollups
from .projects import project_id
from .sql import Connection

__all__ = [
    "BACKFILLS",
    "MIGRATIONS",
    "ROLLUP_TABLES",
    "SCHEMA_VERSION",
    "SchemaTooNew",
    "migrate",
    "register_functions",
]

#: The services view's rollup tables (rollups.py), in SQL both databases take: rows are only
#: added (a key may have several until compacted), read by bucket; the fresh ones found by a
#: partial index.
ROLLUP_TABLES = [
    f"""
    CREATE TABLE {table} (
        bucket_us BIGINT NOT NULL,
        project TEXT NOT NULL,
        service TEXT NOT NULL,
        route TEXT NOT NULL,
        caller TEXT NOT NULL,
        bin INTEGER NOT NULL,
        requests BIGINT NOT NULL,
        errors BIGINT NOT NULL,
        fresh INTEGER NOT NULL
    );
    CREATE INDEX {table}_bucket ON {table} (bucket_us);
    CREATE INDEX {table}_fresh ON {table} (bucket_us) WHERE fresh = 1
    """
    for table, _ in rollups.LEVELS
]

MIGRATIONS: list[str] = [
    # 1: runs as received (post/patch JSON) plus indexed columns; one summary row per trace.
    """
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        trace_id TEXT,
        parent_run_id TEXT,
        dotted_order TEXT,
        name TEXT,
        run_type TEXT,
        project TEXT,
        service TEXT,
        status TEXT NOT NULL,
        start_us INTEGER,
        end_us INTEGER,
        total_tokens INTEGER,
        total_cost REAL,
        post_json TEXT,
        patch_json TEXT,
        received_us INTEGER NOT NULL
    );
    CREATE INDEX runs_trace ON runs(trace_id, dotted_order);
    CREATE INDEX runs_parent ON runs(parent_run_id);
    CREATE INDEX runs_service ON runs(service, trace_id);
    CREATE TABLE traces (
        trace_id TEXT PRIMARY KEY,
        root_name TEXT,
        project TEXT NOT NULL,
        status TEXT NOT NULL,
        start_us INTEGER,
        end_us INTEGER,
        duration_us INTEGER,
        run_count INTEGER NOT NULL,
        error_count INTEGER NOT NULL,
        services TEXT NOT NULL,
        total_tokens INTEGER,
        total_cost REAL,
        has_root INTEGER NOT NULL,
        updated_us INTEGER NOT NULL
    );
    CREATE INDEX traces_start ON traces(start_us DESC, trace_id DESC);
    CREATE INDEX traces_project_start ON traces(project, start_us DESC);
    CREATE INDEX traces_status_start ON traces(status, start_us DESC);
    CREATE INDEX traces_updated ON traces(updated_us);
    CREATE TABLE attachments (
        run_id TEXT NOT NULL,
        name TEXT NOT NULL,
        content_type TEXT NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (run_id, name)
    );
    """,
    # 2: projects (LangSmith "sessions") with stable ids, feedback, and each run's span id (the
    # OTLP span it came from, else its UUID's low 64 bits) so OTLP spans find their parents.
    # No new index on runs: span ids are looked up within a trace (runs_trace), and every
    # index costs each ingested run.
    """
    CREATE TABLE projects (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        description TEXT,
        extra_json TEXT,
        created_us INTEGER NOT NULL
    );
    INSERT OR IGNORE INTO projects(id, name, created_us)
        SELECT tracestitch_project_id(project), project, MIN(received_us) FROM runs
        WHERE project IS NOT NULL GROUP BY project;
    CREATE TABLE feedback (
        id TEXT PRIMARY KEY,
        run_id TEXT,
        trace_id TEXT,
        key TEXT NOT NULL,
        score REAL,
        source_type TEXT,
        created_us INTEGER NOT NULL,
        doc_json TEXT NOT NULL
    );
    CREATE INDEX feedback_run ON feedback(run_id, created_us);
    CREATE INDEX feedback_trace ON feedback(trace_id);
    ALTER TABLE runs ADD COLUMN span_id TEXT;
    UPDATE runs SET span_id = substr(id, 20, 4) || substr(id, 25, 12);
    """,
    # 3: the services view reads a trace's runs and each run's parent from this index alone
    # (services.py): at a million runs the table's rows, with their JSON, are never touched.
    """
    CREATE INDEX runs_stats ON runs(
        trace_id, id, service, parent_run_id, name, status, start_us, end_us
    );
    """,
    # 4: the services view's rollups per hour and per minute, kept at ingest (rollups.py),
    # filled from the stored runs (BACKFILLS, which still reads them through runs_stats).
    ";".join(ROLLUP_TABLES),
    # 5: runs_stats made the multi-day scans the rollup now avoids less slow, and cost ingest
    # 1.25x (bench_services.py --ingest-only); a range's partial edges do without it.
    "DROP INDEX IF EXISTS runs_stats",
]

#: ``{version: fill}``: after migration ``version`` (1-based), ``fill(conn)`` runs in the same
#: transaction, for what SQL cannot compute (here: latency bins).
BACKFILLS: dict[int, Callable[[Connection], None]] = {4: rollups.rebuild}

SCHEMA_VERSION = len(MIGRATIONS)


def register_functions(conn: sqlite3.Connection) -> None:
    """The collector's SQL functions: ``tracestitch_project_id(name)``, a project's stable id."""
    conn.create_function("tracestitch_project_id", 1, project_id, deterministic=True)


class SchemaTooNew(RuntimeError):
    """The database was written by a newer tracestitch than this one."""


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema up to :data:`SCHEMA_VERSION`; return the version found before."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if found > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"database schema version {found} is newer than this tracestitch supports"
                f" ({SCHEMA_VERSION}); upgrade tracestitch or use another --db path"
            )
        for version in range(found, SCHEMA_VERSION):
            # executescript would COMMIT our transaction first; run statements one by one so a
            # failed migration rolls back entirely.
            for statement in MIGRATIONS[version].split(";"):
                if statement.strip():
                    conn.execute(statement)
            if version + 1 in BACKFILLS:
                BACKFILLS[version + 1](conn)
            conn.execute(f"PRAGMA user_version = {version + 1}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return found

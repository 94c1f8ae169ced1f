"""PostgreSQL store: several collectors behind one database.

The write path is SQLite's (:mod:`.writes`: read the stored post and patch, fold the ops in,
recompute the touched traces' summaries) inside one transaction, with what a shared database
needs on top:

- Per-trace locking: a transaction first locks the summary row of each trace it writes (in a
  fixed order), so two collectors writing one trace apply their merges and summaries one after
  the other, and a run posted through one collector and patched through another is merged, not
  overwritten. Two collectors creating one new trace (no row to lock yet) collide on a primary
  key instead; the loser's transaction is retried whole, as is one the database finds
  deadlocked. (Row locks, not advisory locks: a batch of a thousand traces would hold a
  thousand entries of the server's shared lock table.)
- Rows are written with ``COPY`` after deleting the old versions, in the partition of the day
  their trace was first received (:mod:`.pg_schema`); retention drops whole days.
- :meth:`PgStore.ingest` returns after ``COMMIT`` (``synchronous_commit`` on), so what the
  collector acknowledges survives a SIGKILL of the collector and a crash of the database.

Reads share SQLite's SQL (:mod:`.reads`, ``?`` placeholders), through :class:`_Dialect`.
Needs the ``postgres`` extra (psycopg 3 and psycopg_pool).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from . import feedback as feedback_sql
from . import projects as projects_sql
from . import rollups
from .feedback import FeedbackOp
from .ingest import RunOp
from .migrations import BACKFILLS
from .multipart import Attachment
from .pg_schema import create_partitions, drop_partitions_before, migrate, partition_days
from .retention import delete_expired, write_attachments
from .sql import Connection, Cursor
from .sql_store import SqlStore
from .writes import RUN_COLUMNS, TRACE_COLUMNS, merge_ops, relink, trace_rows

try:
    import psycopg
    from psycopg.adapt import Loader
    from psycopg.rows import RowMaker
    from psycopg_pool import ConnectionPool
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "the PostgreSQL store needs psycopg 3 and psycopg_pool: pip install 'tracestitch[postgres]'"
    ) from exc

__all__ = ["PgStore"]

#: Conflicts between collectors writing one trace at once; the transaction is tried again.
_RETRIED = (
    psycopg.errors.UniqueViolation,
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
)

_DAY_US = 86_400 * 1_000_000
_RETRIES = 8


def _day(when_us: int) -> int:
    return when_us // _DAY_US


def _lock_key(text: str) -> int:
    # A signed 64-bit key for pg_advisory_xact_lock, the same in every collector process
    # (Python's hash() is salted per process).
    return int.from_bytes(
        hashlib.blake2b(text.encode(), digest_size=8).digest(), "big", signed=True
    )


class _Row:
    """A row that answers ``row[0]`` and ``row["name"]``, as ``sqlite3.Row`` does."""

    __slots__ = ("_names", "_values")

    def __init__(self, values: Sequence[Any], names: dict[str, int]) -> None:
        self._values = values
        self._names = names

    def __getitem__(self, key: int | str) -> Any:
        return self._values[self._names[key] if isinstance(key, str) else key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def _row_factory(cursor: Any) -> RowMaker[_Row]:
    names = {column.name: i for i, column in enumerate(cursor.description or ())}

    def make(values: Sequence[Any]) -> _Row:
        return _Row(values, names)

    return make


class _NumericLoader(Loader):
    # SUM over BIGINT is NUMERIC in PostgreSQL: load whole numbers as int (SQLite's SUM gives
    # an int; a Decimal would not serialise to JSON) and the rest as float.
    def load(self, data: Any) -> int | float:
        text = bytes(data).decode()
        try:
            return int(text)
        except ValueError:
            return float(text)


class _Dialect:
    """A psycopg connection behind the :class:`~.sql.Connection` shape the shared SQL uses:
    ``?`` placeholders become ``%s``, and ``LIKE`` becomes ``ILIKE`` (SQLite's LIKE ignores
    case; PostgreSQL's does not)."""

    #: Read by the shared SQL where the two databases differ (query.py: JSON in run documents).
    dialect = "postgres"

    def __init__(self, conn: psycopg.Connection[_Row]) -> None:
        self.conn = conn

    @staticmethod
    def _sql(sql: str) -> str:
        return sql.replace("%", "%%").replace("?", "%s").replace(" LIKE ", " ILIKE ")

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Cursor:
        return self.conn.execute(self._sql(sql), parameters)

    def executemany(self, sql: str, seq_of_parameters: Iterable[Sequence[Any]], /) -> Cursor:
        cursor = self.conn.cursor()
        params = list(seq_of_parameters)
        if params:
            cursor.executemany(self._sql(sql), params)
        return cursor


class PgStore(SqlStore):
    """The collector's run store on PostgreSQL; any number of collectors may share one database.

    >>> store = PgStore("postgresql://tracestitch@db:5432/traces")  # doctest: +SKIP

    ``pool_size``: the most connections this collector holds (ingest and queries share them).
    """

    def __init__(
        self,
        url: str,
        *,
        max_runs: int | None = None,
        max_age_s: float | None = None,
        pool_size: int = 8,
        retention_interval_s: float = 30.0,
    ) -> None:
        self.url = url
        self.max_runs = max_runs
        self.max_age_s = max_age_s
        self._retention_interval_s = retention_interval_s
        self._last_retention = 0.0
        self._pool: ConnectionPool[psycopg.Connection[_Row]] = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            kwargs={"row_factory": _row_factory},
            configure=self._configure,
            open=False,
        )
        self._pool.open(wait=True, timeout=30)
        try:
            with self._pool.connection() as conn:
                migrate(conn, lambda version: self._backfill(conn, version))
                self._days = partition_days(conn)
            self._ensure_days({_day(int(time.time() * 1_000_000))})
            self.apply_retention()
        except BaseException:
            self._pool.close()
            raise

    @staticmethod
    def _backfill(conn: psycopg.Connection[_Row], version: int) -> None:
        if version in BACKFILLS:
            BACKFILLS[version](_Dialect(conn))

    @staticmethod
    def _configure(conn: psycopg.Connection[Any]) -> None:
        conn.adapters.register_loader("numeric", _NumericLoader)

    # -- connections ---------------------------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._pool.connection() as conn:
            yield _Dialect(conn)

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        # pool.connection() commits when the block ends without an error, rolls back otherwise.
        with self._pool.connection() as conn:
            yield _Dialect(conn)

    def close(self) -> None:
        """Close the connection pool; the store is unusable afterwards."""
        self._pool.close()

    def _ensure_days(self, days: set[int]) -> None:
        # Today's and tomorrow's partitions exist before the first write of the day needs them.
        wanted = {d + k for d in days for k in (0, 1)}
        if wanted <= self._days:
            return
        with self._pool.connection() as conn:
            create_partitions(conn, wanted)
            self._days = partition_days(conn)

    # -- writes --------------------------------------------------------------------------------

    def ingest(
        self,
        ops: Iterable[RunOp],
        attachments: Iterable[Attachment] = (),
        feedback: Iterable[FeedbackOp] = (),
    ) -> int:
        """Apply validated ops (and attachments, and feedback) in one transaction; return the
        number of ops. When this returns, the transaction has committed."""
        ops = list(ops)
        attachments = list(attachments)
        feedback = list(feedback)
        for attempt in range(_RETRIES):
            now_us = int(time.time() * 1_000_000)
            self._ensure_days({_day(now_us)})
            try:
                with self._pool.connection() as conn:
                    self._ingest(_Dialect(conn), ops, attachments, feedback, now_us)
                break
            except _RETRIED:
                if attempt == _RETRIES - 1:
                    raise
        if time.monotonic() - self._last_retention > self._retention_interval_s:
            self.apply_retention()
        self._after_ingest()
        return len(ops)

    def _ingest(
        self,
        conn: _Dialect,
        ops: list[RunOp],
        attachments: list[Attachment],
        feedback: list[FeedbackOp],
        now_us: int,
    ) -> None:
        named = {op.data["trace_id"] for op in ops if isinstance(op.data.get("trace_id"), str)}
        locked = self._lock_traces(conn, named)
        rows, touched, projects = merge_ops(conn, ops, now_us)
        # A patch may name no trace: its run's stored post does.
        locked |= self._lock_traces(conn, touched - named)
        before = rollups.contributions(conn, touched)
        self._store_runs(conn, rows, now_us)
        relink(conn, rows)
        projects_sql.ensure_projects(conn, projects, now_us)
        for item in feedback:
            feedback_sql.write_feedback(conn, item)
        write_attachments(conn, attachments)
        self._store_traces(conn, touched, locked, now_us)
        rollups.update(conn, touched, before)

    @staticmethod
    def _lock_traces(conn: _Dialect, trace_ids: set[str]) -> set[str]:
        # Per-trace locking: the summary row of each trace, locked in one fixed order, so two
        # collectors writing one trace take turns (and never wait on each other in a cycle).
        # A trace new to both has no row yet: the second to insert it fails on the primary key
        # (_store_traces inserts the rows it did not lock) and its whole transaction is
        # retried, now finding the row to lock. Returns the trace ids locked.
        if not trace_ids:
            return set()
        rows = conn.conn.execute(
            "SELECT trace_id FROM traces WHERE trace_id = ANY(%s) ORDER BY trace_id FOR UPDATE",
            (sorted(trace_ids),),
        ).fetchall()
        return {row[0] for row in rows}

    @staticmethod
    def _days_of(conn: _Dialect, table: str, key: str, ids: list[str]) -> dict[str, int]:
        if not ids:
            return {}
        rows = conn.conn.execute(
            f"SELECT {key}, day FROM {table} WHERE {key} = ANY(%s)", (ids,)
        ).fetchall()
        return {row[0]: row[1] for row in rows}

    def _store_runs(self, conn: _Dialect, rows: list[tuple[Any, ...]], now_us: int) -> None:
        # A run stays in the partition it was first written to; a new run goes to its trace's,
        # so a trace never spans two partitions.
        rows = sorted(rows, key=lambda row: row[0])
        run_days = self._days_of(conn, "runs", "id", [row[0] for row in rows])
        trace_ids = sorted({row[1] for row in rows if row[1] and row[0] not in run_days})
        trace_days = self._days_of(conn, "traces", "trace_id", trace_ids)
        today = _day(now_us)
        if run_days:
            conn.conn.execute("DELETE FROM runs WHERE id = ANY(%s)", (sorted(run_days),))
        with conn.conn.cursor().copy(f"COPY runs (day, {RUN_COLUMNS}) FROM STDIN") as copy:
            for row in rows:
                day = run_days.get(row[0], trace_days.get(row[1], today))
                copy.write_row((day, *row))

    def _store_traces(
        self, conn: _Dialect, trace_ids: set[str], locked: set[str], now_us: int
    ) -> None:
        rows = sorted(trace_rows(conn, trace_ids, now_us), key=lambda row: row[0])
        if not rows:
            return
        ids = [row[0] for row in rows]
        days = {
            row[0]: row[1]
            for row in conn.conn.execute(
                "SELECT trace_id, MIN(day) FROM runs WHERE trace_id = ANY(%s) GROUP BY trace_id",
                (ids,),
            )
        }
        days.update(self._days_of(conn, "traces", "trace_id", ids))
        # Updated in place, so a collector waiting on a row's lock (above) gets it next.
        columns = [c.strip() for c in TRACE_COLUMNS.split(",")]
        updates = ", ".join(f"{c} = excluded.{c}" for c in columns[1:])
        insert = f"INSERT INTO traces (day, {TRACE_COLUMNS}) VALUES ({', '.join(['%s'] * 15)})"
        values = [(days.get(row[0], _day(now_us)), *row) for row in rows]
        conn.conn.cursor().executemany(
            f"{insert} ON CONFLICT (trace_id, day) DO UPDATE SET {updates}",
            [row for row in values if row[1] in locked],
        )
        # A trace this transaction did not lock is new: a plain INSERT, so one that another
        # collector created meanwhile is a primary-key collision (the whole transaction is
        # retried with the row locked), not a summary and a rollup computed without its runs.
        new = [row for row in values if row[1] not in locked]
        if new:
            conn.conn.cursor().executemany(insert, new)

    def apply_retention(self, now: float | None = None) -> int:
        """Drop the day partitions wholly older than ``max_age_s``, then delete the traces
        past ``max_age_s`` (last written before it) and the oldest beyond ``max_runs``, as the
        SQLite store does. Returns the number of runs deleted."""
        self._last_retention = time.monotonic()
        if self.max_age_s is None and self.max_runs is None:
            return 0
        now_us = int((now if now is not None else time.time()) * 1_000_000)
        cutoff = now_us - int(self.max_age_s * 1_000_000) if self.max_age_s is not None else None
        deleted = 0
        with self._pool.connection() as conn:
            if cutoff is not None:
                deleted += drop_partitions_before(
                    conn, _day(cutoff), lambda ids: rollups.forget(_Dialect(conn), ids)
                )
                self._days = partition_days(conn)
            with conn.transaction():
                # One collector at a time: two deleting the same traces would count them twice.
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key("retention"),))
                deleted += delete_expired(_Dialect(conn), cutoff_us=cutoff, max_runs=self.max_runs)
        return deleted

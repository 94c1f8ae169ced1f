"""SQLite store of runs (LangSmith wire dicts) and per-trace summaries.

Runs are kept as the post and patch dicts exactly as they arrived (merged on read, so the order
they arrive in does not matter and a repeat is a no-op), next to indexed columns derived from
the merged run. The ``traces`` table holds one summary row per trace, recomputed inside the same
transaction as the runs it summarises, so the trace list is one indexed query.

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

import orjson

from .ingest import RunOp, parse_time_us
from .migrations import migrate
from .multipart import Attachment
from .query import TraceFilter, build_trace_query
from .usage import extract_usage

__all__ = ["Store", "merge_run", "run_service"]


def _overlay(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    # None means "not sent" on the wire (the SDK serialises unset fields as null), so it never
    # erases a value; `extra` is merged one level deep so a patch's metadata adds to the post's.
    out = dict(base)
    for key, value in update.items():
        if value is None:
            continue
        old = out.get(key)
        if key == "extra" and isinstance(old, dict) and isinstance(value, dict):
            merged = {**old, **value}
            if isinstance(old.get("metadata"), dict) and isinstance(value.get("metadata"), dict):
                merged["metadata"] = {**old["metadata"], **value["metadata"]}
            out[key] = merged
        else:
            out[key] = value
    return out


def merge_run(post: dict[str, Any] | None, patch: dict[str, Any] | None) -> dict[str, Any]:
    """The run as the union of its post and patch, the patch's fields winning."""
    return _overlay(post or {}, patch or {})


def run_service(run: dict[str, Any]) -> str | None:
    """The service a run belongs to: ``extra.metadata.service``, else its project name."""
    extra = run.get("extra")
    metadata = extra.get("metadata") if isinstance(extra, dict) else None
    service = metadata.get("service") if isinstance(metadata, dict) else None
    if isinstance(service, str):
        return service
    project = run.get("session_name")
    return project if isinstance(project, str) else None


def _time_us(value: Any) -> int | None:
    if value is None:
        return None
    try:
        return parse_time_us(value)
    except (ValueError, OverflowError):
        return None


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


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
        touched: set[str] = set()
        with self._transaction() as conn:
            for op in ops:
                trace_id = self._apply(conn, op, now_us)
                if trace_id:
                    touched.add(trace_id)
            for att in attachments:
                conn.execute(
                    "INSERT OR REPLACE INTO attachments(run_id, name, content_type, data)"
                    " VALUES (?, ?, ?, ?)",
                    (att.run_id, att.name, att.content_type, att.data),
                )
            for trace_id in touched:
                self._summarise(conn, trace_id, now_us)
        if time.monotonic() - self._last_retention > self._retention_interval_s:
            self.apply_retention()
        return len(ops)

    def _apply(self, conn: sqlite3.Connection, op: RunOp, now_us: int) -> str | None:
        row = conn.execute("SELECT post_json, patch_json FROM runs WHERE id = ?", (op.run_id,))
        found = row.fetchone()
        post = orjson.loads(found["post_json"]) if found and found["post_json"] else None
        patch = orjson.loads(found["patch_json"]) if found and found["patch_json"] else None
        if op.kind == "post":
            post = _overlay(post or {}, op.data)
        else:
            patch = _overlay(patch or {}, op.data)
        run = merge_run(post, patch)
        usage = extract_usage(run)
        start_us = _time_us(run.get("start_time"))
        end_us = _time_us(run.get("end_time"))
        status = "error" if run.get("error") else ("success" if end_us is not None else "pending")
        values = (
            op.run_id,
            run.get("trace_id"),
            run.get("parent_run_id"),
            run.get("dotted_order"),
            run.get("name"),
            run.get("run_type"),
            run.get("session_name") or "default",
            run_service(run),
            status,
            start_us,
            end_us,
            usage["total_tokens"],
            usage["total_cost"],
            _dumps(post) if post is not None else None,
            _dumps(patch) if patch is not None else None,
            now_us,
        )
        conn.execute(
            "INSERT OR REPLACE INTO runs(id, trace_id, parent_run_id, dotted_order, name, run_type,"
            " project, service, status, start_us, end_us, total_tokens, total_cost, post_json,"
            " patch_json, received_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            values,
        )
        trace_id = run.get("trace_id")
        return trace_id if isinstance(trace_id, str) else None

    def _summarise(self, conn: sqlite3.Connection, trace_id: str, now_us: int) -> None:
        agg = conn.execute(
            "SELECT COUNT(*) AS n, MIN(start_us) AS start_us, MAX(COALESCE(end_us, start_us))"
            " AS end_us, SUM(status = 'error') AS errors, SUM(status = 'pending') AS pending,"
            " SUM(total_tokens) AS tokens, SUM(total_cost) AS cost FROM runs WHERE trace_id = ?",
            (trace_id,),
        ).fetchone()
        services = [
            r[0]
            for r in conn.execute(
                "SELECT DISTINCT service FROM runs WHERE trace_id = ? AND service IS NOT NULL"
                " ORDER BY service",
                (trace_id,),
            )
        ]
        root = conn.execute(
            "SELECT name, status, start_us, end_us, project FROM runs WHERE id = ?", (trace_id,)
        ).fetchone()
        if root is not None and root["start_us"] is not None:
            start_us, status = root["start_us"], root["status"]
            end_us = root["end_us"]
            name, project = root["name"], root["project"]
        else:
            # The root has not arrived (yet): summarise from what has.
            start_us, end_us = agg["start_us"], agg["end_us"] if not agg["pending"] else None
            status = "error" if agg["errors"] else ("pending" if agg["pending"] else "success")
            name = project = None
            first = conn.execute(
                "SELECT name, project FROM runs WHERE trace_id = ? ORDER BY start_us LIMIT 1",
                (trace_id,),
            ).fetchone()
            if first is not None:
                name, project = first["name"], first["project"]
        duration = end_us - start_us if end_us is not None and start_us is not None else None
        conn.execute(
            "INSERT OR REPLACE INTO traces(trace_id, root_name, project, status, start_us, end_us,"
            " duration_us, run_count, error_count, services, total_tokens, total_cost,"
            " has_root, updated_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                trace_id,
                name,
                project or "default",
                status,
                start_us,
                end_us,
                duration,
                agg["n"],
                agg["errors"] or 0,
                _dumps(services),
                agg["tokens"],
                agg["cost"],
                int(root is not None),
                now_us,
            ),
        )

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

    # -- reads ---------------------------------------------------------------------------------

    def list_traces(self, flt: TraceFilter) -> dict[str, Any]:
        """One page of trace summaries, newest first, plus the total matching count."""
        sql, count_sql, params = build_trace_query(flt)
        conn = self._reader()
        rows = conn.execute(sql, [*params, flt.limit, flt.offset]).fetchall()
        total = conn.execute(count_sql, params).fetchone()[0]
        items = [self._trace_summary(row) for row in rows]
        next_offset = flt.offset + len(items) if flt.offset + len(items) < total else None
        return {"traces": items, "total": total, "offset": flt.offset, "next_offset": next_offset}

    @staticmethod
    def _trace_summary(row: sqlite3.Row) -> dict[str, Any]:
        return {
            "trace_id": row["trace_id"],
            "name": row["root_name"],
            "project": row["project"],
            "status": row["status"],
            "start_us": row["start_us"],
            "end_us": row["end_us"],
            "duration_ms": row["duration_us"] / 1000 if row["duration_us"] is not None else None,
            "run_count": row["run_count"],
            "error_count": row["error_count"],
            "services": orjson.loads(row["services"]),
            "total_tokens": row["total_tokens"],
            "total_cost": row["total_cost"],
            "has_root": bool(row["has_root"]),
        }

    def trace_summary(self, trace_id: str) -> dict[str, Any] | None:
        """The summary row of one trace, or None."""
        row = self._reader().execute("SELECT * FROM traces WHERE trace_id = ?", (trace_id,))
        found = row.fetchone()
        return self._trace_summary(found) if found else None

    def _runs_from_rows(self, rows: list[sqlite3.Row]) -> list[dict[str, Any]]:
        runs = []
        for row in rows:
            post = orjson.loads(row["post_json"]) if row["post_json"] else None
            patch = orjson.loads(row["patch_json"]) if row["patch_json"] else None
            run = merge_run(post, patch)
            run["id"] = row["id"]
            run["_has_post"] = post is not None
            runs.append(run)
        return runs

    def trace_runs(self, trace_id: str) -> list[dict[str, Any]]:
        """Every stored run of a trace (merged wire dicts), in dotted order."""
        conn = self._reader()
        rows = conn.execute(
            "SELECT id, post_json, patch_json FROM runs WHERE trace_id = ?"
            " ORDER BY dotted_order, start_us",
            (trace_id,),
        ).fetchall()
        runs = self._runs_from_rows(rows)
        self._attach_attachment_info(conn, runs)
        return runs

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """One merged run, or None."""
        conn = self._reader()
        rows = conn.execute(
            "SELECT id, post_json, patch_json FROM runs WHERE id = ?", (run_id,)
        ).fetchall()
        runs = self._runs_from_rows(rows)
        self._attach_attachment_info(conn, runs)
        return runs[0] if runs else None

    def child_runs(self, run_id: str) -> list[dict[str, Any]]:
        """The direct children of a run, in dotted order."""
        rows = (
            self._reader()
            .execute(
                "SELECT id, post_json, patch_json FROM runs WHERE parent_run_id = ?"
                " ORDER BY dotted_order, start_us",
                (run_id,),
            )
            .fetchall()
        )
        return self._runs_from_rows(rows)

    def _attach_attachment_info(self, conn: sqlite3.Connection, runs: list[dict[str, Any]]) -> None:
        if not runs:
            return
        by_id = {run["id"]: run for run in runs}
        ids = list(by_id)
        # Chunked: SQLite caps the number of bound parameters per statement.
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for row in conn.execute(
                "SELECT run_id, name, content_type, length(data) AS size FROM attachments"
                f" WHERE run_id IN ({marks})",
                chunk,
            ):
                run = by_id[row["run_id"]]
                if not isinstance(run.get("attachments"), dict):
                    run["attachments"] = {}
                run["attachments"][row["name"]] = {
                    "content_type": row["content_type"],
                    "size": row["size"],
                    "presigned_url": f"/api/runs/{row['run_id']}/attachments/{row['name']}",
                }

    def get_attachment(self, run_id: str, name: str) -> tuple[str, bytes] | None:
        """(content type, bytes) of one attachment, or None."""
        row = (
            self._reader()
            .execute(
                "SELECT content_type, data FROM attachments WHERE run_id = ? AND name = ?",
                (run_id, name),
            )
            .fetchone()
        )
        return (row["content_type"], bytes(row["data"])) if row else None

    def count_runs(self) -> int:
        """Number of stored runs."""
        return int(self._reader().execute("SELECT COUNT(*) FROM runs").fetchone()[0])

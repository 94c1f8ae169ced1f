"""Projects, which LangSmith's API calls sessions: stable ids, and the SQL behind ``/sessions``.

A project is the ``project`` column of the runs sent to it (``session_name`` on the wire). Its id
is a UUID5 of its name, so it is the same in every collector and never needs to be stored to be
known; the ``projects`` table remembers each project's name (so an id can be turned back into a
name), when it was first seen, and what ``create_project`` said about it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from .query import like_pattern
from .sql import Connection

__all__ = [
    "TENANT_ID",
    "ProjectExists",
    "ProjectFilter",
    "create_project",
    "ensure_projects",
    "find_projects",
    "names_for_ids",
    "project_id",
]

_NAMESPACE = uuid.UUID("5a1c3a4e-7f0b-5d4e-9b1e-7472616365e1")
#: The one tenant this collector has (the SDK's ``TracerSession`` requires a tenant id).
TENANT_ID = str(uuid.uuid5(_NAMESPACE, "tenant"))


def project_id(name: str) -> str:
    """The stable id of the project called ``name``."""
    return str(uuid.uuid5(_NAMESPACE, f"project:{name}"))


class ProjectExists(Exception):
    """``create_project`` of a name already taken, without ``upsert`` (answered 409)."""


@dataclass
class ProjectFilter:
    """The filters of ``GET /sessions`` the collector supports; None means any."""

    ids: list[str] | None = None
    name: str | None = None
    name_contains: str | None = None
    metadata: dict[str, Any] | None = None
    include_stats: bool = False
    limit: int = 100
    offset: int = 0


def ensure_projects(conn: Connection, names: set[str], now_us: int) -> None:
    """Remember the projects ``names`` (inside the caller's write transaction)."""
    conn.executemany(
        "INSERT INTO projects(id, name, created_us) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        [(project_id(name), name, now_us) for name in names],
    )


def names_for_ids(conn: Connection, ids: list[str]) -> dict[str, str]:
    """{project id: name} for the ``ids`` this collector knows."""
    found: dict[str, str] = {}
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        marks = ",".join("?" * len(chunk))
        for row in conn.execute(f"SELECT id, name FROM projects WHERE id IN ({marks})", chunk):
            found[row[0]] = row[1]
    return found


def create_project(
    conn: Connection,
    name: str,
    description: str | None,
    extra: dict[str, Any] | None,
    *,
    upsert: bool,
    now_us: int,
) -> None:
    """Create (or with ``upsert``, update) a project; :class:`ProjectExists` if it exists."""
    extra_json = orjson.dumps(extra).decode() if extra is not None else None
    exists = conn.execute("SELECT 1 FROM projects WHERE name = ?", (name,)).fetchone()
    if exists and not upsert:
        raise ProjectExists(f"a project named {name!r} already exists")
    if exists:
        conn.execute(
            "UPDATE projects SET description = COALESCE(?, description),"
            " extra_json = COALESCE(?, extra_json) WHERE name = ?",
            (description, extra_json, name),
        )
    else:
        conn.execute(
            "INSERT INTO projects(id, name, description, extra_json, created_us)"
            " VALUES (?, ?, ?, ?, ?)",
            (project_id(name), name, description, extra_json, now_us),
        )


def _stats(conn: Connection, name: str) -> dict[str, Any]:
    row = conn.execute(
        "SELECT COUNT(*) AS n, SUM(total_tokens) AS tokens, SUM(total_cost) AS cost,"
        " MAX(start_us) AS last_start,"
        " SUM(CASE WHEN status = 'error' THEN 1 ELSE 0 END) AS errors FROM runs"
        " WHERE project = ?",
        (name,),
    ).fetchone()
    n = row["n"]
    return {
        "run_count": n,
        "total_tokens": row["tokens"],
        "total_cost": row["cost"],
        "last_run_start_time_us": row["last_start"],
        "error_rate": (row["errors"] or 0) / n if n else None,
    }


def find_projects(conn: Connection, flt: ProjectFilter) -> list[dict[str, Any]]:
    """The projects matching ``flt``, oldest first (one page), as stored rows plus stats."""
    where: list[str] = []
    params: list[Any] = []
    if flt.ids is not None:
        where.append(f"id IN ({','.join('?' * len(flt.ids))})")
        params += flt.ids
    if flt.name is not None:
        where.append("name = ?")
        params.append(flt.name)
    if flt.name_contains is not None:
        where.append("lower(name) LIKE ? ESCAPE '\\'")
        params.append(like_pattern(flt.name_contains.lower()))
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    rows = conn.execute(
        f"SELECT * FROM projects{clause} ORDER BY created_us, name", params
    ).fetchall()
    projects = []
    for row in rows:
        extra = orjson.loads(row["extra_json"]) if row["extra_json"] else None
        if flt.metadata:
            metadata = (extra or {}).get("metadata") if isinstance(extra, dict) else None
            if not isinstance(metadata, dict) or any(
                metadata.get(k) != v for k, v in flt.metadata.items()
            ):
                continue
        project = {
            "id": row["id"],
            "name": row["name"],
            "description": row["description"],
            "extra": extra,
            "created_us": row["created_us"],
        }
        projects.append(project)
    page = projects[flt.offset : flt.offset + flt.limit]
    if flt.include_stats:
        for project in page:
            project.update(_stats(conn, project["name"]))
    return page

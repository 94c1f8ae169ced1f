"""The slice of a DB-API connection the store's shared SQL is written against.

The reads, projects and feedback SQL is portable between SQLite and PostgreSQL: ``?``
placeholders, ``ON CONFLICT`` upserts, ``CASE`` sums. SQLite's connection is used as it is; the
PostgreSQL store wraps its connection to the same shape (:mod:`.pg_store`). Rows answer both
``row[0]`` and ``row["name"]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol

__all__ = ["Connection", "Cursor"]


class Cursor(Protocol):
    """A query's result."""

    @property
    def rowcount(self) -> int:
        """Rows a DML statement changed."""
        ...

    def fetchone(self) -> Any:
        """The next row, or None."""
        ...

    def fetchall(self) -> list[Any]:
        """The remaining rows."""
        ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """``execute`` and ``executemany`` with ``?`` placeholders."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Cursor:
        """Run one statement."""
        ...

    def executemany(self, sql: str, seq_of_parameters: Iterable[Sequence[Any]], /) -> Cursor:
        """Run one statement once per parameter row."""
        ...

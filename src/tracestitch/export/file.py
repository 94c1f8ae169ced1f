"""``FileSink``: runs as JSON lines in a file, rotated by size.

One line per operation: the LangSmith run dict plus ``"op": "post" | "patch"``, so a file can
be replayed into any LangSmith-compatible endpoint or grepped. When the file reaches
``max_bytes`` it becomes ``path.1`` (``path.1`` becomes ``path.2`` ...), keeping ``backups``.

Example::

    exporter = BatchExporter(FileSink("runs.jsonl", max_bytes=50 << 20, backups=3))
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

from tracestitch.export.sink import DeliveryError
from tracestitch.export.wire import WireOp

__all__ = ["FileSink"]


class FileSink:
    """Appends each run operation as one JSON line to ``path``, rotating it at ``max_bytes``
    and keeping ``backups`` older files."""

    def __init__(
        self, path: str | os.PathLike[str], *, max_bytes: int = 100 << 20, backups: int = 5
    ) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = max(0, backups)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FileSink({str(self.path)!r})"

    def _rotate(self) -> None:
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
            return
        for i in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{i + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))

    def send(self, ops: Sequence[WireOp]) -> None:
        lines = []
        for op in ops:
            body = op.json()
            prefix = b'{"op":"' + op.kind.encode() + b'"'
            lines.append(prefix + (b"," + body[1:] if body != b"{}" else b"}") + b"\n")
        data = b"".join(lines)
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                size = self.path.stat().st_size if self.path.exists() else 0
                if size and size + len(data) > self.max_bytes:
                    self._rotate()
                with open(self.path, "ab") as fh:
                    fh.write(data)
            except OSError as exc:  # disk full, permissions: may clear up, so retry
                raise DeliveryError(f"{self.path}: {exc.strerror or exc}") from None

    def close(self) -> None:
        return None

"""A bounded on-disk spool for batches the sink could not take.

Segment files in one directory, append-only, each a run of length-prefixed, CRC-checked records
(one :class:`~tracestitch.export.wire.WireOp` each). A process writes to its own ``*.open``
segment, held under ``flock`` so another process can tell a live writer from a dead one; a full
segment is fsynced, closed and renamed ``*.seg``. Replay claims the oldest segment by renaming it
(atomic, so two processes sharing the directory never replay one segment twice), sends it, and
deletes it; a failed replay renames it back.

An append writes its records with one ``os.write`` per segment and no userspace buffer, so a
``SIGKILL`` loses nothing an append has returned for: the next process finds the dead writer's
``*.open`` segment and replays it. A torn tail (a kill mid-write) fails its CRC and is
counted, never mis-read.

Constructing a spool touches no disk; the directory is created and scanned on first use
(:meth:`Spool.open`, which the exporter calls on its worker thread).

When the spool would exceed ``max_bytes`` the oldest segments are deleted and their records
counted as dropped.

Example::

    spool = Spool("/var/tmp/tracestitch", max_bytes=64 << 20)
    spool.append(ops)
    claim = spool.claim_oldest()
    if claim is not None:
        send(claim.ops)
        spool.ack(claim)
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from tracestitch.export.wire import WireOp

_flock: Callable[[int, int], None] | None
try:
    import fcntl

    _flock = fcntl.flock
    _LOCK_NOW = fcntl.LOCK_EX | fcntl.LOCK_NB
except ImportError:  # pragma: no cover - Windows: fall back to "is the writer's pid alive"
    _flock = None
    _LOCK_NOW = 0

__all__ = ["Claim", "Spool", "SpoolStats"]

_MAGIC = b"TS"
_FRAME = struct.Struct(">2sII")  # magic, payload length, crc32(payload)
_HEADER_LEN = struct.Struct(">I")
_MAX_RECORD = 256 << 20  # a length beyond this is a torn/corrupt frame, not a record


@dataclass
class SpoolStats:
    bytes: int = 0
    segments: int = 0
    written: int = 0
    dropped: int = 0
    corrupt: int = 0


@dataclass
class Claim:
    """A segment taken for replay: ack it once delivered, release it to retry later."""

    path: Path
    ops: list[WireOp]
    size: int


def encode_record(op: WireOp) -> bytes:
    ids = op.run_id + op.trace_id + op.kind
    if op.attachments or not ids.isascii() or '"' in ids or "\\" in ids:
        header = orjson.dumps(
            {
                "k": op.kind,
                "id": op.run_id,
                "t": op.trace_id,
                "w": op.weight,
                "p": [["", len(op.body)]],
                "a": [[name, mime, len(data)] for name, (mime, data) in op.attachments.items()],
            }
        )
        blobs = [op.body, *(data for _, data in op.attachments.values())]
    else:
        # The common case, formatted directly (the spooling hot path): kind and ids are
        # plain ASCII tokens (post/patch, UUID strings) that need no JSON escaping.
        header = b'{"k":"%s","id":"%s","t":"%s","w":%d,"p":[["",%d]],"a":[]}' % (
            op.kind.encode(),
            op.run_id.encode(),
            op.trace_id.encode(),
            op.weight,
            len(op.body),
        )
        blobs = [op.body]
    payload = b"".join([_HEADER_LEN.pack(len(header)), header, *blobs])
    return _FRAME.pack(_MAGIC, len(payload), zlib.crc32(payload)) + payload


def _decode_payload(payload: bytes) -> WireOp:
    (hlen,) = _HEADER_LEN.unpack_from(payload)
    header = orjson.loads(payload[4 : 4 + hlen])
    pos = 4 + hlen
    blobs: list[tuple[str, bytes]] = []
    for name, length in header["p"]:
        blobs.append((name, payload[pos : pos + length]))
        pos += length
    attachments: dict[str, tuple[str, bytes]] = {}
    for name, mime, length in header["a"]:
        attachments[name] = (mime, payload[pos : pos + length])
        pos += length
    return WireOp(
        kind=header["k"],
        run_id=header["id"],
        trace_id=header["t"],
        body=blobs[0][1],
        attachments=attachments,
        weight=header["w"],
    )


def decode_records(data: bytes) -> tuple[list[WireOp], int]:
    """The records in a segment's bytes, and how many bad frames ended the read (0 or 1)."""
    ops: list[WireOp] = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < _FRAME.size:
            return ops, 1
        magic, length, crc = _FRAME.unpack_from(data, pos)
        payload = data[pos + _FRAME.size : pos + _FRAME.size + length]
        if magic != _MAGIC or length > _MAX_RECORD or len(payload) != length:
            return ops, 1
        if zlib.crc32(payload) != crc:
            return ops, 1
        try:
            ops.append(_decode_payload(payload))
        except Exception:
            return ops, 1
        pos += _FRAME.size + length
    return ops, 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Spool:
    """See the module docstring. Thread-safe; one instance per process and directory."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int = 256 << 20,
        segment_bytes: int = 4 << 20,
        on_drop: Callable[[int, str], None] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = max(1024, min(segment_bytes, max_bytes // 4 or 1024))
        self._on_drop = on_drop
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._open_path: Path | None = None
        self._open_bytes = 0
        self._open_records = 0
        self._claimed = 0  # segments claimed by this process, not yet acked or released
        self._seq = 0
        self._pid = os.getpid()
        self.stats = SpoolStats()
        self._opened = False

    def __repr__(self) -> str:
        return f"Spool({str(self.directory)!r}, max_bytes={self.max_bytes})"

    # ------------------------------------------------------------------ bookkeeping

    def open(self) -> Spool:
        """Create the directory and adopt what dead processes left (:meth:`recover`). Done
        once, on first use: constructing a spool touches no disk, so building an exporter on
        a request's path costs no directory scan. The exporter calls it on its worker thread.
        """
        if not self._opened:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._opened = True
            self.recover()
        return self

    def _segments(self) -> list[Path]:
        """Closed segments, oldest first (names start with a zero-padded ns timestamp)."""
        return sorted(self.directory.glob("*.seg"))

    def _refresh_size(self) -> None:
        total = self._open_bytes
        segments = self._segments()
        for seg in segments:
            with contextlib.suppress(OSError):
                total += seg.stat().st_size
        self.stats.bytes = total
        self.stats.segments = len(segments)

    def recover(self) -> int:
        """Make segments left by dead writers (``*.open``) and dead replayers (``*.claim-PID``)
        replayable again; returns how many were recovered."""
        recovered = 0
        if not self._opened:
            self.open()  # which recovers
        with self._lock:
            for path in self.directory.glob("*.open"):
                if path == self._open_path or not self._writer_dead(path):
                    continue
                with contextlib.suppress(OSError):
                    path.rename(path.with_suffix(".seg"))
                    recovered += 1
            for path in self.directory.glob("*.claim-*"):
                pid = path.suffix.rpartition("-")[2]
                if pid.isdigit() and (int(pid) == self._pid or not _pid_alive(int(pid))):
                    with contextlib.suppress(OSError):
                        path.rename(path.with_suffix(".seg"))
                        recovered += 1
            self._refresh_size()
        return recovered

    def _writer_dead(self, path: Path) -> bool:
        if _flock is not None:
            try:
                fd = os.open(path, os.O_RDWR)
            except OSError:
                return False
            try:
                _flock(fd, _LOCK_NOW)
            except OSError:
                return False  # a live writer holds it
            finally:
                os.close(fd)  # closing our descriptor drops the probe lock
            return True
        pid = path.stem.split("-")[1] if path.stem.count("-") >= 2 else ""
        return pid.isdigit() and not _pid_alive(int(pid))

    # ------------------------------------------------------------------ writing

    def _open_segment(self) -> None:
        self._seq += 1
        name = f"{time.time_ns():020d}-{self._pid}-{self._seq:06d}.open"
        path = self.directory / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        if _flock is not None:
            _flock(fd, _LOCK_NOW)
        self._fd, self._open_path = fd, path
        self._open_bytes = self._open_records = 0

    def _close_segment(self) -> None:
        if self._fd is None or self._open_path is None:
            return
        fd, path = self._fd, self._open_path
        self._fd = self._open_path = None
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if self._open_records:
            path.rename(path.with_suffix(".seg"))
            self.stats.segments += 1
        else:
            path.unlink(missing_ok=True)
        self._open_bytes = self._open_records = 0

    def _make_room(self, incoming: int) -> None:
        """Delete the oldest closed segments until ``incoming`` more bytes fit."""
        for seg in self._segments():
            if self.stats.bytes + incoming <= self.max_bytes:
                return
            try:
                data = seg.read_bytes()
                seg.unlink()
            except OSError:
                continue
            ops, _bad = decode_records(data)
            self.stats.segments -= 1
            self.stats.bytes -= len(data)
            self.stats.dropped += len(ops)
            if self._on_drop is not None:
                self._on_drop(sum(op.weight for op in ops) or len(ops), "spool full")

    def append(self, ops: Iterable[WireOp]) -> int:
        """Write ``ops``; returns how many were kept (the rest could not fit and were counted
        as dropped). The records bound for one segment go out in one ``os.write``."""
        records = [encode_record(op) for op in ops]
        if not records:
            return 0
        if not self._opened:
            self.open()
        kept = 0
        pending: list[bytes] = []
        with self._lock:
            if os.getpid() != self._pid:
                self._after_fork()
            for record in records:
                if self._fd is None or self._open_bytes + len(record) > self.segment_bytes:
                    self._write(pending)
                    self._close_segment()
                    self._open_segment()
                if self.stats.bytes + len(record) > self.max_bytes:
                    self._make_room(len(record))
                if self.stats.bytes + len(record) > self.max_bytes:
                    break  # larger than the whole spool allows, even when empty
                pending.append(record)
                self._open_bytes += len(record)
                self._open_records += 1
                self.stats.bytes += len(record)
                kept += 1
            self._write(pending)
            self.stats.written += kept
        return kept

    def _write(self, records: list[bytes]) -> None:
        """Append ``records`` (then forget them) to the open segment, unbuffered."""
        if not records:
            return
        assert self._fd is not None
        view = memoryview(b"".join(records))
        records.clear()
        while view:
            view = view[os.write(self._fd, view) :]

    # ------------------------------------------------------------------ replay

    def pending(self) -> bool:
        """Whether anything waits for replay or is being replayed (closed segments, records in
        the open one, segments claimed and not yet acknowledged or released)."""
        return self._open_records > 0 or self.stats.segments > 0 or self._claimed > 0

    def claim_oldest(self) -> Claim | None:
        """Take the oldest segment for replay (closing the open one if it is all there is)."""
        if not self._opened:
            self.open()
        with self._lock:
            segments = self._segments()
            if not segments and self._open_records:
                self._close_segment()
                segments = self._segments()
            for seg in segments:
                target = seg.with_suffix(f".claim-{self._pid}")
                try:
                    seg.rename(target)
                    data = target.read_bytes()
                except OSError:
                    continue  # another process claimed it first
                ops, bad = decode_records(data)
                self.stats.segments -= 1
                self.stats.corrupt += bad
                self._claimed += 1
                return Claim(target, ops, len(data))
        return None

    def ack(self, claim: Claim) -> None:
        """The claim's ops were delivered: delete the segment."""
        with self._lock:
            with contextlib.suppress(OSError):
                claim.path.unlink()
            self.stats.bytes = max(0, self.stats.bytes - claim.size)
            self._claimed = max(0, self._claimed - 1)

    def release(self, claim: Claim) -> None:
        """Delivery failed: put the segment back, first in line."""
        with self._lock:
            self._claimed = max(0, self._claimed - 1)
            with contextlib.suppress(OSError):
                claim.path.rename(claim.path.with_suffix(".seg"))
                self.stats.segments += 1

    def iter_all(self) -> Iterator[WireOp]:
        """Every record now in the spool, without claiming anything (for tools and tests)."""
        if not self.directory.is_dir():
            return
        paths: Sequence[Path] = [*self._segments(), *sorted(self.directory.glob("*.open"))]
        for path in paths:
            with contextlib.suppress(OSError):
                yield from decode_records(path.read_bytes())[0]

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """fsync and close the open segment (it stays for the next process to replay)."""
        with self._lock:
            if os.getpid() == self._pid:
                self._close_segment()

    def _after_fork(self) -> None:
        # The descriptor and its flock belong to the parent's segment: forget them without
        # unlocking (an flock is shared by both copies of the descriptor).
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = self._open_path = None
        self._open_bytes = self._open_records = 0
        self._claimed = 0  # the parent's claims are the parent's to finish
        self._pid = os.getpid()
        self._lock = threading.Lock()

"""Request bodies in memory: one byte budget shared by every request, and Content-Encoding.

A request's body is held as received (capped by ``max_body_bytes``) and, when compressed, again
as decompressed (capped per request). Caps per request alone do not bound the collector: eight
concurrent bombs each expanding to the cap cost eight times the cap. So every byte a request
holds is also drawn from one :class:`BodyBudget` shared by all requests in flight, and given
back when the request is answered. A request that finds the budget spent by others is refused
with :class:`Overloaded` (503 with ``Retry-After``; the LangSmith SDKs and tracestitch's
exporter retry it) rather than wait while it holds memory (but see :class:`BodyBudget`).

>>> budget = BodyBudget(64 * 1024 * 1024)
>>> with budget.lease() as lease:  # doctest: +SKIP
...     data = decode_body(body, "zstd", limit=16 * 1024 * 1024, lease=lease)
"""

from __future__ import annotations

import threading
import zlib
from types import TracebackType

from .ingest import IngestError

__all__ = [
    "BodyBudget",
    "BodyLease",
    "BodyTooLarge",
    "Overloaded",
    "UnsupportedEncoding",
    "decode_body",
    "zstd_available",
]

#: Bytes decompressed per step: the budget is charged, and the cap checked, this often.
_CHUNK = 1 << 16
#: zstd's own default ceiling on a frame's window (``ZSTD_WINDOWLOG_LIMIT_DEFAULT``).
_MAX_ZSTD_WINDOW = 1 << 27
#: Windows up to this size are allowed whatever the first frame declares (level 19 uses 8 MiB).
_SMALL_ZSTD_WINDOW = 1 << 23


class BodyTooLarge(Exception):
    """The body, or what it decompresses to, exceeds the configured limit (answered with 413)."""


class UnsupportedEncoding(Exception):
    """A Content-Encoding the collector cannot decode (answered with 415)."""


class Overloaded(Exception):
    """Other requests in flight hold the whole body budget (answered 503 with Retry-After)."""

    #: Seconds a client should wait before retrying.
    retry_after = 1


class BodyBudget:
    """Bytes of request bodies held at once across all requests: as received, decompressed
    (with the decoder's window) and copied for parsing.

    Thread-safe: bodies are read on the event loop and decoded in the thread pool. A request
    that cannot get what it needs fails at once (:class:`Overloaded`) and gives back all it
    held, with one exception that guarantees progress: one decoding request at a time may wait
    (up to ``wait_s``) for the bytes it needs, and while it does, others may not take them.
    Only one waits and the others never do, so waiting cannot deadlock; without it, requests
    that grow in step could all fail each other over and over.
    """

    def __init__(self, capacity: int, *, wait_s: float = 30.0) -> None:
        if capacity <= 0:
            raise ValueError(f"body budget must be positive, got {capacity}")
        self.capacity = capacity
        self.wait_s = wait_s
        self._cond = threading.Condition(threading.Lock())
        self._in_use = 0
        self._peak = 0
        self._waiting = 0  # bytes the one waiting request is owed next; kept free for it

    @property
    def in_use(self) -> int:
        """Bytes held right now by requests in flight."""
        return self._in_use

    @property
    def peak(self) -> int:
        """The most bytes ever held at once."""
        return self._peak

    def lease(self) -> BodyLease:
        """A new request's (empty) share of the budget; release it when the request is done."""
        return BodyLease(self)

    def _take(self, n: int, wait: bool) -> None:
        with self._cond:
            if self._in_use + self._waiting + n <= self.capacity:
                self._hold(n)
                return
            if wait and not self._waiting:
                self._waiting = n
                try:
                    if self._cond.wait_for(
                        lambda: self._in_use + n <= self.capacity, timeout=self.wait_s
                    ):
                        self._hold(n)
                        return
                finally:
                    self._waiting = 0
            raise Overloaded(
                f"the collector is holding {self._in_use} of its {self.capacity} bytes for"
                " request bodies; retry shortly"
            )

    def _hold(self, n: int) -> None:
        self._in_use += n
        self._peak = max(self._peak, self._in_use)

    def _give_back(self, n: int) -> None:
        with self._cond:
            self._in_use -= n
            self._cond.notify_all()


class BodyLease:
    """One request's share of a :class:`BodyBudget`; a context manager that gives it all back."""

    __slots__ = ("_budget", "held")

    def __init__(self, budget: BodyBudget) -> None:
        self._budget = budget
        self.held = 0

    def take(self, n: int, *, wait: bool = False) -> None:
        """Hold ``n`` more bytes.

        Raises :class:`Overloaded` when other requests hold the budget (worth retrying), and
        :class:`BodyTooLarge` when this request alone would need more than all of it (not).
        ``wait``: may block (never on the event loop) to be the one request that waits.
        """
        if n <= 0:
            return
        if self.held + n > self._budget.capacity:
            raise BodyTooLarge(
                f"request body needs more than the collector's {self._budget.capacity}-byte"
                " budget for bodies in memory"
            )
        self._budget._take(n, wait)
        self.held += n

    def release(self) -> None:
        """Give back everything this lease holds (idempotent)."""
        held, self.held = self.held, 0
        if held:
            self._budget._give_back(held)

    def __enter__(self) -> BodyLease:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def zstd_available() -> bool:
    """Whether zstd bodies can be decoded (the ``zstandard`` package is importable)."""
    try:
        import zstandard  # noqa: F401
    except ImportError:
        return False
    return True


def _too_large(limit: int) -> BodyTooLarge:
    return BodyTooLarge(f"decompressed body exceeds {limit} bytes")


def _unzstd(body: bytes | bytearray, limit: int, lease: BodyLease) -> bytearray:
    import zstandard

    # The SDKs stream their frame, so the header carries no content size: decompress in chunks
    # and stop at the limit instead of trusting a declared size. The decoder's window is memory
    # too, touched as output is produced: charge each output byte twice until the window is
    # covered. Later frames (a body may hold several) may not need a larger window than the
    # first, or 8 MiB, whichever is more (max_window_size).
    params = zstandard.get_frame_parameters(body)
    window = min(max(params.window_size, _SMALL_ZSTD_WINDOW), _MAX_ZSTD_WINDOW)
    window = 1 << (window - 1).bit_length()
    uncharged_window = min(window, limit)
    decoder = zstandard.ZstdDecompressor(max_window_size=window)
    reader = decoder.stream_reader(body, read_across_frames=True)
    out = bytearray()
    while chunk := reader.read(_CHUNK):
        if len(out) + len(chunk) > limit:
            raise _too_large(limit)
        window_part = min(len(chunk), uncharged_window)
        uncharged_window -= window_part
        lease.take(len(chunk) + window_part, wait=True)
        out += chunk
    return out


def _gunzip(body: bytes | bytearray, limit: int, lease: BodyLease) -> bytearray:
    out = bytearray()
    data = body
    # A gzip body may hold several members back to back (RFC 1952); each is decoded in turn.
    while data:
        decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        while True:
            # Called once more with no input left: zlib may still hold output for us.
            chunk = decoder.decompress(data, _CHUNK)
            data = decoder.unconsumed_tail
            if len(out) + len(chunk) > limit:
                raise _too_large(limit)
            lease.take(len(chunk), wait=True)
            out += chunk
            if decoder.eof or not (chunk or data):
                break
        if not decoder.eof:
            raise IngestError("body is not valid gzip: the stream is truncated")
        data = decoder.unused_data
    return out


def decode_body(
    body: bytes | bytearray, encoding: str | None, limit: int, lease: BodyLease
) -> bytes | bytearray:
    """Undo ``Content-Encoding`` (identity, gzip, zstd), refusing output beyond ``limit`` bytes.

    What is decompressed is charged to ``lease`` as it is produced (the raw body is the
    caller's to charge).
    """
    enc = (encoding or "identity").strip().lower()
    try:
        if enc in ("", "identity"):
            return body
        if enc in ("gzip", "x-gzip"):
            return _gunzip(body, limit, lease)
        if enc == "zstd":
            if not zstd_available():
                raise UnsupportedEncoding("zstd bodies need the 'zstandard' package installed")
            return _unzstd(body, limit, lease)
    except (BodyTooLarge, UnsupportedEncoding, Overloaded, IngestError):
        raise
    except Exception as exc:  # zlib.error, zstandard.ZstdError: corrupt stream
        raise IngestError(f"body is not valid {enc}: {exc}") from None
    raise UnsupportedEncoding(f"unsupported Content-Encoding {encoding!r}; use gzip or zstd")

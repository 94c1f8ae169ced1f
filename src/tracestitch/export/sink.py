"""What the export worker delivers to: the :class:`Sink` protocol and its error.

A sink takes one batch of serialized operations per call, on the worker's sender thread, and
either returns (delivered) or raises :class:`DeliveryError` saying whether trying again could
help and how long the other side asked us to wait. The worker owns retries, backoff and the
spool; a sink only speaks its wire protocol.

Example (a sink that just counts)::

    class CountingSink:
        def __init__(self) -> None:
            self.n = 0

        def send(self, ops: Sequence[WireOp]) -> None:
            self.n += len(ops)

        def close(self) -> None:
            pass
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from tracestitch.export.wire import WireOp

__all__ = ["RETRYABLE_STATUSES", "DeliveryError", "Sink", "parse_retry_after"]

#: Statuses worth retrying: timeouts, "too early", rate limits and server-side failures.
RETRYABLE_STATUSES = frozenset((408, 425, 429))


@runtime_checkable
class Sink(Protocol):
    """Delivers batches; see the module docstring."""

    def send(self, ops: Sequence[WireOp]) -> None: ...

    def close(self) -> None: ...


class DeliveryError(Exception):
    """A batch was not delivered.

    ``retryable``: a later attempt may succeed (connection errors, 408/425/429/5xx).
    ``retry_after``: seconds the server asked us to wait (``Retry-After``), if it said.
    ``status``: the HTTP status, ``None`` for a connection-level failure.
    The message never contains credentials.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = True,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after

    @classmethod
    def from_status(
        cls, status: int, detail: str = "", retry_after: str | None = None
    ) -> DeliveryError:
        retryable = status in RETRYABLE_STATUSES or status >= 500
        text = f"HTTP {status}" + (f": {detail[:200]}" if detail else "")
        return cls(
            text,
            status=status,
            retryable=retryable,
            retry_after=parse_retry_after(retry_after) if retryable else None,
        )


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds or an HTTP date.

    >>> parse_retry_after("3")
    3.0
    >>> parse_retry_after("garbage") is None
    True
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        import email.utils  # rare (HTTP dates), and ~10 ms to import: only when needed

        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)

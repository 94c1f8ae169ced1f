"""``RetryPolicy``: how long the sender waits before trying a failed batch again."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    """When to try a failed batch again.

    Attempt ``n`` failing waits ``min(max_delay, initial_delay * multiplier**(n-1))``, shortened
    by up to ``jitter`` (a fraction) at random so many processes do not retry in lockstep; a
    ``Retry-After`` from the server replaces that (capped at ``max_retry_after``). After
    ``max_attempts`` the batch goes to the spool. The delay keeps growing across batches while
    the sink stays down, so a dead endpoint is probed ever less often.

    >>> RetryPolicy(jitter=0).delay(3, None)
    0.8
    """

    max_attempts: int = 5
    initial_delay: float = 0.2
    max_delay: float = 15.0
    multiplier: float = 2.0
    jitter: float = 0.25
    max_retry_after: float = 60.0

    def delay(
        self, failures: int, retry_after: float | None, rand: Callable[[], float] = random.random
    ) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        exponent = max(failures - 1, 0)
        base = min(self.max_delay, self.initial_delay * self.multiplier ** min(exponent, 64))
        return base * (1.0 - self.jitter * rand())

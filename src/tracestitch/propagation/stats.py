"""The counters of ignored incoming trace headers: one per kind of bad input (``baggage_too_large``,
``dotted_order_malformed``, ...), the first of each kind logged.

Every header parser of the package counts here (:func:`reject`); :func:`stats` reads the counts
(re-exported as :func:`tracestitch.propagation.stats`).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

__all__ = ["collected", "count", "logger", "reject", "reset_stats", "stats"]

# Named for the public module the counts are read from (``propagation.stats()``).
logger = logging.getLogger("tracestitch.propagation")

_stats: Counter[str] = Counter()
_stats_lock = threading.Lock()
_logged: set[str] = set()


# A parse whose result is cached collects its complaints instead of counting them, and every
# use of the result (the first included) counts them: each bad header is counted however often
# it comes, and "was this parse clean" is a question about this parse alone. Per thread: a
# parse is synchronous, so nothing else runs in its thread meanwhile.
_local = threading.local()


def reject(kind: str) -> None:
    """Count one incoming header value ignored as ``kind`` (collected instead while a
    cached parse records its complaints)."""
    collected: list[str] | None = getattr(_local, "collected", None)
    if collected is not None:
        collected.append(kind)
        return
    with _stats_lock:
        _stats[kind] += 1
        first = kind not in _logged
        _logged.add(kind)
    if first:
        logger.warning(
            "tracestitch: ignored a trace header (%s); further ones are counted in "
            "tracestitch.propagation.stats()",
            kind,
        )


def collected(
    parse: Callable[P, R], *args: P.args, **kwargs: P.kwargs
) -> tuple[R, tuple[str, ...]]:
    """``parse(*args, **kwargs)`` and the complaints it made (uncounted: replay them with
    :func:`count`), for a parse whose result is cached."""
    outer = getattr(_local, "collected", None)
    found: list[str] = []
    _local.collected = found
    try:
        return parse(*args, **kwargs), tuple(found)
    finally:
        _local.collected = outer


def count(complaints: tuple[str, ...]) -> None:
    """Count complaints :func:`collected` returned (once per use of the parse)."""
    for kind in complaints:
        reject(kind)


def stats() -> dict[str, int]:
    """How many incoming headers were ignored, by reason (``dotted_order_malformed``, ...)."""
    with _stats_lock:
        return dict(_stats)


def reset_stats() -> None:
    """Forget the counts of ignored header values (and which were logged)."""
    with _stats_lock:
        _stats.clear()
        _logged.clear()

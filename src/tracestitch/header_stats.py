"""The counters of ignored incoming trace headers: one per kind of bad input (``baggage_too_large``,
``dotted_order_malformed``, ...), the first of each kind logged.

Every header parser counts here (``_reject``); :func:`tracestitch.propagation.stats` reads the
counts. A module of its own so the parsers and ``propagation`` can all import it without a cycle.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter

__all__ = ["rejections", "reset_stats", "stats"]

# Named for the public module the counts are read from (``propagation.stats()``).
logger = logging.getLogger("tracestitch.propagation")

_stats: Counter[str] = Counter()
_stats_lock = threading.Lock()
_logged: set[str] = set()


_rejections = 0  # total, read by the baggage cache to keep only clean parses


def _reject(kind: str) -> None:
    global _rejections
    _rejections += 1
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


def stats() -> dict[str, int]:
    """How many incoming headers were ignored, by reason (``dotted_order_malformed``, ...)."""
    with _stats_lock:
        return dict(_stats)


def reset_stats() -> None:
    with _stats_lock:
        _stats.clear()
        _logged.clear()


def rejections() -> int:
    """Headers ignored since the process started, all kinds together (never reset)."""
    return _rejections

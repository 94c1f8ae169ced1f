"""The never-break-the-host-app rule, in one place.

Every entry point from host code into tracestitch internals runs under :func:`guard`. In
production an internal error is logged once per site, counted, and swallowed, so tracing can never
take a request down. Under tests (``set_strict(True)``, done by the pytest fixture, or
``TRACESTITCH_STRICT=1``) it is re-raised, so a bug cannot hide behind the rule.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["guard", "internal_errors", "is_strict", "report", "set_strict"]

logger = logging.getLogger("tracestitch")

_strict = os.environ.get("TRACESTITCH_STRICT", "").lower() in ("1", "true", "yes")
_errors: Counter[str] = Counter()
_logged: set[str] = set()
_lock = threading.Lock()


def set_strict(value: bool) -> bool:
    """Make internal errors raise (``True``) or be swallowed; returns the previous setting."""
    global _strict
    previous, _strict = _strict, value
    return previous


def is_strict() -> bool:
    return _strict


def internal_errors() -> dict[str, int]:
    """How many internal errors were swallowed, per site."""
    with _lock:
        return dict(_errors)


def report(site: str, exc: BaseException) -> None:
    """Count ``exc`` against ``site``, log it the first time, re-raise it when strict."""
    with _lock:
        _errors[site] += 1
        first = site not in _logged
        _logged.add(site)
    if first:
        logger.warning(
            "tracestitch: internal error in %s (further ones there are counted, not logged)",
            site,
            exc_info=exc,
        )
    if _strict:
        raise exc


@contextmanager
def guard(site: str) -> Iterator[None]:
    """Run a block of tracestitch internals; see the module docstring."""
    try:
        yield
    except Exception as exc:
        report(site, exc)

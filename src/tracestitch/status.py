"""The words for a run's or a trace's status, and the one line an error is summed up by,
defined once for every place that shows them.

The collector stores the words, its API and viewer show them, ``tracestitch traces --status``
takes them and the console exporter prints them: ``success`` (ended without an error),
``error`` (reports an error, ended or not) and ``pending`` (not ended yet).
"""

from __future__ import annotations

__all__ = ["ERROR", "PENDING", "STATUS_WORDS", "SUCCESS", "error_summary", "status_of"]

SUCCESS = "success"
ERROR = "error"
PENDING = "pending"
#: Every status word, in the order the CLI and the API list them.
STATUS_WORDS = (SUCCESS, ERROR, PENDING)


def status_of(error: object, ended: bool) -> str:
    """``error`` if the run reports an error, else ``success`` once it has ended, else
    ``pending``."""
    return ERROR if error else (SUCCESS if ended else PENDING)


def error_summary(error: object) -> str:
    """One line for an error: a Python traceback's last line (the exception), else the first.

    The LangSmith SDK records ``repr(exc)`` followed by a traceback, which for errors raised in
    async code is often just ``NoneType: None``: its first line is the one that says something.
    """
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return ""
    return lines[-1] if lines[0].startswith("Traceback (most recent call last)") else lines[0]

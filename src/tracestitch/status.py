"""The words for a run's or a trace's status, defined once for every place that shows one.

The collector stores them, its API and viewer show them, ``tracestitch traces --status`` takes
them and the console exporter prints them: ``success`` (ended without an error), ``error``
(reports an error, ended or not) and ``pending`` (not ended yet).
"""

from __future__ import annotations

__all__ = ["ERROR", "PENDING", "STATUS_WORDS", "SUCCESS", "status_of"]

SUCCESS = "success"
ERROR = "error"
PENDING = "pending"
#: Every status word, in the order the CLI and the API list them.
STATUS_WORDS = (SUCCESS, ERROR, PENDING)


def status_of(error: object, ended: bool) -> str:
    """``error`` if the run reports an error, else ``success`` once it has ended, else
    ``pending``."""
    return ERROR if error else (SUCCESS if ended else PENDING)

"""LLM usage (tokens, cost, first-token time) as the collector's JSON API and store show it.

Reading a run's usage is the core's job (:func:`tracestitch.schemas.usage_from_wire`, which knows
where the LangSmith SDKs put ``usage_metadata`` and the ``new_token`` events). What is the
collector's own: turning its ``Decimal`` costs and ``datetime`` into JSON values, and summing a
trace's runs into the trace summary.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from tracestitch.schemas import Usage, usage_from_wire

__all__ = ["SUMMED_FIELDS", "cost_number", "run_usage", "trace_usage"]

#: Usage fields, in ``Run`` field names, that a trace summary sums over its runs.
SUMMED_FIELDS = (
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "prompt_cost",
    "completion_cost",
    "total_cost",
)


def cost_number(value: Decimal | None) -> float | None:
    """A cost as a JSON number. The API has always served costs as numbers; one too large for
    a float is dropped rather than served as Infinity (which JSON cannot carry)."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return cost_number(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def run_usage(run: dict[str, Any], usage: Usage | None = None) -> dict[str, Any]:
    """Usage of one (merged wire) run in ``Run`` field names, JSON-ready; absent figures are None.

    >>> run_usage({"outputs": {"usage_metadata": {"input_tokens": 3, "output_tokens": 4}}})[
    ...     "total_tokens"
    ... ]
    7
    """
    if usage is None:
        usage = usage_from_wire(run)
    return {k: _jsonable(v) for k, v in usage.as_run_fields(include_none=True).items()}


def trace_usage(usages: Iterable[Usage]) -> dict[str, Any]:
    """A trace's usage: the :data:`SUMMED_FIELDS` summed over its runs (a field no run reports
    stays None; costs are summed as ``Decimal``, so 0.0012 + 0.0006 is 0.0018) and the earliest
    first-token time."""
    totals: dict[str, Any] = dict.fromkeys(SUMMED_FIELDS)
    first_token: datetime | None = None
    for usage in usages:
        for key, value in usage.as_run_fields().items():
            if key in totals:
                totals[key] = value if totals[key] is None else totals[key] + value
        when = usage.first_token_time
        if when is not None and (first_token is None or when < first_token):
            first_token = when
    return {**_jsonable(totals), "first_token_time": _jsonable(first_token)}

"""LLM usage figures (tokens, cost, first-token time) read from a run's wire dict.

The LangSmith SDK reports usage as a ``usage_metadata`` mapping (``input_tokens``,
``output_tokens``, ``total_tokens``, ``*_token_details``, ``input_cost``/``output_cost``/
``total_cost``, ``*_cost_details``) either in ``outputs.usage_metadata`` or in
``extra.metadata.usage_metadata`` (``run_helpers._extract_usage`` prefers outputs), and marks the
first streamed token with a ``new_token`` event. The field names produced here follow LangSmith's
``Run`` schema (``prompt_tokens``, ``completion_tokens``, ``prompt_cost``...).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["USAGE_FIELDS", "extract_usage", "sum_usage"]

#: Keys of :func:`extract_usage`'s result that are summed per trace.
USAGE_FIELDS = (
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "prompt_cost",
    "completion_cost",
    "total_cost",
)


def _num(value: Any) -> float | None:
    # bool is an int subclass; a True token count is garbage, not 1.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _int(value: Any) -> int | None:
    n = _num(value)
    return int(n) if n is not None else None


def _details(value: Any) -> dict[str, float] | None:
    if not isinstance(value, dict):
        return None
    out = {str(k): n for k, v in value.items() if (n := _num(v)) is not None}
    return out or None


def _usage_metadata(run: dict[str, Any]) -> dict[str, Any] | None:
    outputs = run.get("outputs")
    if isinstance(outputs, dict) and isinstance(outputs.get("usage_metadata"), dict):
        return outputs["usage_metadata"]  # type: ignore[no-any-return]
    extra = run.get("extra")
    metadata = extra.get("metadata") if isinstance(extra, dict) else None
    if isinstance(metadata, dict) and isinstance(metadata.get("usage_metadata"), dict):
        return metadata["usage_metadata"]  # type: ignore[no-any-return]
    return None


def first_token_time(run: dict[str, Any]) -> str | None:
    """Time of the run's first ``new_token`` event (ISO string as sent), if any."""
    events = run.get("events")
    if not isinstance(events, list):
        return None
    for event in events:
        if isinstance(event, dict) and event.get("name") == "new_token":
            time = event.get("time")
            return time if isinstance(time, str) else None
    return None


def extract_usage(run: dict[str, Any]) -> dict[str, Any]:
    """Usage fields of one run, in LangSmith ``Run`` field names; missing figures are None.

    >>> extract_usage({"outputs": {"usage_metadata": {"input_tokens": 3, "output_tokens": 4}}})[
    ...     "total_tokens"
    ... ]
    7
    """
    usage = _usage_metadata(run) or {}
    prompt = _int(usage.get("input_tokens"))
    completion = _int(usage.get("output_tokens"))
    total = _int(usage.get("total_tokens"))
    if total is None and (prompt is not None or completion is not None):
        total = (prompt or 0) + (completion or 0)
    prompt_cost = _num(usage.get("input_cost"))
    completion_cost = _num(usage.get("output_cost"))
    total_cost = _num(usage.get("total_cost"))
    if total_cost is None and (prompt_cost is not None or completion_cost is not None):
        total_cost = (prompt_cost or 0.0) + (completion_cost or 0.0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": total,
        "prompt_token_details": _details(usage.get("input_token_details")),
        "completion_token_details": _details(usage.get("output_token_details")),
        "prompt_cost": prompt_cost,
        "completion_cost": completion_cost,
        "total_cost": total_cost,
        "prompt_cost_details": _details(usage.get("input_cost_details")),
        "completion_cost_details": _details(usage.get("output_cost_details")),
        "first_token_time": first_token_time(run),
    }


def sum_usage(usages: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the :data:`USAGE_FIELDS` of several runs; a field no run reports stays None."""
    totals: dict[str, Any] = dict.fromkeys(USAGE_FIELDS)
    for usage in usages:
        for key in USAGE_FIELDS:
            value = usage.get(key)
            if value is not None:
                totals[key] = (totals[key] or 0) + value
    return totals

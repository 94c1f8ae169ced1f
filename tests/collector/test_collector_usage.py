"""The collector's side of usage: JSON-ready per-run figures and per-trace sums."""

from __future__ import annotations

from typing import Any

import orjson

from tracestitch.collector.usage import run_usage, trace_usage
from tracestitch.schemas import usage_from_wire


def llm(first_token: str | None = None, **usage: object) -> dict[str, Any]:
    run: dict[str, Any] = {"outputs": {"usage_metadata": usage}}
    if first_token:
        run["events"] = [{"name": "new_token", "time": first_token}]
    return run


def test_run_usage_is_json_ready_with_float_costs() -> None:
    run = llm(
        "2025-03-01T12:00:00.040000+00:00",
        input_tokens=120,
        output_tokens=30,
        input_cost=0.0012,
        output_cost="0.0006",
        input_cost_details={"cache": 0.0002},
    )
    usage = run_usage(run)
    assert orjson.loads(orjson.dumps(usage)) == usage
    assert usage["prompt_cost"] == 0.0012 and isinstance(usage["prompt_cost"], float)
    assert usage["completion_cost"] == 0.0006
    assert usage["total_cost"] == 0.0018
    assert usage["prompt_cost_details"] == {"cache": 0.0002}
    assert usage["total_tokens"] == 150
    assert usage["first_token_time"] == "2025-03-01T12:00:00.040000+00:00"
    # Every usage field is present, absent ones as None (they overwrite stray wire values).
    assert usage["completion_token_details"] is None


def test_run_usage_drops_costs_a_float_cannot_hold() -> None:
    assert run_usage(llm(input_cost="1e400"))["prompt_cost"] is None


def test_trace_usage_sums_and_takes_the_earliest_first_token() -> None:
    runs = [
        llm("2025-03-01T12:00:02Z", input_tokens=1, input_cost=0.1),
        llm("2025-03-01T12:00:01+00:00", input_tokens=2, input_cost=0.2),
        {"outputs": {"text": "no usage"}},
    ]
    totals = trace_usage(usage_from_wire(r) for r in runs)
    assert totals["prompt_tokens"] == 3
    assert totals["total_tokens"] == 3
    assert totals["prompt_cost"] == 0.3  # summed as Decimal: not 0.30000000000000004
    assert totals["completion_tokens"] is None
    assert totals["completion_cost"] is None
    assert totals["first_token_time"] == "2025-03-01T12:00:01+00:00"
    assert trace_usage([]) == {
        "prompt_tokens": None,
        "completion_tokens": None,
        "total_tokens": None,
        "prompt_cost": None,
        "completion_cost": None,
        "total_cost": None,
        "first_token_time": None,
    }

"""``usage_from_wire``: where usage is read from, what is kept, and the totals it derives."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import pytest

from tracestitch.schemas import Usage, usage_from_wire


def outputs_usage(**usage: Any) -> dict[str, Any]:
    return {"outputs": {"usage_metadata": usage}}


def test_reads_outputs_then_extra_metadata() -> None:
    wire = {
        "outputs": {"usage_metadata": {"input_tokens": 1}},
        "extra": {"metadata": {"usage_metadata": {"input_tokens": 9}}},
    }
    assert usage_from_wire(wire).input_tokens == 1
    fallback = {"outputs": {"usage_metadata": "nope"}, **{"extra": wire["extra"]}}
    assert usage_from_wire(fallback).input_tokens == 9
    assert usage_from_wire({}) == Usage()


def test_totals_are_derived_when_absent_including_zero() -> None:
    usage = usage_from_wire(outputs_usage(input_tokens=3, output_tokens=4, input_cost=0.001))
    assert usage.total_tokens == 7
    assert usage.total_cost == Decimal("0.001")
    # Zero is a figure, not a missing one: 0 in + 0 out is a total of 0.
    zero = usage_from_wire(outputs_usage(input_tokens=0, output_tokens=0, input_cost=0.0))
    assert zero.total_tokens == 0
    assert zero.total_cost == Decimal(0)
    # A reported total is kept as reported.
    assert usage_from_wire(outputs_usage(input_tokens=3, total_tokens=10)).total_tokens == 10
    assert usage_from_wire(outputs_usage(model="m")).total_tokens is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (5, 5),
        (5.0, 5),  # a JSON encoder may write an integral count as a float
        (2.5, None),
        (-1, None),
        (True, None),
        (math.nan, None),
        (math.inf, None),
        ("5", None),
    ],
)
def test_token_counts_keep_only_whole_non_negative_numbers(
    value: Any, expected: int | None
) -> None:
    usage = usage_from_wire(
        outputs_usage(input_tokens=value, input_token_details={"cache_read": value, "audio": 1})
    )
    assert usage.input_tokens == expected
    assert isinstance(usage.input_tokens, (int, type(None)))
    details = {"audio": 1} if expected is None else {"cache_read": expected, "audio": 1}
    assert usage.input_token_details == details


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.0012, Decimal("0.0012")),
        (2, Decimal(2)),
        ("0.5", Decimal("0.5")),
        (math.nan, None),
        (math.inf, None),
        ("NaN", None),
        ("lots", None),
        (False, None),
    ],
)
def test_costs_are_finite_decimals(value: Any, expected: Decimal | None) -> None:
    usage = usage_from_wire(outputs_usage(output_cost=value, output_cost_details={"x": value}))
    assert usage.output_cost == expected
    assert usage.total_cost == expected
    assert usage.output_cost_details == (None if expected is None else {"x": expected})


def test_first_token_time_is_the_first_readable_new_token_event() -> None:
    wire = {
        "events": [
            {"name": "start", "time": "2025-01-01T00:00:00+00:00"},
            {"name": "new_token", "time": "not a time"},
            {"name": "new_token", "time": "2025-01-01T00:00:01Z"},
            {"name": "new_token", "time": "2025-01-01T00:00:02Z"},
        ]
    }
    expected = datetime(2025, 1, 1, 0, 0, 1, tzinfo=timezone.utc)
    assert usage_from_wire(wire).first_token_time == expected
    naive = {"events": [{"name": "new_token", "time": "2025-01-01T00:00:01"}]}
    assert usage_from_wire(naive).first_token_time == expected


def test_as_run_fields_uses_run_names_and_can_keep_absent_figures() -> None:
    usage = usage_from_wire(outputs_usage(input_tokens=3))
    assert usage.as_run_fields() == {"prompt_tokens": 3, "total_tokens": 3}
    full = usage.as_run_fields(include_none=True)
    assert full["prompt_tokens"] == 3
    assert full["completion_cost_details"] is None
    assert set(full) == {
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "prompt_token_details",
        "completion_token_details",
        "prompt_cost",
        "completion_cost",
        "total_cost",
        "prompt_cost_details",
        "completion_cost_details",
        "first_token_time",
    }


def test_absurd_token_counts_are_ignored_not_stored() -> None:
    from tracestitch.schemas import MAX_TOKEN_COUNT, usage_from_wire

    wire = {
        "outputs": {"usage_metadata": {"input_tokens": 2**63, "output_tokens": MAX_TOKEN_COUNT}}
    }
    usage = usage_from_wire(wire)
    assert usage.input_tokens is None
    assert usage.output_tokens == MAX_TOKEN_COUNT

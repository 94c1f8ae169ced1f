"""``continue_trace``: a message consumer continues the producer's trace from the message's
headers in any shape (Kafka's list of ``(str, bytes)`` pairs, a mapping with bytes keys as a Redis
stream gives it), and a message with missing or hostile context starts a new trace, never an
exception."""

from __future__ import annotations

from typing import Any

import pytest

from tracestitch import continue_trace, get_current_run_tree, inject, trace
from tracestitch.propagation import reset_stats, stats
from tracestitch.testing import capture_runs


@pytest.fixture(autouse=True)
def _fresh_stats() -> None:
    reset_stats()


def test_inject_writes_kafka_style_pairs_and_the_consumer_continues_the_trace() -> None:
    with capture_runs() as runs:
        with trace("publish") as producer:
            headers: list[tuple[str, bytes]] = [("message-id", b"42")]
            inject(producer, headers)
        assert producer is not None
        # Kafka takes str names and bytes values: the list's own types are kept.
        assert all(type(k) is str and type(v) is bytes for k, v in headers)
        assert dict(headers)["message-id"] == b"42"
        with continue_trace(headers, name="consume", run_type="tool") as run:
            assert run is not None
            assert get_current_run_tree() is run
    assert run.trace_id == producer.trace_id
    assert run.parent_run_id == producer.id
    assert run.run_type == "tool"
    assert run.extra == {"span_kind": "consumer"}
    assert sorted(r.name for r in runs) == ["consume", "publish"]


def test_a_mapping_with_bytes_keys_is_a_carrier_too() -> None:
    with capture_runs():
        with trace("publish") as producer:
            fields: dict[Any, Any] = {k.encode(): v.encode() for k, v in inject(producer).items()}
        with continue_trace(fields, name="consume") as run:
            pass
    assert producer is not None and run is not None
    assert run.parent_run_id == producer.id


@pytest.mark.parametrize(
    "headers",
    [None, [], {}, [("other", b"x")]],
    ids=["none", "empty-list", "empty-dict", "no-trace"],
)
def test_missing_context_starts_a_new_trace_not_the_current_one(headers: Any) -> None:
    with (
        capture_runs(),
        trace("unrelated") as outer,
        continue_trace(headers, name="consume") as run,
    ):
        assert run is not None and get_current_run_tree() is run
    assert outer is not None
    assert run.parent_run_id is None and run.trace_id == run.id
    assert stats() == {}


@pytest.mark.parametrize(
    ("headers", "counted"),
    [
        ([("langsmith-trace", b"\xff\xfe")], "non_utf8"),
        ([("langsmith-trace", b"not-a-dotted-order")], "dotted_order_malformed"),
        ({"langsmith-trace": "20991231T000000000000Z" + "0" * 32}, None),
    ],
    ids=["non-utf8", "malformed", "garbage-id"],
)
def test_hostile_context_is_a_new_trace_and_counted(headers: Any, counted: str | None) -> None:
    with capture_runs(), continue_trace(headers, name="consume") as run:
        pass
    assert run is not None and run.parent_run_id is None and run.trace_id == run.id
    assert stats() != {}
    if counted is not None:
        assert counted in stats()


def test_an_error_in_the_block_is_recorded_and_re_raised() -> None:
    with capture_runs() as runs:
        with trace("publish") as producer:
            headers = inject(producer, [])
        with (
            pytest.raises(ValueError, match="bad message"),
            continue_trace(headers, name="consume"),
        ):
            raise ValueError("bad message")
    consumed = runs.one("consume")
    assert consumed.error is not None and "bad message" in consumed.error
    assert get_current_run_tree() is None


def test_tracing_off_runs_the_block_with_no_run() -> None:
    from tracestitch import tracing_context

    with tracing_context(enabled=False), continue_trace([], name="consume") as run:
        assert run is None

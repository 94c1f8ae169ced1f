from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pytest

from tracestitch import ids

T0 = "20240315T120000123456Z"
U1 = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
U2 = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c"


def test_uuid7_has_version_variant_and_time() -> None:
    before = ids.now_micros() // 1000
    u = ids.uuid7()
    after = ids.now_micros() // 1000
    assert u.version == 7
    assert u.variant == uuid.RFC_4122
    assert before <= u.int >> 80 <= after + 1
    assert uuid.UUID(str(u)) == u  # a real, round-trippable UUID


def test_uuid7_sorts_in_creation_order_within_a_millisecond() -> None:
    made = [ids.uuid7(unix_ms=1_700_000_000_000) for _ in range(3000)]
    assert made == sorted(made)
    assert len(set(made)) == len(made)


def test_format_timestamp_matches_strftime() -> None:
    for micros in (0, 1_700_000_000_123_456, 1_700_000_001_000_000, 4_102_444_799_999_999):
        dt = datetime.fromtimestamp(micros // 1_000_000, timezone.utc).replace(
            microsecond=micros % 1_000_000
        )
        assert ids.format_timestamp(micros) == dt.strftime("%Y%m%dT%H%M%S%fZ")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (datetime(2024, 3, 15, 12, 0, 0, 123456, tzinfo=timezone.utc), 1710504000123456),
        (datetime(2024, 3, 15, 12, 0, 0, 123456), 1710504000123456),  # naive = UTC
        (1710504000123.456, 1710504000123456),  # epoch ms, as the JS SDK gives it
        ("2024-03-15T12:00:00.123456Z", 1710504000123456),
        ("2024-03-15T13:00:00.123456+01:00", 1710504000123456),
    ],
)
def test_to_micros_accepts_every_time_form(value: object, expected: int) -> None:
    assert ids.to_micros(value) == expected  # type: ignore[arg-type]


def test_to_micros_rejects_other_types() -> None:
    with pytest.raises(TypeError):
        ids.to_micros(True)
    with pytest.raises(TypeError):
        ids.to_micros([1])  # type: ignore[arg-type]


def test_parse_dotted_order_three_levels() -> None:
    u0 = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a59"
    order = f"{T0}{u0}.{T0}{U1}.20240315T120000123999Z{U2}"
    segments, start, trace_id, run_id, parent = ids.parse_dotted_order(order)
    assert len(segments) == 3
    assert trace_id == uuid.UUID(u0)
    assert run_id == uuid.UUID(U2)
    assert parent == uuid.UUID(U1)
    assert start == ids.to_micros("2024-03-15T12:00:00.123999Z")


def test_parse_dotted_order_root_is_its_own_trace() -> None:
    _, _, trace_id, run_id, parent = ids.parse_dotted_order(f"{T0}{U1}")
    assert trace_id == run_id == uuid.UUID(U1)
    assert parent is None


def test_js_execution_counter_and_uppercase_hex_are_accepted() -> None:
    # The JS SDK writes an execution counter into the last three microsecond digits.
    order = f"20240315T120000123007Z{U1.upper()}"
    _, start, _, run_id, _ = ids.parse_dotted_order(order)
    assert run_id == uuid.UUID(U1)
    assert start % 1000 == 7


@pytest.mark.parametrize(
    "order",
    [
        "",
        "garbage",
        f"{T0}{U1}.",
        f".{T0}{U1}",
        f"{T0}{U1}..{T0}{U2}",
        f"{T0}{U1[:-1]}g",  # not hex
        f"{T0}{U1}x",  # wrong length
        f"20241399T120000123456Z{U1}",  # month 13
        f"20240231T120000123456Z{U1}",  # 31 February: right shape, impossible date
        f"20240315T250000123456Z{U1}",  # hour 25
        f"20240315T120000123456X{U1}",  # no Z
        f"{T0}{U1.replace('-', '_')}",
        f"{T0}{'0' * 36}",
        "\x00" * 58,
    ],
)
def test_parse_dotted_order_rejects_malformed(order: str) -> None:
    with pytest.raises(ids.DottedOrderError):
        ids.parse_dotted_order(order)


def test_parse_dotted_order_caps_depth_before_splitting() -> None:
    deep = ".".join([f"{T0}{U1}"] * (ids.MAX_DOTTED_ORDER_DEPTH + 1))
    with pytest.raises(ids.DottedOrderError, match="deeper"):
        ids.parse_dotted_order(deep)
    ok = ".".join([f"{T0}{U1}"] * ids.MAX_DOTTED_ORDER_DEPTH)
    assert len(ids.parse_dotted_order(ok)[0]) == ids.MAX_DOTTED_ORDER_DEPTH


def test_w3c_mapping_round_trips_trace_and_span_ids() -> None:
    trace_hex = "4bf92f3577b34da6a3ce929d0e0e4736"
    span_hex = "00f067aa0ba902b7"
    trace_uuid = ids.uuid_from_w3c(trace_hex)
    span_uuid = ids.uuid_from_w3c(trace_hex, span_hex)
    assert ids.trace_id_hex(trace_uuid) == trace_hex
    assert ids.span_id_from_run_id(span_uuid) == span_hex
    assert span_uuid != trace_uuid


@pytest.mark.parametrize(
    "zero",
    [0x0660, 0xFF10, 0x0966, 0x1D7CE],  # Arabic-Indic, fullwidth, Devanagari, math bold
)
def test_parse_dotted_order_takes_only_ascii_digits(zero: int) -> None:
    # re's \d and int() both take these; the order would go out in a header http.client
    # cannot encode.
    for i in (0, 9, 15, 20):
        foreign = T0[:i] + chr(zero + int(T0[i])) + T0[i + 1 :]
        with pytest.raises(ids.DottedOrderError):
            ids.parse_dotted_order(f"{foreign}{U1}")
        with pytest.raises(ids.DottedOrderError):
            ids.parse_dotted_order(f"{T0}{U1}.{foreign}{U2}")

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


def test_new_run_ids_are_unique_ordered_and_real_uuid7s() -> None:
    made = [ids.new_run_id() for _ in range(5000)]
    run_ids = [m[0] for m in made]
    assert len({m[1] for m in made}) == len(made)
    assert run_ids == sorted(run_ids)  # one thread: creation order, within a millisecond too
    for run_id, text, start in made[:50]:
        assert str(run_id) == text == str(uuid.UUID(text))
        assert run_id.version == 7 and run_id.variant == uuid.RFC_4122
        assert run_id.int >> 80 == start // 1000


def test_a_forked_child_draws_other_ids() -> None:
    import os

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        os.close(read)
        os.write(write, ",".join(ids.new_run_id()[1] for _ in range(3)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = pipe.read().split(",")
    os.waitpid(pid, 0)
    ours = [ids.new_run_id()[1] for _ in range(3)]
    # Same millisecond or not, the 74 bits after the time differ: the child restarted its
    # counter at a new random point.
    assert len(child) == 3
    assert not {c[15:] for c in child} & {o[15:] for o in ours}


def test_a_run_id_made_from_text_is_a_uuid_in_every_respect() -> None:
    import pickle

    run_id = ids.new_run_id()[0]
    plain = uuid.UUID(str(run_id))
    assert run_id == plain and plain == run_id and hash(run_id) == hash(plain)
    assert run_id.int == plain.int and run_id.hex == plain.hex and run_id.bytes == plain.bytes
    assert run_id.is_safe is uuid.SafeUUID.unknown
    assert {plain: 1}[run_id] == 1
    assert pickle.loads(pickle.dumps(run_id)) == plain
    assert repr(run_id) == f"UUID({str(plain)!r})"
    with pytest.raises(AttributeError):
        run_id.nothing  # noqa: B018
    with pytest.raises(TypeError):
        run_id.int = 5  # type: ignore[misc]  # immutable, as uuid.UUID


@pytest.mark.parametrize(
    ("trace_hex", "span_hex"),
    [
        ("0x" + "a" * 30, None),
        ("4bf92f3577b34da6_3ce929d0e0e4736", None),
        (" " + "a" * 31, None),
        ("a" * 32, "0x" + "b" * 14),
        ("a" * 32, "b" * 15),
        ("g" * 32, None),
    ],
)
def test_uuid_from_w3c_takes_only_hex(trace_hex: str, span_hex: str | None) -> None:
    # int(x, 16) takes "0x", "_" and spaces: the text made from these would be no UUID.
    with pytest.raises(ValueError, match="hex digits"):
        ids.uuid_from_w3c(trace_hex, span_hex)


def test_timestamps_of_different_days_parse_apart() -> None:
    # The day of the last parse is remembered: the next one of another day must not reuse it,
    # and an impossible date is still refused after a good one of the same month.
    a = ids.parse_dotted_order(f"20240315T235959999999Z{U1}")[1]
    b = ids.parse_dotted_order(f"20240316T000000000000Z{U1}")[1]
    assert b - a == 1
    assert a == ids.to_micros("2024-03-15T23:59:59.999999+00:00")
    with pytest.raises(ids.DottedOrderError):
        ids.parse_dotted_order(f"20240231T000000000000Z{U1}")


def test_ids_of_one_process_differ_in_their_high_half() -> None:
    # The collector tells the stand-in id of a W3C span (the trace id's high 64 bits and the
    # span id) from a run's by the high half: no two ids made here may share it, even within
    # one millisecond (collector/tree.py).
    made = [ids.new_run_id()[0] for _ in range(3000)]
    assert len({u.int >> 64 for u in made}) == len(made)

"""``inject`` into an empty list makes Kafka's header shape, ``(str, bytes)`` pairs, checked with
the real client (kafka-python, a dev dependency): its producer accepts them (it refuses any other
shape before it looks for a broker) and they survive its record format, written and read back
as a consumer gets them, into ``continue_trace``. No broker is needed: nothing is sent."""

from __future__ import annotations

import warnings
from typing import Any

import pytest

from tracestitch import continue_trace, inject, trace
from tracestitch.testing import capture_runs

with warnings.catch_warnings():
    # kafka-python 3 reads its protocol schemas through importlib.resources' legacy calls.
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import KafkaProducer
    from kafka.errors import KafkaTimeoutError
    from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder


def _producer_accepts(headers: list[Any]) -> bool:
    """Whether kafka-python's ``send`` takes ``headers``: it checks them first, then waits for
    the topic's metadata, which no broker answers here (a 200 ms bound)."""
    producer = KafkaProducer(bootstrap_servers="127.0.0.1:1", api_version=(2, 8), max_block_ms=200)
    try:
        producer.send("orders", b"{}", headers=headers)
    except TypeError:
        return False
    except KafkaTimeoutError:
        return True  # past the header check
    finally:
        producer.close(timeout=1)
    return True


def _through_a_record(headers: list[Any]) -> list[tuple[str, bytes]]:
    """``headers`` written into a Kafka record batch and read back, as a consumer gets them."""
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 20,
    )
    builder.append(0, None, None, b"{}", headers)
    (record,) = DefaultRecordBatch(bytes(builder.build()))
    return list(record.headers)


def test_inject_into_an_empty_list_gives_headers_kafka_takes_and_reads_back() -> None:
    with capture_runs() as runs:
        with trace("publish order") as producer:
            headers = inject(producer, [])
        assert producer is not None
        assert headers and all(type(k) is str and type(v) is bytes for k, v in headers)
        assert _producer_accepts(headers)
        received = _through_a_record(headers)
        assert received == headers
        with continue_trace(received, name="consume order") as consumer:
            pass
    assert consumer is not None and consumer.parent_run_id == producer.id
    assert sorted(r.name for r in runs) == ["consume order", "publish order"]


def test_the_client_refuses_the_other_shapes() -> None:
    # Why an empty list cannot get ASGI's (bytes, bytes): the check above would be vacuous if
    # the client took anything.
    assert not _producer_accepts([(b"langsmith-trace", b"x")])
    assert not _producer_accepts([("langsmith-trace", "x")])
    with pytest.raises(AttributeError):
        _through_a_record([(b"langsmith-trace", b"x")])


@pytest.mark.parametrize(
    "first",
    [(b"host", b"x"), ("message-id", "42"), ("message-id", b"42")],
    ids=["asgi-bytes", "text", "kafka"],
)
def test_a_list_that_has_pairs_keeps_their_types(first: tuple[Any, Any]) -> None:
    with capture_runs(), trace("publish") as run:
        headers = inject(run, [first])
    assert run is not None and len(headers) > 1
    assert {(type(k), type(v)) for k, v in headers} == {(type(first[0]), type(first[1]))}

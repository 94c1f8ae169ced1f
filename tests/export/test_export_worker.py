"""BatchExporter: batching, coalescing, retries and backoff, downtime, spool, accounting."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from export_helpers import ingest_server, wait_for

from tracestitch import RunTree
from tracestitch.export.langsmith import LangSmithSink
from tracestitch.export.sink import DeliveryError, parse_retry_after
from tracestitch.export.wire import WireOp
from tracestitch.export.worker import BatchExporter, RetryPolicy


def invariant(stats: dict[str, int]) -> bool:
    settled = (
        stats["sent"] + stats["spooled"] + stats["dropped"] + stats["coalesced"] + stats["pending"]
    )
    return settled == stats["submitted"]


class ListSink:
    """Delivers to a list; fails with the scripted errors first."""

    def __init__(self, errors: Sequence[DeliveryError] = ()) -> None:
        self.errors = list(errors)
        self.batches: list[list[WireOp]] = []
        self.lock = threading.Lock()

    def send(self, ops: Sequence[WireOp]) -> None:
        with self.lock:
            if self.errors:
                raise self.errors.pop(0)
            self.batches.append(list(ops))

    def close(self) -> None:
        pass

    @property
    def ids(self) -> list[str]:
        return [op.run_id for batch in self.batches for op in batch]


def finished_run(i: int, exporter: BatchExporter) -> RunTree:
    run = RunTree(name=f"run-{i}", inputs={"i": i}, exporter=exporter)
    run.end(outputs={"o": i})
    return run


def test_batches_close_on_count_and_every_run_arrives() -> None:
    sink = ListSink()
    exporter = BatchExporter(sink, max_batch_size=10, flush_interval=5)
    for i in range(95):
        finished_run(i, exporter).post()
    assert exporter.flush(5)
    assert sorted(len(b) for b in sink.batches)[-1] == 10
    assert len(sink.ids) == 95 == len(set(sink.ids))
    stats = exporter.stats()
    assert stats["sent"] == 95 and invariant(stats)
    exporter.shutdown()


def test_batches_close_on_bytes() -> None:
    sink = ListSink()
    exporter = BatchExporter(sink, max_batch_bytes=2000, flush_interval=5)
    for _ in range(20):
        run = RunTree(name="big", inputs={"blob": "x" * 1000}, exporter=exporter)
        run.end()
        run.post()
    assert exporter.flush(5)
    assert all(sum(op.size for op in b) < 4000 for b in sink.batches)
    assert len(sink.batches) >= 7
    exporter.shutdown()


def test_post_and_patch_of_one_run_become_one_post() -> None:
    sink = ListSink()
    exporter = BatchExporter(sink, flush_interval=5)
    run = RunTree(name="r", inputs={"q": 1}, exporter=exporter)
    run.post()  # open at submit time
    run.end(outputs={"a": 2})
    run.patch()
    assert exporter.flush(5)
    [op] = [op for b in sink.batches for op in b]
    assert op.kind == "post"
    data = op.to_dict()
    assert data["inputs"] == {"q": 1} and data["outputs"] == {"a": 2} and data["end_time"]
    stats = exporter.stats()
    assert stats["sent"] == 2 and stats["merged"] == 1 and invariant(stats)
    exporter.shutdown()


def test_patch_after_a_complete_post_still_carries_later_changes() -> None:
    # A run can change after end() and after its post left: an error recorded by trace()'s
    # exit, metadata added late. The patch must go out, or that is lost.
    import orjson

    sink = ListSink()
    exporter = BatchExporter(sink, flush_interval=5)
    run = finished_run(1, exporter)
    run.post()
    assert exporter.flush(5)
    run.add_metadata({"late": True})
    run.end(error="ValueError: boom")
    run.patch()
    assert exporter.flush(5)
    assert sink.ids == [str(run.id), str(run.id)]
    last = orjson.loads(sink.batches[-1][-1].body)
    assert last["error"] == "ValueError: boom"
    assert last["extra"]["metadata"]["late"] is True
    stats = exporter.stats()
    assert stats["coalesced"] == 0 and invariant(stats)
    exporter.shutdown()


def test_retry_delays_exponential_with_jitter_then_spool(tmp_path: Path) -> None:
    delays: list[float] = []
    offset = [0.0]
    sink = ListSink([DeliveryError("HTTP 503", status=503)] * 4)
    exporter = BatchExporter(
        sink,
        spool=tmp_path,
        retry=RetryPolicy(max_attempts=3, initial_delay=0.5, multiplier=2, jitter=0.2),
        sleep=delays.append,
        rand=lambda: 0.5,
        clock=lambda: time.monotonic() + offset[0],
        flush_interval=5,
    )
    finished_run(1, exporter).post()
    assert exporter.flush(5)
    # attempt 1 fails -> wait 0.5 * (1 - 0.2*0.5); attempt 2 -> 1.0 * 0.9; attempt 3 exhausts
    # the batch: spooled, and the sink counts as down until a probe 1.8 s later.
    assert delays == pytest.approx([0.45, 0.9])
    stats = exporter.stats()
    assert stats["retried"] == 2 and stats["spooled"] == 1 and stats["requests_failed"] == 3
    # While down, before the probe time, a new batch is spooled without an attempt.
    finished_run(2, exporter).post()
    assert exporter.flush(5)
    assert exporter.stats()["requests_failed"] == 3 and exporter.stats()["spooled"] == 2
    offset[0] += 1.9  # the probe is due: it fails (4th scripted error), next probe in 3.6 s
    finished_run(3, exporter).post()
    assert exporter.flush(5)
    assert exporter.stats()["requests_failed"] == 4 and delays == pytest.approx([0.45, 0.9])
    offset[0] += 3.7  # the sink is back: the probe succeeds and the spool is replayed
    finished_run(4, exporter).post()
    assert exporter.flush(5)
    assert wait_for(lambda: exporter.stats()["replayed"] == 3)
    assert sorted(sink.ids) == sorted({*sink.ids}) and len(sink.ids) == 4
    exporter.shutdown()


def test_retry_after_is_honoured_exactly() -> None:
    delays: list[float] = []
    sink = ListSink(
        [
            DeliveryError.from_status(429, retry_after="7"),
            DeliveryError.from_status(503, retry_after="2"),
        ]
    )
    exporter = BatchExporter(sink, sleep=delays.append, rand=lambda: 0.9, flush_interval=5)
    finished_run(1, exporter).post()
    assert exporter.flush(5)
    assert delays == [7.0, 2.0]
    assert len(sink.ids) == 1
    exporter.shutdown()


def test_other_4xx_not_retried_logged_once_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    delays: list[float] = []
    sink = ListSink([DeliveryError.from_status(400, "bad"), DeliveryError.from_status(400)])
    exporter = BatchExporter(sink, sleep=delays.append, max_batch_size=1, flush_interval=5)
    with caplog.at_level(logging.WARNING, "tracestitch.export"):
        finished_run(1, exporter).post()
        assert exporter.flush(5)
        finished_run(2, exporter).post()
        assert exporter.flush(5)
    assert delays == []
    stats = exporter.stats()
    assert stats["rejected"] == 2 and invariant(stats)
    assert stats["dropped"] == 2
    assert stats["drop_reasons"] == {"refused by the endpoint: HTTP 400": 2}
    failures = [r.getMessage() for r in caplog.records if "failed (" in r.getMessage()]
    assert len(failures) == 1 and "HTTP 400" in failures[0]
    assert any("dropped 1 run operation" in r.getMessage() for r in caplog.records)
    exporter.shutdown()


@pytest.mark.parametrize(
    ("value", "expected"),
    [("3", 3.0), ("0.5", 0.5), ("-2", 0.0), ("soon", None), ("", None), (None, None)],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date() -> None:
    assert parse_retry_after("Thu, 01 Jan 1970 00:01:40 GMT", now=90.0) == pytest.approx(10.0)


def test_status_classification() -> None:
    for status in (408, 425, 429, 500, 502, 503, 504):
        assert DeliveryError.from_status(status).retryable
    for status in (400, 401, 403, 404, 422):
        assert not DeliveryError.from_status(status).retryable


def test_queue_bound_drops_are_counted_and_warned(caplog: pytest.LogCaptureFixture) -> None:
    gate = threading.Event()

    class Blocked(ListSink):
        def send(self, ops: Sequence[WireOp]) -> None:
            gate.wait(5)
            super().send(ops)

    exporter = BatchExporter(Blocked(), max_queue_bytes=20_000, item_estimate=1000)
    with caplog.at_level(logging.WARNING, "tracestitch.export"):
        for i in range(500):
            finished_run(i, exporter).post()
    stats = exporter.stats()
    assert stats["dropped"] > 0 and stats["drop_reasons"]["queue full"] == stats["dropped"]
    assert stats["bytes_queued"] <= 20_000
    warnings = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(warnings) == 1  # rate-limited
    gate.set()
    exporter.shutdown()
    assert invariant(exporter.stats())


def test_sink_down_under_load_then_up_delivers_each_run_exactly_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "tracestitch.export")
    with ingest_server() as server:
        exporter = BatchExporter(
            LangSmithSink(server.url, "k"),
            spool=tmp_path / "spool",
            max_batch_size=50,
            flush_interval=0.02,
            max_queue_bytes=16_000_000,
            retry=RetryPolicy(max_attempts=2, initial_delay=0.01, max_delay=0.05),
        )
        runs = [finished_run(i, exporter) for i in range(3000)]
        for run in runs[:1000]:
            run.post()
        assert exporter.flush(5)
        server.stop()  # down, under load
        for run in runs[1000:2500]:
            run.post()
        assert exporter.flush(10)  # everything is now sent or spooled
        mid = exporter.stats()
        assert mid["spooled"] > 0
        server.start()  # same port
        for run in runs[2500:]:
            run.post()
        assert exporter.flush(10)
        assert wait_for(lambda: len(server.capture.runs) == 3000, 20), (
            exporter.stats(),
            len(server.capture.runs),
        )
        exporter.shutdown()
        cap = server.capture
        assert not cap.errors
        assert {str(r.id) for r in runs} == cap.received_ids()
        assert set(cap.posts.values()) == {1}, "a run was delivered twice"
        stats = exporter.stats()
        assert stats["dropped"] == 0 and invariant(stats)
        assert stats["replayed"] == stats["spooled"]
        # The recovery is logged once, with what the spool delivered.
        back = [r.getMessage() for r in caplog.records if "is back after" in r.getMessage()]
        assert len(back) == 1, back
        assert f"delivered {stats['replayed']} spooled" in back[0]


def test_shutdown_is_bounded_and_spools_leftovers(tmp_path: Path) -> None:
    with ingest_server() as server:
        server.capture.delay = 5.0  # a 5-s-slow endpoint
        exporter = BatchExporter(LangSmithSink(server.url), spool=tmp_path, flush_interval=0.01)
        for i in range(300):
            finished_run(i, exporter).post()
        started = time.monotonic()
        assert exporter.shutdown(timeout=1.0) is False
        assert time.monotonic() - started < 1.5
        stats = exporter.stats()
        assert stats["spooled"] == 300 and invariant(stats)
        server.capture.event.set()


def test_exit_does_not_wait_past_the_timeout_for_an_endpoint_that_takes_nothing(
    tmp_path: Path,
) -> None:
    with ingest_server() as server:
        server.capture.delay = 5.0  # answers after 5 s: within shutdown_max, past the timeout
        exporter = BatchExporter(
            LangSmithSink(server.url), spool=tmp_path, flush_interval=0.01, shutdown_timeout=1.0
        )
        for i in range(300):
            finished_run(i, exporter).post()
        # As at exit: no timeout given. Nothing is taken within 1 s, so it stops there
        # (waiting on for the 5-s answer would deliver the first batch instead of spooling it).
        assert exporter.shutdown() is False
        stats = exporter.stats()
        assert stats["spooled"] == 300 and stats["sent"] == 0 and invariant(stats)
        server.capture.event.set()


class _HeldSink(ListSink):
    """Takes nothing until ``release`` is set (a slow endpoint, under the test's control)."""

    def __init__(self) -> None:
        super().__init__()
        self.sending = threading.Event()
        self.release = threading.Event()

    def send(self, ops: Sequence[WireOp]) -> None:
        self.sending.set()
        assert self.release.wait(10)
        super().send(ops)


def test_a_run_handed_over_while_shutdown_waits_is_delivered_too() -> None:
    # At exit other threads still run: a server's request thread ends its run just after
    # writing its response. The exporter is shutting down, not shut: it takes the run.
    sink = _HeldSink()
    exporter = BatchExporter(sink, flush_interval=0.01, shutdown_timeout=10.0)
    finished_run(0, exporter).post()
    assert sink.sending.wait(10)  # the first batch is at the sink
    results: list[bool] = []
    closing = threading.Thread(target=lambda: results.append(exporter.shutdown()))
    closing.start()
    assert wait_for(lambda: exporter._closing)  # shutdown is waiting for the sink
    finished_run(1, exporter).post()
    sink.release.set()
    closing.join(10)
    assert results == [True]
    assert len(sink.ids) == len(set(sink.ids)) == 2  # each once
    stats = exporter.stats()
    assert stats["sent"] == stats["submitted"] == 2 and invariant(stats), stats
    finished_run(2, exporter).post()  # after shutdown: refused, counted
    assert exporter.stats()["drop_reasons"] == {"exporter closed": 1}


def test_unstarted_exporter_shutdown_is_instant() -> None:
    exporter = BatchExporter(ListSink())
    assert exporter.shutdown() is True
    finished_run(1, exporter).post()  # after shutdown: dropped, counted
    assert exporter.stats()["drop_reasons"] == {"exporter closed": 1}


def test_repr_and_errors_never_show_the_api_key() -> None:
    sink = LangSmithSink("http://127.0.0.1:9", "sk-very-secret")
    exporter = BatchExporter(sink)
    assert "sk-very" not in repr(sink) + repr(exporter) + repr(sink._endpoints)
    with pytest.raises(DeliveryError) as info:
        sink.send([])
    assert "sk-very" not in str(info.value)
    exporter.shutdown()

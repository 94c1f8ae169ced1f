"""Spool: records round-trip, the bound drops oldest (counted), torn tails, claims, and a
SIGKILLed process's spool replayed by the next one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from export_helpers import ingest_server, wait_for

from tracestitch.export.langsmith import LangSmithSink
from tracestitch.export.spool import Spool, decode_records, encode_record
from tracestitch.export.wire import WireOp
from tracestitch.export.worker import BatchExporter

SRC = str(Path(__file__).resolve().parents[2] / "src")


def op(i: int, size: int = 10) -> WireOp:
    return WireOp(
        kind="post",
        run_id=f"00000000-0000-7000-8000-{i:012d}",
        trace_id=f"00000000-0000-7000-8000-{i:012d}",
        body=b'{"id":"%d","inputs":{"x":"' % i + b"a" * size + b'"}}',
        attachments={"f": ("text/plain", b"data")} if i % 2 else {},
        weight=1,
    )


def test_records_round_trip_and_a_torn_tail_is_counted() -> None:
    ops = [op(i) for i in range(5)]
    data = b"".join(encode_record(o) for o in ops)
    assert decode_records(data) == (ops, 0)
    got, bad = decode_records(data[:-3])
    assert got == ops[:4] and bad == 1


def test_bound_drops_oldest_segments_and_counts(tmp_path: Path) -> None:
    dropped: list[int] = []
    spool = Spool(
        tmp_path, max_bytes=20_000, segment_bytes=4_000, on_drop=lambda n, _: dropped.append(n)
    )
    for i in range(100):
        spool.append([op(i, size=200)])
    assert spool.stats.bytes <= 20_000
    assert sum(dropped) == spool.stats.dropped > 0
    kept = [o.run_id for o in spool.iter_all()]
    assert kept == [op(i).run_id for i in range(100 - len(kept), 100)]  # the newest survive


def test_claim_ack_release(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append([op(1), op(2)])
    claim = spool.claim_oldest()
    assert claim is not None and [o.run_id for o in claim.ops] == [op(1).run_id, op(2).run_id]
    assert spool.claim_oldest() is None  # claimed: nobody else gets it
    spool.release(claim)
    again = spool.claim_oldest()
    assert again is not None and len(again.ops) == 2
    spool.ack(again)
    assert not spool.pending() and list(tmp_path.iterdir()) == []


def test_a_live_writers_open_segment_is_not_taken(tmp_path: Path) -> None:
    writer = Spool(tmp_path)
    writer.append([op(1)])
    other = Spool(tmp_path)  # another process's view; recover() ran in its constructor
    assert other.claim_oldest() is None
    writer.close()
    other.recover()
    claim = other.claim_oldest()
    assert claim is not None and len(claim.ops) == 1


def test_sigkilled_process_spool_is_replayed_by_the_next(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    script = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {SRC!r})
        from tracestitch import RunTree
        from tracestitch.export.langsmith import LangSmithSink
        from tracestitch.export.worker import BatchExporter, RetryPolicy
        exporter = BatchExporter(
            LangSmithSink("http://127.0.0.1:9"),  # nothing listens: everything is spooled
            spool={str(spool_dir)!r},
            retry=RetryPolicy(max_attempts=1),
            flush_interval=0.01,
        )
        ids = []
        for i in range(200):
            run = RunTree(name=f"r{{i}}", inputs={{"i": i}}, exporter=exporter)
            run.end()
            run.post()
            ids.append(str(run.id))
        exporter.flush(10)
        assert exporter.stats()["spooled"] == 200, exporter.stats()
        print(" ".join(ids), flush=True)
        sys.stdin.read()  # wait to be killed
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    ids = set(proc.stdout.readline().split())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert len(ids) == 200
    assert list(spool_dir.glob("*.open")), "the killed process's segment is still open"
    with ingest_server() as server:
        exporter = BatchExporter(LangSmithSink(server.url), spool=spool_dir).start()
        deadline_ok = wait_for(lambda: server.capture.received_ids() >= ids)
        exporter.shutdown()
        assert deadline_ok, (exporter.stats(), len(server.capture.received_ids()))
        assert server.capture.received_ids() == ids and not server.capture.errors
        assert exporter.stats()["replayed"] == 200


def test_a_spooled_segment_is_replayed_in_parts_the_size_of_a_batch(tmp_path: Path) -> None:
    # One request holding a whole segment can outlast the sink's timeout and would then be
    # repeated whole: the replay sends batch-sized parts and acknowledges the segment after.
    from test_export_worker import ListSink

    spool = Spool(tmp_path / "spool", max_bytes=64 << 20, segment_bytes=16 << 20)
    spool.open()
    spool.append([op(i) for i in range(1_000)])
    spool.close()
    sink = ListSink()
    exporter = BatchExporter(sink, spool=tmp_path / "spool", max_batch_size=100).start()
    try:
        assert wait_for(lambda: exporter.stats()["replayed"] == 1_000, 20), exporter.stats()
        assert len(sink.batches) == 10 and {len(b) for b in sink.batches} == {100}
        assert sorted(sink.ids) == sorted(o.run_id for o in (op(i) for i in range(1_000)))
        assert not exporter.spool.pending()  # type: ignore[union-attr]
    finally:
        exporter.shutdown(1)

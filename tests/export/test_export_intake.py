"""Submit-time coalescing (and its races with the batcher), the calibrated size estimate, and
what building an exporter may not do on the caller's thread."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

from test_export_worker import ListSink, invariant

from tracestitch import RunTree
from tracestitch.export.accounting import Ledger
from tracestitch.export.deferred import DeferredExporter
from tracestitch.export.intake import MAX_ESTIMATE, MEMORY_FACTOR, MIN_ESTIMATE, Intake
from tracestitch.export.worker import BatchExporter

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _intake(max_bytes: int = 1 << 30, estimate: int = 1000) -> tuple[Ledger, Intake]:
    ledger = Ledger(None, lambda: 0.0, 30.0)
    return ledger, Intake(ledger, max_bytes, estimate)


def test_patch_behind_a_queued_post_is_coalesced() -> None:
    ledger, intake = _intake()
    run = RunTree(name="r")
    assert intake.put("post", run) is None
    run.end()
    assert intake.put("patch", run) is None
    assert len(intake) == 1 and ledger.counts["coalesced"] == 1 and ledger.settled == 1
    [(op, taken)] = intake.take(10)
    assert op == "post" and taken is run and taken.end_time_us is not None


def test_patch_after_the_batcher_took_the_post_is_queued() -> None:
    ledger, intake = _intake()
    run = RunTree(name="r")
    intake.put("post", run)
    assert intake.take(10)  # the batcher has it, maybe serializing the still-open run
    run.end()
    intake.put("patch", run)
    assert [op for op, _ in intake.take(10)] == ["patch"] and ledger.counts["coalesced"] == 0


def test_coalescing_is_per_run_object_and_a_repeated_post_is_safe() -> None:
    ledger, intake = _intake()
    a, b = RunTree(name="a"), RunTree(name="b")
    intake.put("post", a)
    intake.put("post", a)
    intake.put("patch", b)  # b's post is not queued: b's patch is
    assert intake.take(1) == [("post", a)]
    intake.put("patch", a)  # taking one of a's posts forgot a: the patch is queued (safe)
    assert ledger.counts["coalesced"] == 0
    assert [op for op, _ in intake.take(10)] == ["post", "patch", "patch"]


def test_estimate_follows_serialized_sizes_within_bounds() -> None:
    _, intake = _intake(estimate=4096)
    intake.observe(600 * 200, 200)
    assert intake.estimate == int(600 * MEMORY_FACTOR)
    intake.observe(1, 200)
    assert intake.estimate == MIN_ESTIMATE
    intake.observe(10 * MAX_ESTIMATE, 1)
    assert MIN_ESTIMATE < intake.estimate <= MAX_ESTIMATE
    intake.observe(0, 0)  # nothing serialized: no change, no division by zero


def test_the_bound_is_checked_against_the_current_estimate() -> None:
    _, intake = _intake(max_bytes=100_000, estimate=1000)
    refused = [intake.put("post", RunTree(name=str(i))) for i in range(200)]
    accepted = refused.count(None)
    assert refused[accepted:] == ["queue full"] * (200 - accepted)
    assert intake.queued_bytes <= 100_000
    intake.observe(10_000 * 10, 10)  # runs turn out 10x bigger: the queue is re-priced
    assert intake.put("post", RunTree(name="x")) == "queue full"


class _GatedRun(RunTree):
    """Serializes its state at ``to_wire`` time, then holds the batcher until released."""

    entered: threading.Event
    release: threading.Event

    def to_wire(self, op: str = "post") -> dict[str, Any]:
        wire = super().to_wire(op)
        self.entered.set()
        self.release.wait(10)
        return wire


def _gated(exporter: BatchExporter) -> _GatedRun:
    run = _GatedRun(name="gated", exporter=exporter)
    run.entered, run.release = threading.Event(), threading.Event()
    return run


def test_race_batcher_serializes_the_open_run_then_the_patch_is_sent() -> None:
    sink = ListSink()
    exporter = BatchExporter(sink, flush_interval=5)
    run = _gated(exporter)
    run.post()
    assert run.entered.wait(10)  # the batcher took the post and serialized the open run
    run.end(outputs={"a": 1})
    run.patch()
    assert exporter.stats()["coalesced"] == 0 and exporter.stats()["queued"] == 1
    run.release.set()
    assert exporter.flush(10)
    ops = [(op.kind, op.to_dict()) for batch in sink.batches for op in batch]
    final = {k: v for _, d in ops for k, v in d.items()}
    assert final["outputs"] == {"a": 1} and final["end_time"]
    stats = exporter.stats()
    # The patch reached the batcher: folded into the still-open batch's post, or sent itself.
    assert stats["merged"] + sum(k == "patch" for k, _ in ops) == 1
    assert stats["sent"] == 2 and invariant(stats)
    exporter.shutdown()


def test_race_patch_arrives_while_its_post_is_queued() -> None:
    sink = ListSink()
    exporter = BatchExporter(sink, flush_interval=5)
    blocker = _gated(exporter)
    blocker.post()
    assert blocker.entered.wait(10)  # the batcher is busy: what comes next stays queued
    run = RunTree(name="r", inputs={"q": 1}, exporter=exporter)
    run.post()
    run.end(outputs={"a": 2})
    run.patch()
    assert exporter.stats()["coalesced"] == 1
    blocker.release.set()
    assert exporter.flush(10)
    mine = [op for batch in sink.batches for op in batch if op.run_id == str(run.id)]
    assert [op.kind for op in mine] == ["post"]
    data = mine[0].to_dict()
    assert data["inputs"] == {"q": 1} and data["outputs"] == {"a": 2} and data["end_time"]
    stats = exporter.stats()
    assert stats["sent"] == 2 and invariant(stats)
    exporter.shutdown()


def test_every_run_arrives_ended_under_concurrent_submitters() -> None:
    sink = ListSink()
    exporter = BatchExporter(sink, max_batch_size=20, flush_interval=0.01)

    def work(k: int) -> None:
        for i in range(300):
            run = RunTree(name=f"{k}-{i}", exporter=exporter)
            run.post()
            run.end(outputs={"i": i})
            run.patch()

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert exporter.flush(10)
    final: dict[str, dict[str, Any]] = {}
    for batch in sink.batches:
        for op in batch:
            final.setdefault(op.run_id, {}).update(op.to_dict())
    assert len(final) == 1200 and all(d.get("end_time") for d in final.values())
    stats = exporter.stats()
    assert stats["dropped"] == 0 and invariant(stats)
    exporter.shutdown()


def test_building_an_exporter_touches_no_disk(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    exporter = BatchExporter(ListSink(), spool=spool_dir)
    assert not spool_dir.exists()  # created and scanned by the worker, not here
    exporter.start()
    assert exporter.flush(5)
    exporter.shutdown()
    assert spool_dir.is_dir()


def test_deferred_exporter_passes_held_runs_on_in_order() -> None:
    sink = ListSink()
    gate = threading.Event()
    real = BatchExporter(sink, flush_interval=5)

    def build() -> BatchExporter:
        gate.wait(10)
        return real

    deferred = DeferredExporter(build).start()
    runs = [RunTree(name=str(i), exporter=deferred) for i in range(5)]
    for run in runs:
        run.end()
        run.post()
    assert deferred.exporter is None and deferred.stats()["held"] == 5
    gate.set()
    assert deferred.wait(10) is real
    assert deferred.flush(5)
    assert sink.ids == [str(r.id) for r in runs]
    deferred.shutdown()


def test_import_with_an_endpoint_configured_starts_nothing(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import json, os, sys, threading
        os.environ.update(TRACESTITCH_ENDPOINT="http://127.0.0.1:9",
                          TRACESTITCH_SPOOL_DIR={str(tmp_path / "spool")!r})
        sys.path.insert(0, {SRC!r})
        import tracestitch
        from tracestitch import exporter
        print(json.dumps({{
            "threads": threading.active_count(),
            "factory": exporter._exporter_factory is not None,
            "modules": sorted(m for m in sys.modules if m.startswith("tracestitch.export.")
                              or m in ("http.client", "ssl", "gzip", "email.utils",
                                       "zstandard", "pathlib")),
        }}))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["threads"] == 1 and result["factory"]
    assert set(result["modules"]) <= {
        "tracestitch.export.config",
        "tracestitch.export.memory",
        "tracestitch.export.otel_env",  # stdlib only: reads the OTel variables
        "pathlib",  # may come from the core; not from export.config
    }, result["modules"]
    assert not (tmp_path / "spool").exists()


def test_a_full_queue_makes_the_caller_serialize_instead_of_dropping() -> None:
    # The batcher is held inside its first run while the queue fills: every later run is
    # serialized on the submitting thread, kept within the bound, and delivered in the end.
    sink = ListSink()
    exporter = BatchExporter(sink, max_queue_bytes=256 << 10, item_estimate=1024, flush_interval=5)
    gate = _gated(exporter)
    gate.end()
    gate.post()
    assert gate.entered.wait(10)
    # The queue's share is 32 KiB: 32 runs at the 1 KiB estimate, then 16 KiB serialized.
    runs = [RunTree(name=f"r{i}", inputs={"i": i}, exporter=exporter) for i in range(50)]
    for run in runs:
        run.end(outputs={"i": run.inputs["i"]})
        run.post()
    stats = exporter.stats()
    assert stats["serialized_by_caller"] > 0 and stats["dropped"] == 0
    assert stats["bytes_queued"] <= 256 << 10
    gate.release.set()
    assert exporter.flush(10)
    stats = exporter.stats()
    assert stats["sent"] == 51 and stats["dropped"] == 0 and invariant(stats)
    assert stats["bytes_queued"] == 0  # every byte charged (with overheads) was given back
    sent = {op.run_id: op.to_dict() for batch in sink.batches for op in batch}
    assert {str(r.id) for r in runs} <= set(sent)
    assert all(sent[str(r.id)]["outputs"] == {"i": r.inputs["i"]} for r in runs)


def test_beyond_the_bound_even_caller_serialized_runs_are_dropped_and_counted() -> None:
    sink = ListSink()
    exporter = BatchExporter(sink, max_queue_bytes=16 << 10, item_estimate=1024, flush_interval=5)
    gate = _gated(exporter)
    gate.end()
    gate.post()
    assert gate.entered.wait(10)
    for i in range(200):
        run = RunTree(name=f"r{i}", inputs={"pad": "x" * 500}, exporter=exporter)
        run.end()
        run.post()
    stats = exporter.stats()
    assert stats["dropped"] > 0 and stats["drop_reasons"] == {"queue full": stats["dropped"]}
    assert stats["bytes_queued"] <= 16 << 10
    gate.release.set()
    assert exporter.flush(10)
    stats = exporter.stats()
    assert stats["sent"] + stats["dropped"] == 201 and invariant(stats)

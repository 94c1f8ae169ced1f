"""The exporter built from the environment on a thread: nothing handed over meanwhile is lost,
and the stand-in gives its place in the slot to the real exporter."""

from __future__ import annotations

import threading

from test_export_worker import ListSink

from tracestitch import exporter as exporter_mod
from tracestitch.export.deferred import MAX_HELD, DeferredExporter
from tracestitch.export.worker import BatchExporter
from tracestitch.run_tree import RunTree


def test_a_burst_beyond_the_buffer_while_building_is_paced_not_dropped() -> None:
    sink = ListSink()
    real = BatchExporter(sink, max_queue_bytes=256 << 20)
    gate = threading.Event()

    def build() -> BatchExporter:
        gate.wait(30)
        return real

    deferred = DeferredExporter(build).start()
    total = MAX_HELD + 2_000
    done = threading.Event()

    def burst() -> None:
        for i in range(total):
            run = RunTree(name=str(i), exporter=deferred)
            run.end()
            run.post()
        done.set()

    producer = threading.Thread(target=burst)
    producer.start()
    # The producer fills the buffer, then waits for the exporter instead of dropping.
    while deferred.stats()["held"] < MAX_HELD:
        assert not done.is_set(), "the burst finished without filling the buffer"
        threading.Event().wait(0.01)
    assert not done.is_set()
    gate.set()
    producer.join(60)
    assert done.is_set()
    assert deferred.flush(30)
    assert len(sink.ids) == len(set(sink.ids)) == total
    assert real.stats()["dropped"] == 0 and deferred.dropped == 0
    deferred.shutdown()


def test_the_real_exporter_takes_the_stand_ins_place_in_the_slot() -> None:
    real = BatchExporter(ListSink())
    deferred = DeferredExporter(lambda: real)
    previous = exporter_mod.set_exporter(deferred)
    try:
        deferred.start()
        assert deferred.wait(10) is real
        assert exporter_mod.get_exporter() is real
    finally:
        exporter_mod.set_exporter(previous)
        real.shutdown()


def test_an_exporter_installed_meanwhile_by_the_app_is_kept() -> None:
    gate = threading.Event()
    real = BatchExporter(ListSink())

    def build() -> BatchExporter:
        gate.wait(10)
        return real

    deferred = DeferredExporter(build)
    previous = exporter_mod.set_exporter(deferred)
    mine = BatchExporter(ListSink())
    try:
        deferred.start()
        exporter_mod.set_exporter(mine)
        gate.set()
        assert deferred.wait(10) is real
        assert exporter_mod.get_exporter() is mine
    finally:
        exporter_mod.set_exporter(previous)
        real.shutdown()
        mine.shutdown()


def test_shutdown_while_building_waits_for_the_build_and_delivers() -> None:
    sink = ListSink()
    real = BatchExporter(sink)
    gate = threading.Event()

    def build() -> BatchExporter:
        gate.wait(10)
        return real

    deferred = DeferredExporter(build, shutdown_timeout=10).start()
    runs = [RunTree(name=str(i), exporter=deferred) for i in range(50)]
    for run in runs:
        run.end()
        run.post()
    threading.Timer(0.1, gate.set).start()
    assert deferred.shutdown()
    assert sorted(sink.ids) == sorted(str(r.id) for r in runs)

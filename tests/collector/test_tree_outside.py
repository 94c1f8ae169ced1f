"""A run whose parent is a span of a service outside tracestitch (OpenTelemetry) is no orphan:
placed under the run the ``traceparent`` chain names, else a root marked ``parent_outside``."""

from __future__ import annotations

from typing import Any

from tracestitch import RunTree, ids
from tracestitch.collector.tree import build_trace


def _wire(run: RunTree, **extra: Any) -> dict[str, Any]:
    run.end()
    wire = run.to_wire()
    wire["extra"] = {**wire["extra"], **extra}
    wire["_span_id"] = run.id.hex[16:]
    return wire


def _below_otel(front: RunTree, otel_span: str, **extra: Any) -> dict[str, Any]:
    parent = RunTree.from_headers({"traceparent": f"00-{front.trace_id.hex}-{otel_span}-01"})
    assert parent is not None
    return _wire(parent.create_child("GET /back"), **extra)


def test_a_run_below_an_otel_hop_goes_under_the_run_that_called_the_hop() -> None:
    front = RunTree("GET /front")
    call = front.create_child("GET otel/hop")
    back = _below_otel(front, "00f067aa0ba902b7", w3c_ancestor=call.id.hex[16:])
    doc = build_trace(str(front.trace_id), [_wire(front), _wire(call), back], None)
    views = {v["id"]: v for v in doc["runs"]}
    assert views[back["id"]]["parent_outside"] and not views[back["id"]]["orphan"]
    assert views[str(call.id)]["child_run_ids"] == [back["id"]]
    assert doc["root_run_ids"] == [str(front.id)]
    # The run keeps its real parent (the OTel span) for whoever reads it.
    assert back["parent_run_id"] == str(ids.uuid_from_w3c(front.trace_id.hex, "00f067aa0ba902b7"))


def test_without_a_certain_link_it_is_a_root_marked_parent_outside_not_an_orphan() -> None:
    front = RunTree("GET /front")
    back = _below_otel(front, "00f067aa0ba902b7")
    stranger = _below_otel(front, "00f067aa0ba902b8", w3c_ancestor="0123456789abcdef")
    lost = _wire(RunTree("lost", parent_run_id=ids.uuid7(), trace_id=front.trace_id))
    doc = build_trace(str(front.trace_id), [_wire(front), back, stranger, lost], None)
    views = {v["id"]: v for v in doc["runs"]}
    for run in (back, stranger):  # an ancestor not in this trace links nothing
        assert views[run["id"]]["parent_outside"] and not views[run["id"]]["orphan"]
    assert views[lost["id"]]["orphan"] and not views[lost["id"]]["parent_outside"]
    assert set(doc["root_run_ids"]) == {str(front.id), back["id"], stranger["id"], lost["id"]}
    assert (doc["summary"]["orphan_count"], doc["summary"]["parent_outside_count"]) == (1, 2)

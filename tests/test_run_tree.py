from __future__ import annotations

import gc
import uuid
import weakref
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from tracestitch import (
    RunCollector,
    RunTree,
    convert_to_dotted_order_format,
    ids,
    is_run_tree,
    is_runnable_config_like,
    tracing_context,
)
from tracestitch.run_tree import new_run
from tracestitch.schemas import Run


class ListExporter:
    def __init__(self) -> None:
        self.ops: list[tuple[str, RunTree]] = []

    def submit(self, op: str, run: RunTree) -> None:
        self.ops.append((op, run))

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def shutdown(self, timeout: float | None = None) -> bool:
        return True


def test_root_run_defaults() -> None:
    run = RunTree("root", inputs={"q": "hi"})
    assert run.trace_id == run.id
    assert run.id.version == 7
    assert run.parent_run_id is None
    assert run.dotted_order == ids.format_segment(run.start_time_us, run.id)
    assert run.run_type == "chain"
    assert run.project_name == "default"
    assert run.end_time is None and run.latency is None
    assert repr(run) == (
        f"RunTree(id={run.id}, name='root', run_type='chain', dotted_order='{run.dotted_order}')"
    )
    assert is_run_tree(run) and not is_run_tree({"id": run.id})


def test_create_child_inherits_trace_project_metadata_and_tags() -> None:
    exporter = ListExporter()
    root = RunTree(
        "root", project_name="p", metadata={"service": "a"}, tags=["x"], exporter=exporter
    )
    child = root.create_child("child", "llm", metadata={"model": "m"}, tags=["y"])
    grandchild = child.create_child("gc", metadata={"service": "override"})
    assert child.trace_id == grandchild.trace_id == root.id
    assert child.parent_run_id == root.id and grandchild.parent_run_id == child.id
    assert grandchild.dotted_order.split(".")[0] == root.dotted_order
    assert grandchild.dotted_order.startswith(child.dotted_order + ".")
    assert child.project_name == grandchild.project_name == "p"
    assert child.metadata == {"service": "a", "model": "m"}
    assert grandchild.metadata == {"service": "override", "model": "m"}
    assert child.tags == ["x", "y"]
    assert child.exporter is exporter
    assert child.execution_order == 2 and root.child_execution_order == 2
    child.metadata["later"] = 1
    assert "later" not in root.metadata  # inherited, not shared


def test_child_never_starts_before_its_parent() -> None:
    root = RunTree("root", start_time=datetime.now(timezone.utc) + timedelta(seconds=5))
    child = root.create_child("child")
    early = root.create_child("early", start_time=datetime(2020, 1, 1, tzinfo=timezone.utc))
    assert child.start_time_us == root.start_time_us
    assert early.start_time_us == root.start_time_us
    assert child.dotted_order > root.dotted_order


def test_remote_parent_whose_clock_runs_ahead_shifts_the_subtree() -> None:
    ahead = ids.now_micros() + 3_000_000  # the caller's clock is 3 s ahead
    caller = RunTree("caller", start_time=ids.micros_to_datetime(ahead))
    parent = RunTree.from_headers(caller.to_headers())
    assert parent is not None
    child = parent.create_child("server")
    assert child.start_time_us >= caller.start_time_us
    child.end()
    # The shift keeps the real duration instead of collapsing it to zero.
    assert child.end_time_us is not None and child.end_time_us >= child.start_time_us
    assert child.start_time_us - ids.now_micros() > 2_000_000


def test_times_accept_datetime_epoch_ms_and_iso() -> None:
    run = RunTree("r", start_time=1_710_504_000_123.456, end_time="2024-03-15T12:00:01Z")
    assert run.start_time == datetime(2024, 3, 15, 12, 0, 0, 123456, tzinfo=timezone.utc)
    assert run.latency == pytest.approx(0.876544)
    run.start_time = datetime(2024, 3, 15, 12, 0, 0)
    assert run.start_time.tzinfo is timezone.utc


def test_end_sets_outputs_error_metadata_and_calls_on_end() -> None:
    seen: list[RunTree] = []
    run = RunTree("r", on_end=seen.append)
    try:
        raise ValueError("boom")
    except ValueError as exc:
        run.end(outputs={"partial": 1}, error=exc, metadata={"attempt": 2})
    assert run.outputs == {"partial": 1}
    assert run.error is not None and run.error.startswith("ValueError: boom")
    assert "Traceback (most recent call last)" in run.error
    assert run.metadata == {"attempt": 2}
    assert seen == [run]
    assert run.end_time_us is not None and run.end_time_us >= run.start_time_us


def test_add_event_tags_metadata_and_set() -> None:
    run = RunTree("r")
    run.add_event("retrieval_started", kwargs={"query": "q"})
    run.add_event({"name": "done", "time": 1_710_504_000_000, "kwargs": {"n": 2}})
    run.add_tags("a")
    run.add_tags(["a", "b"])
    run.add_metadata({"k": "v"})
    run.set(inputs={"x": 1}, outputs={"y": 2}, usage_metadata={"input_tokens": 3})
    assert [e["name"] for e in run.events] == ["retrieval_started", "done"]
    assert run.events[0]["kwargs"] == {"query": "q"}
    assert run.events[1]["time"] == "2024-03-15T12:00:00+00:00"
    assert run.tags == ["a", "b"]
    assert run.metadata == {"k": "v"}
    assert run.inputs == {"x": 1}
    assert run.outputs == {"y": 2, "usage_metadata": {"input_tokens": 3}}


def test_post_and_patch_hand_the_run_to_its_exporter() -> None:
    exporter = ListExporter()
    run = RunTree("r", exporter=exporter)
    run.post()
    run.end(outputs={"ok": True})
    run.patch()
    assert [op for op, _ in exporter.ops] == ["post", "patch"]
    assert exporter.ops[0][1] is run
    disabled = RunTree("off", exporter=exporter, tracing_enabled=False)
    disabled.create_child("c").post()
    disabled.post()
    assert len(exporter.ops) == 2


def test_post_with_children_and_finished_children_are_released() -> None:
    exporter = ListExporter()
    parent = RunTree("parent", exporter=exporter)
    kept = parent.create_child("open")
    done = parent.create_child("done")
    done.end()
    parent.post(exclude_child_runs=False)
    assert [r.name for _, r in exporter.ops] == ["parent", "open", "done"]
    assert parent.child_runs == [kept]


def test_posting_1000_children_as_they_complete_does_not_retain_them() -> None:
    parent = RunTree("parent", exporter=ListExporter())
    refs = []
    for i in range(1000):
        child = parent.create_child(f"child-{i}", "tool")
        child.end(outputs={"result": i})
        child.post()
        refs.append(weakref.ref(child))
    del child
    parent.exporter = None  # the list exporter itself holds them; drop it
    gc.collect()
    assert parent.child_runs == []
    assert sum(r() is not None for r in refs) == 0


def test_to_wire_shapes() -> None:
    root = RunTree("root", inputs={"q": 1}, metadata={"m": 1}, tags=["t"], project_name="p")
    child = root.create_child("c", reference_example_id=uuid.uuid4())
    child.end(outputs={"a": 1}, error="bad")
    post = child.to_wire("post")
    patch = child.to_wire("patch")
    assert post["id"] == str(child.id)
    assert post["trace_id"] == str(root.id)
    assert post["parent_run_id"] == str(root.id)
    assert post["session_name"] == "p"
    assert post["extra"] == {"metadata": {"m": 1}}
    assert post["inputs"] == {}
    assert post["outputs"] == {"a": 1} and post["error"] == "bad"
    assert post["end_time"].endswith("+00:00")
    assert "inputs" not in patch
    assert root.to_json()["inputs"] == {"q": 1}
    assert root.dict() == root.to_json()


def test_to_run_is_lossless() -> None:
    run = RunTree(
        "llm",
        "llm",
        inputs={"prompt": "hi"},
        metadata={"model": "m"},
        tags=["t"],
        attachments={"a.txt": ("text/plain", "hello"), "b": {"mime_type": "x/y", "data": b"1"}},
        extra={"invocation_params": {"temperature": 0}},
    )
    run.add_event({"name": "new_token", "time": run.start_time + timedelta(milliseconds=5)})
    run.end(
        outputs={
            "text": "yo",
            "usage_metadata": {"input_tokens": 3, "output_tokens": 4, "input_cost": 0.001},
        }
    )
    model = run.to_run()
    assert isinstance(model, Run)
    assert model.id == run.id and model.trace_id == run.trace_id
    assert model.start_time == run.start_time and model.end_time == run.end_time
    assert model.inputs == run.inputs and model.outputs == run.outputs
    assert model.metadata == {"model": "m"}
    assert model.extra is not None and model.extra["invocation_params"] == {"temperature": 0}
    assert model.tags == ["t"] and model.dotted_order == run.dotted_order
    assert model.session_name == "default"
    assert model.attachments["a.txt"] == {"mime_type": "text/plain", "data": b"hello"}
    assert model.status == "success"
    assert (model.prompt_tokens, model.completion_tokens, model.total_tokens) == (3, 4, 7)
    assert model.input_tokens == 3 and model.input_cost == Decimal("0.001")
    assert model.first_token_time == run.start_time + timedelta(milliseconds=5)
    assert model.latency == run.latency


def test_from_dotted_order_and_convert_to_dotted_order_format() -> None:
    run_id = uuid.UUID("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b")
    segment = convert_to_dotted_order_format(1_710_504_000_123, run_id, 7)
    assert segment == "20240315T120000123007Z0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
    assert convert_to_dotted_order_format(1_710_504_000_123.456, run_id).startswith(
        "20240315T120000123456Z"
    )
    parent = RunTree.from_dotted_order(segment)
    assert parent is not None and parent.id == run_id
    assert RunTree.from_dotted_order("nope") is None


def test_from_runnable_config_plain_dict() -> None:
    config = {"run_name": "chain", "tags": ["lc"], "metadata": {"version": "1.0"}}
    assert is_runnable_config_like(config)
    assert not is_runnable_config_like({"unrelated": 1})
    assert not is_runnable_config_like({"tags": "not-a-list"})
    root = RunTree.from_runnable_config(config, run_type="llm")
    assert root is not None and root.parent_run_id is None
    assert (root.name, root.run_type, root.tags, root.metadata) == (
        "chain",
        "llm",
        ["lc"],
        {"version": "1.0"},
    )
    parent = RunTree("outer")
    with tracing_context(parent=parent):
        child = RunTree.from_runnable_config(config, name="explicit")
    assert child is not None and child.parent_run_id == parent.id and child.name == "explicit"
    assert RunTree.from_runnable_config(config, tracing_enabled=False) is None


def test_run_collector_three_levels_with_example_id() -> None:
    example = "9b3d1c2e-8f4a-4b5c-9d6e-7f8a9b0c1d2e"
    collector = RunCollector(example_id=example)
    root = RunTree("root", exporter=collector)
    mid = root.create_child("mid")
    leaf = mid.create_child("leaf")
    for run in (leaf, mid, root):
        run.post()  # open: not collected yet
        run.end()
        run.patch()
    root.post()  # a repeat is kept once
    assert [r.name for r in collector.traced_runs] == ["leaf", "mid", "root"]
    assert all(r.reference_example_id == uuid.UUID(example) for r in collector.traced_runs)
    assert collector.one("leaf").parent_run_id == mid.id
    assert [r.name for r in collector.trace(root.id)] == ["root", "mid", "leaf"]
    assert collector.roots[0].id == root.id
    with pytest.raises(AssertionError, match="expected one run named 'x'"):
        collector.one("x")


def test_constructor_accepts_wire_aliases() -> None:
    run = RunTree(
        "r",
        session_name="s",
        extra={"metadata": {"a": 1}},
        client=ListExporter(),
        outputs="x",  # type: ignore[arg-type]
    )
    assert run.project_name == run.session_name == "s"
    assert run.metadata == {"a": 1} and "metadata" not in run.extra
    assert run.outputs == {"output": "x"}
    assert isinstance(run.exporter, ListExporter)


def test_attachments_must_be_bytes_or_text() -> None:
    with pytest.raises(TypeError, match="attachment 'bad'"):
        RunTree("r", attachments={"bad": ("x/y", 42)})


def _fields(run: RunTree) -> dict[str, object]:
    # The id texts the wire takes from the dotted order must say the ids.
    parent = run.parent_run_id
    wire = run.to_wire()
    assert (wire["id"], wire["trace_id"], wire.get("parent_run_id")) == (
        str(run.id),
        str(run.trace_id),
        parent and str(parent),
    )
    varying = {"id", "trace_id", "start_time_us", "dotted_order", "parent_run", "__weakref__"}
    varying.add("_ids_in_order")
    slots = [s for cls in type(run).__mro__ for s in getattr(cls, "__slots__", ())]
    assert len(slots) > 30, "the fields moved: this would compare nothing"
    return {s: getattr(run, s) for s in slots if s not in varying}


def test_fast_constructors_match_the_keyword_constructor() -> None:
    # new_run/create_child skip the keyword constructor for speed; they must build the same run.
    slow_root = RunTree("r", "tool", inputs={"x": 1}, metadata={"m": 1}, tags=["t"])
    fast_root = new_run("r", "tool", None, {"x": 1}, {"m": 1}, ["t"], None)
    assert _fields(fast_root) == _fields(slow_root)
    fast_child = slow_root.create_child("c", "llm", inputs={"y": 2}, metadata={"k": 2})
    slow_child = slow_root.create_child(
        "c", "llm", inputs={"y": 2}, metadata={"k": 2}, reference_example_id=None
    )
    fast, slow = _fields(fast_child), _fields(slow_child)
    assert fast.pop("execution_order") == slow.pop("execution_order") - 1  # made second
    assert fast.pop("child_execution_order") == slow.pop("child_execution_order") - 1
    assert fast == slow


def test_create_child_accepts_the_langsmith_run_id_keyword() -> None:
    run_id = uuid.uuid4()
    assert RunTree("r").create_child("c", run_id=run_id).id == run_id


def test_to_wire_ids_match_str_even_from_upper_case_or_changed_fields() -> None:
    upper = f"20240315T120000123456Z{str(uuid.uuid4()).upper()}"
    parent = RunTree.from_dotted_order(upper)
    assert parent is not None
    child = parent.create_child("c")
    wire = child.to_wire()
    assert wire["trace_id"] == str(child.trace_id) and wire["trace_id"].islower()
    assert wire["parent_run_id"] == str(parent.id)
    assert wire["id"] == str(child.id)
    child.id = uuid.uuid4()  # changed after construction: the order no longer says it
    assert child.to_wire()["id"] == str(child.id)
    assert datetime.fromisoformat(child.to_wire()["start_time"]) == child.start_time


def test_dotted_order_given_to_the_constructor_decides_the_ids() -> None:
    root = RunTree("root")
    child = root.create_child("child")
    copy = RunTree("copy", dotted_order=child.dotted_order)
    assert (copy.id, copy.trace_id, copy.parent_run_id) == (child.id, root.id, root.id)
    with pytest.raises(ValueError, match="do not match"):
        RunTree("bad", dotted_order=child.dotted_order, id=uuid.uuid4())


def test_create_child_refuses_keywords_it_sets_itself() -> None:
    # The keyword path must not let a caller's parent_run or execution_order silently win
    # over (or be overwritten by) the ones create_child sets.
    root = RunTree("root")
    with pytest.raises(TypeError):
        root.create_child("child", parent_run=RunTree("other"))
    with pytest.raises(TypeError):
        root.create_child("child", execution_order=7)
    with pytest.raises(TypeError):
        root.create_child("child", no_such_argument=1)

"""Wire compatibility with the real ``langsmith`` package, both directions."""

from __future__ import annotations

import uuid

import langsmith
from langsmith import run_trees as ls_run_trees

from tracestitch import RunTree, ids


def test_our_headers_continue_in_langsmith() -> None:
    root = RunTree("gateway", project_name="shop", metadata={"tenant": "acme"}, tags=["beta"])
    client_run = root.create_child("GET service-b")
    theirs = langsmith.RunTree.from_headers(client_run.to_headers())
    assert theirs is not None
    assert theirs.trace_id == root.trace_id
    assert theirs.id == client_run.id
    assert theirs.dotted_order == client_run.dotted_order
    assert theirs.session_name == "shop"
    assert theirs.extra["metadata"]["tenant"] == "acme"
    assert "beta" in theirs.tags
    their_child = theirs.create_child(name="service-b")
    assert their_child.parent_run_id == client_run.id
    assert their_child.dotted_order.startswith(client_run.dotted_order + ".")


def test_langsmith_headers_continue_in_ours() -> None:
    ls_root = langsmith.RunTree(
        name="js-or-py-caller",
        project_name="their-project",
        extra={"metadata": {"user": "u1"}},
        tags=["x"],
    )
    ls_child = ls_root.create_child(name="call")
    parent = RunTree.from_headers(ls_child.to_headers())
    assert parent is not None
    ours = parent.create_child("server")
    assert ours.trace_id == ls_root.trace_id
    assert ours.parent_run_id == ls_child.id
    assert ours.project_name == "their-project"
    assert ours.metadata["user"] == "u1"
    assert ours.dotted_order.startswith(ls_child.dotted_order + ".")


def test_dotted_orders_parse_both_ways() -> None:
    ours = RunTree("a").create_child("b").create_child("c")
    parsed = ls_run_trees._parse_dotted_order(ours.dotted_order)
    assert [u for _, u in parsed][-1] == ours.id
    assert parsed[-1][0].replace(tzinfo=None) == ours.start_time.replace(tzinfo=None)
    theirs = langsmith.RunTree(name="a").create_child(name="b")
    _, start, trace_id, run_id, parent = ids.parse_dotted_order(theirs.dotted_order)
    assert (trace_id, run_id, parent) == (theirs.trace_id, theirs.id, theirs.parent_run_id)
    assert start == ids.to_micros(theirs.start_time)


def test_js_sdk_style_order_with_execution_counter_parses() -> None:
    trace_id = uuid.uuid4()
    run_id = uuid.uuid4()
    # convertToDottedOrderFormat(epoch, id, executionOrder) puts the counter in the last
    # three microsecond digits: 2024-03-15T12:00:00.123Z with order 2 -> ...123002Z
    order = f"20240315T120000123001Z{trace_id}.20240315T120000125002Z{run_id}"
    parent = RunTree.from_dotted_order(order)
    assert parent is not None and parent.id == run_id and parent.trace_id == trace_id
    assert parent.create_child("next").parent_run_id == run_id


def test_our_uuid7_ids_are_accepted_by_langsmith() -> None:
    run = RunTree("r")
    theirs = langsmith.RunTree(name="x", id=run.id, dotted_order=run.dotted_order, trace_id=run.id)
    assert theirs.id == run.id


def test_from_runnable_config_joins_the_langchain_run_that_calls_it() -> None:
    from langchain_core.runnables import RunnableConfig, RunnableLambda
    from langchain_core.tracers.run_collector import RunCollectorCallbackHandler

    handler = RunCollectorCallbackHandler()
    made: list[RunTree] = []

    def step(x: int, config: RunnableConfig) -> int:
        run = RunTree.from_runnable_config(config, name="ours", run_type="tool")
        assert run is not None
        made.append(run)
        return x

    RunnableLambda(step).invoke(1, config={"callbacks": [handler], "tags": ["lc"]})
    (lc_run,) = handler.traced_runs
    (ours,) = made
    assert ours.parent_run_id == lc_run.id
    assert ours.trace_id == lc_run.trace_id
    assert ours.dotted_order.startswith(lc_run.dotted_order + ".")
    assert ours.name == "ours" and "lc" in ours.tags

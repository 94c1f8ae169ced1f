"""The LangSmith SDK's keyword constructor for a run: its arguments (:class:`RunArgs`) and
their normalization into what :class:`tracestitch.run_tree.RunTree` builds a run from.

Listed once, here: the constructor takes ``**kwargs: Unpack[RunArgs]``, so type checkers know
every keyword, and a new one is added in this file only. None of this is on the request path
(integrations and ``@traceable`` start runs through :func:`tracestitch.run_tree.new_run`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypedDict

from tracestitch import ids
from tracestitch.run_values import (
    TimeLike,
    as_dict,
    as_uuid,
    format_error,
    normalize_attachments,
    root_ids,
)

if TYPE_CHECKING:
    from tracestitch.exporter import Exporter
    from tracestitch.run_tree import RunTree

__all__ = ["RunArgs", "keyword_run"]


class RunArgs(TypedDict, total=False):
    """The keyword arguments of ``RunTree(name, run_type, **kwargs)``, as the LangSmith
    Python SDK names them (``session_name`` for ``project_name``, ``client`` for
    ``exporter``)."""

    id: uuid.UUID | str | None
    project_name: str | None
    session_name: str | None
    parent_run: RunTree | None
    parent_run_id: uuid.UUID | str | None
    child_runs: Sequence[RunTree] | None
    start_time: TimeLike | None
    end_time: TimeLike | None
    extra: Mapping[str, Any] | None
    metadata: Mapping[str, Any] | None
    tags: Sequence[str] | None
    error: str | BaseException | None
    inputs: Mapping[str, Any] | None
    outputs: Mapping[str, Any] | None
    reference_example_id: uuid.UUID | str | None
    serialized: dict[str, Any] | None
    tracing_enabled: bool | None
    on_end: Callable[[RunTree], None] | None
    execution_order: int
    child_execution_order: int | None
    dotted_order: str | None
    trace_id: uuid.UUID | str | None
    attachments: Mapping[str, Any] | None
    replicas: Sequence[Any] | None
    distributed_parent_id: uuid.UUID | str | None
    invocation_params: dict[str, Any] | None
    events: list[dict[str, Any]] | None
    exporter: Exporter | None
    client: Exporter | None
    address: str | None


_KNOWN = frozenset(RunArgs.__annotations__)

#: What :func:`keyword_run` gives the run's one construction path, in its order (parent,
#: id, start, inputs, metadata, tags, project, exporter, execution order, dotted order,
#: trace id, parent id); then the public fields to set on the new run, by name.
Made = tuple[tuple[Any, ...], dict[str, Any]]


def keyword_run(args: RunArgs, now_us: int) -> Made:
    """``args`` checked and normalized. ``now_us``: now on the parent's clock (a remote
    parent's may run ahead), the start of a run given none."""
    unknown = args.keys() - _KNOWN
    if unknown:
        raise TypeError(f"RunTree() got unexpected keyword arguments: {sorted(unknown)}")
    start_time = args.get("start_time")
    start = now_us if start_time is None else ids.to_micros(start_time)
    given_id = args.get("id")
    run_id = None if given_id is None else ids.run_id(given_id)
    order = trace = order_parent = None
    parent = args.get("parent_run")
    parent_run_id = args.get("parent_run_id")
    if parent is not None:
        if parent_run_id is not None and as_uuid(parent_run_id) != parent.id:
            raise ValueError("parent_run_id does not match parent_run.id")
    else:
        run_id, order, trace, order_parent = root_ids(
            run_id, args.get("trace_id"), args.get("dotted_order"), start
        )
    if run_id is None:
        run_id = ids.new_run_id()[0]
    extra = dict(args.get("extra") or {})
    metadata = dict(extra.pop("metadata", None) or {})
    metadata.update(args.get("metadata") or {})
    exporter = args.get("exporter")
    fill = (
        parent,
        run_id,
        start,
        args.get("inputs"),
        metadata,
        args.get("tags"),
        args.get("project_name") or args.get("session_name"),
        exporter if exporter is not None else args.get("client"),
        args.get("execution_order", 1),
        order,
        trace,
        order_parent,
    )
    return fill, _later(args, parent is None and parent_run_id is not None, extra)


def _later(args: RunArgs, own_parent_id: bool, extra: dict[str, Any]) -> dict[str, Any]:
    # The fields the construction path leaves at their defaults, when given.
    later: dict[str, Any] = {"extra": extra, "invocation_params": args.get("invocation_params")}
    parent_run_id = args.get("parent_run_id")
    if own_parent_id and parent_run_id is not None:
        later["parent_run_id"] = ids.run_id(parent_run_id)
    if args.get("child_execution_order") is not None:
        later["child_execution_order"] = args.get("child_execution_order")
    if args.get("tracing_enabled") is not None:
        later["tracing_enabled"] = args.get("tracing_enabled")
    later["serialized"] = args.get("serialized")
    later["on_end"] = args.get("on_end")
    if args.get("address"):
        later["address"] = args.get("address")
    if args.get("replicas"):
        later["replicas"] = list(args.get("replicas") or ())
    if args.get("events"):
        later["events"] = list(args.get("events") or ())
    end_time = args.get("end_time")
    if end_time is not None:
        later["end_time_us"] = ids.to_micros(end_time)
    error = args.get("error")
    if error is not None:
        later["error"] = format_error(error)
    outputs = args.get("outputs")
    if outputs is not None:
        later["outputs"] = as_dict(outputs, "output")
    example = args.get("reference_example_id")
    if example is not None:
        later["reference_example_id"] = as_uuid(example)
    distributed = args.get("distributed_parent_id")
    if distributed is not None:
        later["distributed_parent_id"] = as_uuid(distributed)
    if args.get("attachments"):
        later["attachments"] = normalize_attachments(args.get("attachments"))
    return later

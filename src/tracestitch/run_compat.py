"""The LangSmith SDK's module functions around ``RunTree``, and LangChain's run configs.

Kept out of :mod:`tracestitch.run_tree` (which re-exports the public ones): none of this is on
the request path. The functions that need the ``RunTree`` class take it as an argument, so this
module sits below ``run_tree`` and never imports it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tracestitch import ids
from tracestitch.run_context import get_current_run_tree
from tracestitch.run_values import TimeLike, as_uuid

if TYPE_CHECKING:
    from tracestitch.run_tree import RunTree

__all__ = [
    "config_run_args",
    "convert_to_dotted_order_format",
    "is_runnable_config_like",
    "parent_from_callbacks",
    "run_from_config",
]


def convert_to_dotted_order_format(
    epoch: TimeLike, run_id: uuid.UUID | str, execution_order: int | None = None
) -> str:
    """One dotted-order segment for a run started at ``epoch`` (ms, datetime or ISO text).

    With ``execution_order`` the last three microsecond digits carry it, as the JS SDK does.
    """
    micros = ids.to_micros(epoch)
    if execution_order is not None:
        micros = micros // 1000 * 1000 + min(max(int(execution_order), 0), 999)
    return ids.format_segment(micros, as_uuid(run_id))


_CONFIG_KEYS = frozenset(("callbacks", "tags", "metadata", "run_name", "configurable"))


def is_runnable_config_like(x: object) -> bool:
    """A LangChain ``RunnableConfig``-shaped mapping (callbacks/tags/metadata/run_name)."""
    if not isinstance(x, Mapping) or not x:
        return False
    if not any(key in x for key in _CONFIG_KEYS):
        return False
    tags = x.get("tags")
    metadata = x.get("metadata")
    return (tags is None or isinstance(tags, (list, tuple))) and (
        metadata is None or isinstance(metadata, Mapping)
    )


def config_run_args(config: Mapping[str, Any], props: dict[str, Any]) -> dict[str, Any]:
    """``RunTree.from_runnable_config``'s keyword arguments: name, run type, metadata and tags
    from the config, then ``props`` (which win)."""
    props = dict(props)
    name = props.pop("name", None) or config.get("run_name") or "Unnamed"
    run_type = props.pop("run_type", "chain")
    metadata = {**(config.get("metadata") or {}), **(props.pop("metadata", None) or {})}
    tags = [*(config.get("tags") or []), *(props.pop("tags", None) or [])]
    return {**props, "name": name, "run_type": run_type, "metadata": metadata, "tags": tags}


def run_from_config(
    run_tree: type[RunTree], config: Mapping[str, Any] | None, props: dict[str, Any]
) -> RunTree | None:
    """``RunTree.from_runnable_config``: the parent from the config's LangChain callbacks, else
    the current run, else none (a new root); ``None`` when ``props`` disable tracing."""
    config = config or {}
    if props.get("tracing_enabled") is False:
        return None
    parent = parent_from_callbacks(config.get("callbacks"), run_tree) or get_current_run_tree()
    args = config_run_args(config, props)
    return run_tree(**args) if parent is None else parent.create_child(**args)


def parent_from_callbacks(callbacks: Any, run_tree: type[RunTree]) -> RunTree | None:
    """The run a LangChain callback manager is inside, via its LangChain tracer's order map."""
    if callbacks is None or isinstance(callbacks, (list, tuple)):
        return None
    if isinstance(callbacks, run_tree):
        return callbacks
    try:
        from langchain_core.callbacks.base import (  # type: ignore[import-not-found,unused-ignore]
            BaseCallbackManager,
        )
    except ImportError:  # LangChain is optional: without it no callbacks can name a run
        return None
    if not isinstance(callbacks, BaseCallbackManager) or callbacks.parent_run_id is None:
        return None
    for handler in callbacks.handlers:
        order_map = getattr(handler, "order_map", None)
        if isinstance(order_map, dict) and callbacks.parent_run_id in order_map:
            _trace_id, dotted = order_map[callbacks.parent_run_id]
            parent = run_tree.from_dotted_order(dotted)
            if parent is not None:
                # The LangChain tracer exports that run itself; ours only link to it.
                return parent
    return None

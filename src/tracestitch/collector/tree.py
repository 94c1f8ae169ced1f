"""Shape stored runs for the query API: the ``Run`` schema view and the trace tree.

The trace is returned flat, in tree (pre-order) order, each run carrying ``depth`` and
``child_run_ids``: a nested JSON tree of a deep trace would hit JSON encoders' recursion limits,
and a flat list is what a waterfall draws anyway.
"""

from __future__ import annotations

import logging
from typing import Any

from .ingest import parse_time_us
from .store import run_service
from .usage import USAGE_FIELDS, extract_usage, sum_usage

__all__ = ["RUN_FIELDS", "build_trace", "run_view"]

logger = logging.getLogger(__name__)

#: Field names of LangSmith's ``Run`` (RunBase + Run), in its order.
RUN_FIELDS = (
    "id",
    "name",
    "start_time",
    "run_type",
    "end_time",
    "extra",
    "error",
    "serialized",
    "events",
    "inputs",
    "outputs",
    "reference_example_id",
    "parent_run_id",
    "tags",
    "attachments",
    "session_id",
    "child_run_ids",
    "child_runs",
    "feedback_stats",
    "app_path",
    "manifest_id",
    "status",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "prompt_token_details",
    "completion_token_details",
    "first_token_time",
    "total_cost",
    "prompt_cost",
    "completion_cost",
    "prompt_cost_details",
    "completion_cost_details",
    "parent_run_ids",
    "trace_id",
    "dotted_order",
    "in_dataset",
)


def _us(value: Any) -> int | None:
    try:
        return parse_time_us(value) if value is not None else None
    except (ValueError, OverflowError):
        return None


def _parent_ids(dotted_order: Any) -> list[str] | None:
    if not isinstance(dotted_order, str) or not dotted_order:
        return None
    # Every segment but the last names an ancestor, root first.
    return [segment[22:] for segment in dotted_order.split(".")[:-1]]


def run_view(run: dict[str, Any]) -> dict[str, Any]:
    """A merged wire run as a LangSmith ``Run`` dict plus the viewer's extras.

    Extras: ``service``, ``start_us``/``end_us``/``duration_ms`` (epoch microseconds; the browser's
    Date only has milliseconds), ``partial`` (only a patch has arrived), ``url``/``app_path``.
    """
    out: dict[str, Any] = dict.fromkeys(RUN_FIELDS)
    for key, value in run.items():
        if not key.startswith("_"):
            out[key] = value
    out.update(extract_usage(run))
    out["inputs"] = run.get("inputs") if isinstance(run.get("inputs"), dict) else {}
    out["extra"] = run.get("extra") if isinstance(run.get("extra"), dict) else {}
    out["attachments"] = run.get("attachments") if isinstance(run.get("attachments"), dict) else {}
    start_us, end_us = _us(run.get("start_time")), _us(run.get("end_time"))
    out["status"] = (
        "error" if run.get("error") else ("success" if end_us is not None else "pending")
    )
    out["parent_run_ids"] = _parent_ids(run.get("dotted_order"))
    out["service"] = run_service(run)
    out["start_us"], out["end_us"] = start_us, end_us
    duration = end_us - start_us if start_us is not None and end_us is not None else None
    out["duration_ms"] = duration / 1000 if duration is not None else None
    out["partial"] = not run.get("_has_post", True)
    path = f"/traces/{out['trace_id']}?run={out['id']}" if out.get("trace_id") else None
    out["app_path"] = path
    out["url"] = path
    return out


def build_trace(
    trace_id: str, runs: list[dict[str, Any]], summary: dict[str, Any] | None
) -> dict[str, Any]:
    """The ``GET /api/traces/{id}`` document: summary, root ids and every run in tree order.

    A run whose parent is not in the trace is a root flagged ``orphan``; a run that starts
    before its parent (clock skew between machines) keeps its place and gets ``skew_us``, the
    microseconds by which it precedes the parent.
    """
    views = [run_view(run) for run in runs]
    by_id = {view["id"]: view for view in views}
    children: dict[str, list[str]] = {view["id"]: [] for view in views}
    roots: list[str] = []
    for view in views:
        parent = view.get("parent_run_id")
        view["orphan"] = bool(parent) and parent not in by_id
        view["skew_us"] = None
        if parent and parent in by_id and parent != view["id"]:
            children[parent].append(view["id"])
            p_start, c_start = by_id[parent]["start_us"], view["start_us"]
            if p_start is not None and c_start is not None and c_start < p_start:
                view["skew_us"] = p_start - c_start
        else:
            roots.append(view["id"])
    ordered: list[dict[str, Any]] = []
    seen: set[str] = set()

    def walk(root: str) -> None:
        # Iterative: a hostile or very deep trace must not hit the recursion limit.
        stack = [(root, 0)]
        while stack:
            run_id, depth = stack.pop()
            if run_id in seen:
                continue
            seen.add(run_id)
            view = by_id[run_id]
            view["depth"] = depth
            view["child_run_ids"] = children[run_id]
            ordered.append(view)
            stack.extend((child, depth + 1) for child in reversed(children[run_id]))

    for root in roots:
        walk(root)
    # Runs in a parent cycle are reachable from no root: show them as orphans, not drop them.
    for view in views:
        if view["id"] not in seen:
            view["orphan"] = True
            roots.append(view["id"])
            walk(view["id"])
    usage = sum_usage([{k: v[k] for k in USAGE_FIELDS} for v in views])
    services = sorted({v["service"] for v in views if v["service"]})
    first_tokens = [(_us(v["first_token_time"]), v["first_token_time"]) for v in views]
    first_tokens = [pair for pair in first_tokens if pair[0] is not None]
    return {
        "trace_id": trace_id,
        "summary": {
            **(summary or {}),
            **usage,
            "services": services,
            "run_count": len(views),
            "orphan_count": sum(1 for v in views if v["orphan"]),
            "skewed_count": sum(1 for v in views if v["skew_us"]),
            "first_token_time": min(first_tokens)[1] if first_tokens else None,
        },
        "root_run_ids": roots,
        "runs": ordered,
    }

"""Shape stored runs for the query API: the ``Run`` schema view and the trace tree.

The trace is returned flat, in tree (pre-order) order, each run carrying ``depth`` and
``child_run_ids``: a nested JSON tree of a deep trace would hit JSON encoders' recursion limits,
and a flat list is what a waterfall draws anyway.
"""

from __future__ import annotations

import logging
from typing import Any

from tracestitch import ids
from tracestitch.schemas import Run, Usage, usage_from_wire

from .runs import run_service, run_status, time_us
from .usage import run_usage, trace_usage

__all__ = ["RUN_FIELDS", "build_trace", "feedback_stats", "run_view", "schema_view"]

logger = logging.getLogger(__name__)

#: Field names of the core ``Run`` model (LangSmith's RunBase + Run, with session_name, url).
RUN_FIELDS = tuple(Run.model_fields)


def _parent_ids(dotted_order: Any) -> list[str] | None:
    if not isinstance(dotted_order, str) or not dotted_order:
        return None
    # Every segment but the last names an ancestor, root first.
    return ids.order_ids(dotted_order)[:-1]


def feedback_stats(feedback: list[dict[str, Any]]) -> dict[str, Any] | None:
    """LangSmith's ``feedback_stats`` of a run: per key, the count, the mean score and how
    often each (short, scalar) value was given."""
    stats: dict[str, dict[str, Any]] = {}
    scores: dict[str, list[float]] = {}
    for item in feedback:
        key = str(item.get("key"))
        entry = stats.setdefault(key, {"n": 0, "avg": None, "values": {}})
        entry["n"] += 1
        score = item.get("score")
        if isinstance(score, (int, float)):
            scores.setdefault(key, []).append(float(score))
        value = item.get("value")
        if isinstance(value, (str, int, float, bool)) and len(str(value)) <= 100:
            entry["values"][str(value)] = entry["values"].get(str(value), 0) + 1
    for key, values in scores.items():
        stats[key]["avg"] = sum(values) / len(values)
    return stats or None


def _otel_parent_span(view: dict[str, Any]) -> str | None:
    extra = view.get("extra")
    otel = extra.get("otel") if isinstance(extra, dict) else None
    parent = otel.get("parent_span_id") if isinstance(otel, dict) else None
    return parent if isinstance(parent, str) else None


def _w3c_ancestor(view: dict[str, Any]) -> str | None:
    ancestor = view["extra"].get("w3c_ancestor")
    return ancestor if isinstance(ancestor, str) else None


def _parent_is_a_span(view: dict[str, Any], parent: str) -> bool:
    """Whether ``parent`` is the stand-in a service made for a W3C parent span (an OTel span):
    ``ids.uuid_from_w3c`` keeps the trace id's high 64 bits, which no run of the trace but its
    root shares."""
    trace_id = view.get("trace_id")
    return isinstance(trace_id, str) and parent[:18] == trace_id[:18] and parent != trace_id


def run_view(run: dict[str, Any], usage: Usage | None = None) -> dict[str, Any]:
    """A merged wire run as a LangSmith ``Run`` dict plus the viewer's extras.

    Extras: ``service``, ``start_us``/``end_us``/``duration_ms`` (epoch microseconds; the browser's
    Date only has milliseconds), ``partial`` (only a patch has arrived), ``url``/``app_path``,
    ``span_id`` (what OTLP spans and ``traceparent`` call it), ``feedback`` (its documents).
    ``usage`` is the run's :func:`~tracestitch.schemas.usage_from_wire`, when already computed.
    """
    out: dict[str, Any] = dict.fromkeys(RUN_FIELDS)
    for key, value in run.items():
        if not key.startswith("_"):
            out[key] = value
    out.update(run_usage(run, usage))
    out["inputs"] = run.get("inputs") if isinstance(run.get("inputs"), dict) else {}
    out["extra"] = run.get("extra") if isinstance(run.get("extra"), dict) else {}
    out["attachments"] = run.get("attachments") if isinstance(run.get("attachments"), dict) else {}
    start_us, end_us = time_us(run.get("start_time")), time_us(run.get("end_time"))
    out["status"] = run_status(run, end_us)
    out["parent_run_ids"] = _parent_ids(run.get("dotted_order"))
    out["service"] = run_service(run)
    out["start_us"], out["end_us"] = start_us, end_us
    duration = end_us - start_us if start_us is not None and end_us is not None else None
    out["duration_ms"] = duration / 1000 if duration is not None else None
    out["partial"] = not run.get("_has_post", True)
    out["span_id"] = run.get("_span_id")
    feedback = run.get("_feedback") or []
    out["feedback"] = feedback
    out["feedback_stats"] = feedback_stats(feedback)
    path = f"/traces/{out['trace_id']}?run={out['id']}" if out.get("trace_id") else None
    out["app_path"] = path
    out["url"] = path
    return out


def schema_view(view: dict[str, Any]) -> dict[str, Any]:
    """Pass a run view through the core :class:`tracestitch.schemas.Run` model.

    The model checks the shape we promise; our extra keys (``service``, ``url``...) ride along.
    A run the model rejects (e.g. only its patch has arrived) is returned as is.
    """
    try:
        checked = Run.model_validate(view).model_dump(mode="json")
    except Exception as exc:  # pydantic.ValidationError; the view is still useful
        logger.debug("run %s does not fit the Run schema: %s", view.get("id"), exc)
        return view
    # Our values win (floats stay floats); the model contributes any field we did not set.
    return {**checked, **view}


def build_trace(
    trace_id: str, runs: list[dict[str, Any]], summary: dict[str, Any] | None
) -> dict[str, Any]:
    """The ``GET /api/traces/{id}`` document: summary, root ids and every run in tree order.

    A run whose parent is not in the trace is a root flagged ``orphan`` (an OTLP span whose
    parent span is a run of the trace is linked to it, whichever arrived first), unless that
    parent is a span of a service outside tracestitch (OpenTelemetry): then it is flagged
    ``parent_outside``, and placed under the tracestitch run that called that service when the
    ``traceparent`` chain names it (``extra.w3c_ancestor``), else shown as a root. A run that
    starts before its parent (clock skew between machines) keeps its place and gets
    ``skew_us``, the microseconds by which it precedes the parent.
    """
    usages = [usage_from_wire(run) for run in runs]
    views = [run_view(run, usage) for run, usage in zip(runs, usages, strict=True)]
    by_id = {view["id"]: view for view in views}
    by_span = {view["span_id"]: view["id"] for view in views if view.get("span_id")}
    children: dict[str, list[str]] = {view["id"]: [] for view in views}
    roots: list[str] = []
    for view in views:
        parent = view.get("parent_run_id")
        span_parent = _otel_parent_span(view)
        if span_parent and parent not in by_id and span_parent in by_span:
            # An OTLP span that arrived before the run it is the child of: link it by span id.
            parent = view["parent_run_id"] = by_span[span_parent]
        view["parent_outside"] = False
        if parent and parent not in by_id and _parent_is_a_span(view, parent):
            view["parent_outside"] = True
            ancestor = _w3c_ancestor(view)
            # Attached only when certain: the ancestor is a run of this very trace.
            if ancestor is not None and ancestor in by_span:
                parent = by_span[ancestor]
        view["orphan"] = bool(parent) and parent not in by_id and not view["parent_outside"]
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
    services = sorted({v["service"] for v in views if v["service"]})
    return {
        "trace_id": trace_id,
        "summary": {
            **(summary or {}),
            **trace_usage(usages),
            "services": services,
            "run_count": len(views),
            "orphan_count": sum(1 for v in views if v["orphan"]),
            "parent_outside_count": sum(1 for v in views if v["parent_outside"]),
            "skewed_count": sum(1 for v in views if v["skew_us"]),
        },
        "root_run_ids": roots,
        "runs": ordered,
    }

"""The query API behind the viewer and ``tracestitch traces``: ``/api/traces`` (filtered list),
``/api/traces/{id}`` (the trace tree), ``/api/runs/{id}`` (a ``Run``) and attachment downloads.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .ingest import parse_time_us
from .query import SORTS, STATUSES, TraceFilter, TraceRefError, resolve_trace_ref
from .services import ServiceFilter
from .trace_store import TraceStore
from .transfer import export_document
from .tree import build_trace, run_view, schema_view
from .web import Guard, HTTPError, json_response

__all__ = ["query_routes", "trace_filter"]

T = TypeVar("T")


# Epoch seconds of 0001-01-01 and of 9999-12-31T23:59:59Z: the times a datetime can hold, and
# well inside SQLite's 64-bit integers once in microseconds.
_MIN_EPOCH_S = -62_135_596_800
_MAX_EPOCH_S = 253_402_300_799


def _q_time(request: Request, name: str) -> int | None:
    value = request.query_params.get(name)
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            return parse_time_us(value)
        except (ValueError, OverflowError):
            raise HTTPError(422, f"{name}: expected ISO-8601 or epoch seconds") from None
    if not math.isfinite(seconds):
        raise HTTPError(422, f"{name}: expected ISO-8601 or epoch seconds")
    if not _MIN_EPOCH_S <= seconds <= _MAX_EPOCH_S:
        raise HTTPError(
            422,
            f"{name}: {value[:40]!r} is out of range: epoch seconds must be between"
            f" {_MIN_EPOCH_S} and {_MAX_EPOCH_S} (years 1 to 9999)",
        )
    return int(seconds * 1_000_000)


def _q_num(
    request: Request, name: str, default: float | None, lo: float, hi: float
) -> float | None:
    value = request.query_params.get(name)
    if not value:
        return default
    try:
        number = float(value)
    except ValueError:
        raise HTTPError(422, f"{name}: expected a number") from None
    if not lo <= number <= hi:
        raise HTTPError(422, f"{name}: must be between {lo:g} and {hi:g}")
    return number


def _uuid(value: str, what: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise HTTPError(422, f"{what}: {value[:60]!r} is not a UUID") from None


def trace_filter(request: Request) -> TraceFilter:
    """The :class:`TraceFilter` of a ``GET /api/traces`` query string; 422 on a bad parameter."""
    params = request.query_params
    status = params.get("status") or None
    if status is not None and status not in STATUSES:
        raise HTTPError(422, f"status: expected one of {', '.join(STATUSES)}")
    min_ms = _q_num(request, "min_duration_ms", None, 0, 1e12)
    metadata = None
    if params.get("metadata"):
        key, sep, value = params["metadata"].partition("=")
        if not sep or not key.strip():
            raise HTTPError(422, "metadata: expected key=value")
        metadata = (key.strip(), value.strip())
    sort = params.get("sort") or "start"
    if sort not in SORTS:
        raise HTTPError(422, f"sort: expected one of {', '.join(SORTS)}")
    order = params.get("order") or "desc"
    if order not in ("asc", "desc"):
        raise HTTPError(422, "order: expected asc or desc")
    return TraceFilter(
        tag=params.get("tag") or None,
        metadata=metadata,
        run_type=params.get("run_type") or None,
        route=params.get("route") or None,
        sort=sort,
        descending=order == "desc",
        project=params.get("project") or None,
        service=params.get("service") or None,
        name=params.get("name") or None,
        status=status,
        start_gte_us=_q_time(request, "start_gte"),
        start_lte_us=_q_time(request, "start_lte"),
        min_duration_us=int(min_ms * 1000) if min_ms is not None else None,
        text=params.get("q") or None,
        limit=int(_q_num(request, "limit", 50, 1, 500) or 50),
        offset=int(_q_num(request, "offset", 0, 0, 1e12) or 0),
    )


async def _load_or_404(load: Callable[[], T | None], missing: str) -> T:
    found = await run_in_threadpool(load)
    if found is None:
        raise HTTPError(404, missing)
    return found


def query_routes(store: TraceStore, guard: Guard) -> list[Route]:
    """The query API routes over ``store``."""

    async def list_traces(request: Request) -> Response:
        return json_response(await run_in_threadpool(store.list_traces, trace_filter(request)))

    def load_trace(ref: str) -> dict[str, Any] | None:
        # A whole id, or an unambiguous prefix of 8+ characters (as the CLI takes them).
        try:
            trace_id = resolve_trace_ref(ref, store.trace_ids_with_prefix)
        except TraceRefError as exc:
            raise HTTPError(422, f"trace_id: {exc}") from None
        if trace_id is None:
            return None
        runs = store.trace_runs(trace_id)
        if not runs:
            return None
        doc = build_trace(trace_id, runs, store.trace_summary(trace_id))
        # The collector's clock: the viewer measures open runs against it, not the browser's.
        doc["now_us"] = time.time_ns() // 1000
        return doc

    async def get_trace(request: Request) -> Response:
        ref = request.path_params["trace_id"]
        doc = await _load_or_404(lambda: load_trace(ref), f"no trace {ref[:60]} in this collector")
        return json_response(doc)

    async def export_trace(request: Request) -> Response:
        # What `tracestitch export` writes, for the viewer's "download trace".
        ref = request.path_params["trace_id"]

        def load() -> dict[str, Any] | None:
            doc = load_trace(ref)
            return export_document(doc, store.get_attachment) if doc is not None else None

        return json_response(await _load_or_404(load, f"no trace {ref[:60]} in this collector"))

    async def get_services(request: Request) -> Response:
        since = _q_time(request, "start_gte")
        until = _q_time(request, "start_lte")
        now_us = time.time_ns() // 1000
        flt = ServiceFilter(
            since_us=since, until_us=until, project=request.query_params.get("project") or None
        )
        stats = await run_in_threadpool(store.service_stats, flt)
        # Rates need a range: from start_gte to start_lte (or now); none over "all time".
        seconds = ((until or now_us) - since) / 1e6 if since is not None else None
        for route in stats["routes"]:
            route["error_rate"] = route["errors"] / route["requests"]
            route["rate_per_s"] = route["requests"] / seconds if seconds else None
        return json_response({"start_us": since, "end_us": until or now_us, **stats})

    async def get_run(request: Request) -> Response:
        run_id = _uuid(request.path_params["run_id"], "run_id")
        children = request.query_params.get("include_children", "").lower() in ("1", "true", "yes")

        def load() -> dict[str, Any] | None:
            run = store.get_run(run_id)
            if run is None:
                return None
            view = schema_view(run_view(run))
            if children:
                view["child_runs"] = [schema_view(run_view(c)) for c in store.child_runs(run_id)]
                view["child_run_ids"] = [c["id"] for c in view["child_runs"]]
            return view

        return json_response(await _load_or_404(load, f"no run {run_id} in this collector"))

    async def get_attachment(request: Request) -> Response:
        run_id = _uuid(request.path_params["run_id"], "run_id")
        name = request.path_params["name"]
        content_type, data = await _load_or_404(
            lambda: store.get_attachment(run_id, name), "no such attachment"
        )
        # Served as a download, never rendered: its content type is whatever a client claimed.
        return Response(
            data,
            media_type="application/octet-stream",
            headers={"content-disposition": "attachment", "x-original-content-type": content_type},
        )

    return [
        Route("/api/traces", guard(list_traces), methods=["GET"]),
        Route("/api/traces/{trace_id}", guard(get_trace), methods=["GET"]),
        Route("/api/traces/{trace_id}/export", guard(export_trace), methods=["GET"]),
        Route("/api/services", guard(get_services), methods=["GET"]),
        Route("/api/runs/{run_id}", guard(get_run), methods=["GET"]),
        # `path`: an attachment's name may contain "/" (sent raw or as %2F; the server decodes).
        # Signed: the LangSmith SDK downloads an attachment's URL with no credentials.
        Route(
            "/api/runs/{run_id}/attachments/{name:path}",
            guard(get_attachment, signed=True),
            methods=["GET"],
        ),
    ]

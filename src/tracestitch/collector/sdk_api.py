"""The LangSmith SDK's read side, as far as ``Client`` needs it against this collector.

``GET /runs/{id}`` (``read_run``), ``POST /runs/query`` (``list_runs``), ``/sessions``
(``read_project``, ``list_projects``, ``create_project``) and ``/feedback`` (``create_feedback``,
``list_feedback``, ``read_feedback``). Runs are served in LangSmith's ``Run`` shape, with the
project's stable id as ``session_id``, attachments as signed ``s3_urls`` (the SDK downloads
them without credentials) and ``feedback_stats``. Each document a route returns sits at most
two levels down (``{"runs": [run]}``), inside the levels :data:`~.ingest.MAX_RUN_DEPTH` keeps
free, so whatever was stored can be served.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .feedback import FeedbackFilter, validate_feedback
from .ingest import IngestError, format_time_us
from .projects import TENANT_ID, ProjectExists, ProjectFilter, project_id
from .run_query import UnsupportedQuery, parse_run_query
from .trace_store import TraceStore
from .tree import run_view, schema_view
from .web import BodyReader, Guard, HTTPError, Unsupported, json_response

__all__ = ["sdk_routes"]

T = TypeVar("T")
_PAGE = 100
# GET /sessions parameters that need datasets or experiments, which this collector has not.
_DATASET_PARAMS = ("reference_dataset", "dataset_version")


def _uuid(value: str, what: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise HTTPError(422, f"{what}: {value[:60]!r} is not a UUID") from None


def _int(request: Request, name: str, default: int, hi: int) -> int:
    value = request.query_params.get(name)
    if value is None or value == "":
        return default
    if not value.isdigit():
        raise HTTPError(422, f"{name}: expected a non-negative integer")
    return min(int(value), hi)


def _flag(request: Request, name: str) -> bool | None:
    value = request.query_params.get(name)
    if value is None:
        return None
    lowered = value.lower()
    if lowered not in ("true", "false", "1", "0"):
        raise HTTPError(422, f"{name}: expected true or false")
    return lowered in ("true", "1")


class _Views:
    """Turns stored runs and projects into the documents the SDK reads."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard

    def run(self, stored: dict[str, Any]) -> dict[str, Any]:
        view = schema_view(run_view(stored))
        view["session_id"] = project_id(stored.get("session_name") or "default")
        view["dotted_order"] = view.get("dotted_order") or ""
        attachments = view.pop("attachments", None) or {}
        # The SDK turns s3_urls into its attachments (and passes `attachments` itself, so the
        # key must not be in the document too).
        view["s3_urls"] = {
            f"attachment.{name}": {
                "presigned_url": self.guard.sign(info["presigned_url"]),
                "mime_type": info.get("content_type"),
            }
            for name, info in attachments.items()
            if isinstance(info, dict) and "presigned_url" in info
        }
        view.pop("child_runs", None)
        return view

    @staticmethod
    def project(row: dict[str, Any]) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "id": row["id"],
            "name": row["name"],
            "description": row["description"],
            "extra": row["extra"],
            "start_time": format_time_us(row["created_us"]),
            "end_time": None,
            "tenant_id": TENANT_ID,
            "reference_dataset_id": None,
        }
        if "run_count" in row:
            last = row["last_run_start_time_us"]
            doc.update(
                run_count=row["run_count"],
                total_tokens=row["total_tokens"],
                total_cost=row["total_cost"],
                error_rate=row["error_rate"],
                last_run_start_time=format_time_us(last) if last is not None else None,
            )
        return doc


async def _found(load: Callable[[], T | None], missing: str) -> T:
    found = await run_in_threadpool(load)
    if found is None:
        raise HTTPError(404, missing)
    return found


def sdk_routes(store: TraceStore, guard: Guard, bodies: BodyReader) -> list[Route]:
    """The LangSmith SDK read routes (and ``/sessions``, ``/feedback`` writes) over ``store``."""
    views = _Views(guard)

    async def read_run(request: Request) -> Response:
        run_id = _uuid(request.path_params["run_id"], "run_id")

        def load() -> dict[str, Any] | None:
            runs = store.runs_by_ids([run_id])
            return views.run(runs[0]) if runs else None

        return json_response(await _found(load, f"no run {run_id} in this collector"))

    async def query_runs(request: Request) -> Response:
        try:
            query = parse_run_query(await bodies.json(request))
        except UnsupportedQuery as exc:
            raise Unsupported(str(exc)) from None

        def load() -> dict[str, Any]:
            runs, cursor = store.query_runs(query)
            return {"runs": [views.run(run) for run in runs], "cursors": {"next": cursor}}

        return json_response(await run_in_threadpool(load))

    def project_filter(request: Request) -> ProjectFilter | None:
        """None when the filters can match nothing here (dataset-bound projects)."""
        params = request.query_params
        for name in _DATASET_PARAMS:
            if params.get(name):
                if name == "reference_dataset":
                    return None  # no project here is bound to a dataset
                raise Unsupported(f"the tracestitch collector has no datasets ({name})")
        if _flag(request, "reference_free") is False:
            return None
        metadata = None
        if params.get("metadata"):
            try:
                metadata = json.loads(params["metadata"])
            except ValueError:
                raise HTTPError(422, "metadata: expected a JSON object") from None
            if not isinstance(metadata, dict):
                raise HTTPError(422, "metadata: expected a JSON object")
        ids = params.getlist("id")
        return ProjectFilter(
            ids=[_uuid(i, "id") for i in ids] if ids else None,
            name=params.get("name") or None,
            name_contains=params.get("name_contains") or None,
            metadata=metadata,
            include_stats=bool(_flag(request, "include_stats")),
            limit=max(1, _int(request, "limit", _PAGE, _PAGE)),
            offset=_int(request, "offset", 0, 10**12),
        )

    async def list_projects(request: Request) -> Response:
        flt = project_filter(request)
        if flt is None:
            return json_response([])
        rows = await run_in_threadpool(store.find_projects, flt)
        return json_response([views.project(row) for row in rows])

    async def read_project(request: Request) -> Response:
        pid = _uuid(request.path_params["project_id"], "project_id")
        flt = ProjectFilter(ids=[pid], include_stats=bool(_flag(request, "include_stats")))

        def load() -> dict[str, Any] | None:
            rows = store.find_projects(flt)
            return views.project(rows[0]) if rows else None

        return json_response(await _found(load, f"no project {pid} in this collector"))

    async def create_project(request: Request) -> Response:
        body = await bodies.json(request)
        if not isinstance(body, dict):
            raise IngestError("expected a JSON object describing the project")
        name = body.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 1000:
            raise IngestError("name: expected a non-empty string of at most 1000 characters")
        description = body.get("description")
        if description is not None and not isinstance(description, str):
            raise IngestError("description: expected a string")
        extra = body.get("extra")
        if extra is not None and not isinstance(extra, dict):
            raise IngestError("extra: expected an object")
        if body.get("reference_dataset_id") is not None:
            raise Unsupported("the tracestitch collector has no datasets (reference_dataset_id)")
        upsert = bool(_flag(request, "upsert"))
        try:
            row = await run_in_threadpool(
                lambda: store.create_project(
                    name, description=description, extra=extra, upsert=upsert
                )
            )
        except ProjectExists as exc:
            raise HTTPError(409, str(exc)) from None
        return json_response(views.project(row))

    async def create_feedback(request: Request) -> Response:
        item = validate_feedback(await bodies.json(request))
        await run_in_threadpool(store.add_feedback, item)
        return json_response(item.doc)

    async def list_feedback(request: Request) -> Response:
        params = request.query_params
        runs = params.getlist("run")
        flt = FeedbackFilter(
            run_ids=[_uuid(r, "run") for r in runs] or None,
            keys=params.getlist("key") or None,
            sources=params.getlist("source") or None,
            limit=max(1, _int(request, "limit", _PAGE, _PAGE)),
            offset=_int(request, "offset", 0, 10**12),
        )
        return json_response(await run_in_threadpool(store.find_feedback, flt))

    async def read_feedback(request: Request) -> Response:
        fid = _uuid(request.path_params["feedback_id"], "feedback_id")
        return json_response(
            await _found(lambda: store.get_feedback(fid), f"no feedback {fid} in this collector")
        )

    return [
        Route("/runs/query", guard(query_runs), methods=["POST"]),
        Route("/runs/{run_id}", guard(read_run), methods=["GET"]),
        Route("/sessions", guard(list_projects), methods=["GET"]),
        Route("/sessions", guard(create_project), methods=["POST"]),
        Route("/sessions/{project_id}", guard(read_project), methods=["GET"]),
        Route("/feedback", guard(create_feedback), methods=["POST"]),
        Route("/feedback", guard(list_feedback), methods=["GET"]),
        Route("/feedback/{feedback_id}", guard(read_feedback), methods=["GET"]),
    ]

"""The LangSmith-compatible ingest routes: ``/info``, ``/runs``, ``/runs/batch``,
``/runs/multipart`` and ``PATCH /runs/{run_id}``.

Body parsing and the SQLite transaction run in Starlette's thread pool, so a large batch never
stalls the event loop, and a request is answered 2xx only once its transaction has committed.
Every body byte a request holds, as received and decompressed, is drawn from the
:class:`~.bodies.BodyBudget` shared by all requests until the request is answered.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tracestitch.version import __version__

from .bodies import zstd_available
from .feedback import FeedbackOp
from .ingest import IngestError, RunOp, validate_op
from .multipart import Attachment, parse_multipart
from .trace_store import TraceStore
from .web import BodyReader, Guard, json_response

__all__ = ["batch_ops", "ingest_routes"]


def batch_ops(doc: Any) -> list[RunOp]:
    """The ops of a ``/runs/batch`` body: ``{"post": [...], "patch": [...]}``."""
    if not isinstance(doc, dict):
        raise IngestError('expected a JSON object {"post": [...], "patch": [...]}')
    unknown = set(doc) - {"post", "patch"}
    if unknown:
        raise IngestError(f"unknown batch keys {sorted(unknown)}; expected post, patch")
    ops: list[RunOp] = []
    for kind in ("post", "patch"):
        items = doc.get(kind) or []
        if not isinstance(items, list):
            raise IngestError(f"{kind}: expected a list of runs")
        ops += [validate_op(kind, item, f"{kind}[{i}]") for i, item in enumerate(items)]
    return ops


def ingest_routes(
    store: TraceStore, guard: Guard, *, bodies: BodyReader, stats: Counter[str]
) -> list[Route]:
    """The ingest routes over ``store``; each acknowledged request is counted in ``stats`` (by
    endpoint, and by endpoint and content encoding: lets tests prove which path an SDK took).
    Bodies are read by ``bodies``, within its budget."""
    budget = bodies.budget

    async def ingest(
        request: Request,
        ops: list[RunOp],
        attachments: list[Attachment] | None = None,
        feedback: list[FeedbackOp] | None = None,
    ) -> Response:
        count = await run_in_threadpool(store.ingest, ops, attachments or [], feedback or [])
        route = request.url.path.rsplit("/", 1)[-1] if request.method == "POST" else "patch"
        stats[route] += 1
        stats[f"{route}:{request.headers.get('content-encoding', 'identity')}"] += 1
        return json_response({"accepted": count})

    async def ingest_json(request: Request, to_ops: Callable[[Any], list[RunOp]]) -> Response:
        with budget.lease() as lease:  # held until the ops are committed
            body = await bodies.read(request, lease)

            def parse() -> list[RunOp]:
                try:
                    doc = orjson.loads(bodies.decoded(request, body, lease))
                except orjson.JSONDecodeError as exc:
                    raise IngestError(f"body is not valid JSON: {exc}") from None
                return to_ops(doc)

            return await ingest(request, await run_in_threadpool(parse))

    async def info(request: Request) -> Response:
        return json_response(
            {
                "version": __version__,
                "license_expiration_time": None,
                "batch_ingest_config": {
                    "use_multipart_endpoint": True,
                    "size_limit": 100,
                    "size_limit_bytes": bodies.max_body_bytes,
                    "scale_up_qsize_trigger": 1000,
                    "scale_up_nthreads_limit": 16,
                    "scale_down_nempty_trigger": 4,
                },
                # What the SDKs read here: compression they may use, and which query API
                # this is (the v1 routes, which LangSmith calls ClickHouse-backed; the
                # SmithDB-only v2 API is not implemented).
                "instance_flags": {
                    "zstd_compression_enabled": zstd_available(),
                    "gzip_body_enabled": True,
                    "ch_query_enabled": True,
                    "sdb_query_enabled": False,
                    "dataset_examples_multipart_enabled": False,
                    "examples_multipart_enabled": False,
                },
            }
        )

    async def post_run(request: Request) -> Response:
        return await ingest_json(request, lambda doc: [validate_op("post", doc, "run")])

    async def patch_run(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        return await ingest_json(
            request, lambda doc: [validate_op("patch", doc, "run", run_id=run_id)]
        )

    async def batch(request: Request) -> Response:
        return await ingest_json(request, batch_ops)

    async def multipart(request: Request) -> Response:
        with budget.lease() as lease:
            body = await bodies.read(request, lease)
            ctype = request.headers.get("content-type", "")
            form = await run_in_threadpool(
                lambda: parse_multipart(bodies.decoded(request, body, lease), ctype)
            )
            return await ingest(request, form.ops, form.attachments, form.feedback)

    return [
        Route("/info", guard(info, auth=False), methods=["GET"]),
        Route("/runs", guard(post_run), methods=["POST"]),
        Route("/runs/batch", guard(batch), methods=["POST"]),
        Route("/runs/multipart", guard(multipart), methods=["POST"]),
        Route("/runs/{run_id}", guard(patch_run), methods=["PATCH"]),
    ]

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

from .bodies import BodyBudget, BodyLease, decode_body, zstd_available
from .ingest import IngestError, RunOp, validate_op
from .multipart import Attachment, parse_multipart
from .store import Store
from .web import Guard, HTTPError, json_response

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
    store: Store,
    guard: Guard,
    *,
    max_body_bytes: int,
    decompressed_limit: int,
    budget: BodyBudget,
    stats: Counter[str],
) -> list[Route]:
    """The ingest routes over ``store``; each acknowledged request is counted in ``stats`` (by
    endpoint, and by endpoint and content encoding: lets tests prove which path an SDK took).
    Bodies are held within ``budget``."""

    async def read_body(request: Request, lease: BodyLease) -> bytearray:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
            raise HTTPError(413, f"request body over the {max_body_bytes}-byte limit")
        body = bytearray()  # grown in place: no second copy of the body to join chunks
        async for chunk in request.stream():
            if len(body) + len(chunk) > max_body_bytes:
                raise HTTPError(413, f"request body over the {max_body_bytes}-byte limit")
            lease.take(len(chunk))
            body += chunk
        return body

    def decoded(request: Request, body: bytearray, lease: BodyLease) -> bytes | bytearray:
        encoding = request.headers.get("content-encoding")
        text = decode_body(body, encoding, decompressed_limit, lease)
        # Parsing copies the text once more (orjson parses a padded copy; the multipart parser
        # copies each part out): that is held too, so charge it before it happens.
        lease.take(len(text), wait=True)
        return text

    async def ingest(
        request: Request, ops: list[RunOp], attachments: list[Attachment] | None = None
    ) -> Response:
        count = await run_in_threadpool(store.ingest, ops, attachments or [])
        route = request.url.path.rsplit("/", 1)[-1] if request.method == "POST" else "patch"
        stats[route] += 1
        stats[f"{route}:{request.headers.get('content-encoding', 'identity')}"] += 1
        return json_response({"accepted": count})

    async def ingest_json(request: Request, to_ops: Callable[[Any], list[RunOp]]) -> Response:
        with budget.lease() as lease:  # held until the ops are committed
            body = await read_body(request, lease)

            def parse() -> list[RunOp]:
                try:
                    doc = orjson.loads(decoded(request, body, lease))
                except orjson.JSONDecodeError as exc:
                    raise IngestError(f"body is not valid JSON: {exc}") from None
                return to_ops(doc)

            return await ingest(request, await run_in_threadpool(parse))

    async def info(request: Request) -> Response:
        return json_response(
            {
                "version": "0.0.0-tracestitch",
                "license_expiration_time": None,
                "batch_ingest_config": {
                    "use_multipart_endpoint": True,
                    "size_limit": 100,
                    "size_limit_bytes": max_body_bytes,
                    "scale_up_qsize_trigger": 1000,
                    "scale_up_nthreads_limit": 16,
                    "scale_down_nempty_trigger": 4,
                },
                "instance_flags": {"zstd_compression_enabled": zstd_available()},
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
            body = await read_body(request, lease)
            ctype = request.headers.get("content-type", "")
            form = await run_in_threadpool(
                lambda: parse_multipart(decoded(request, body, lease), ctype)
            )
            return await ingest(request, form.ops, form.attachments)

    return [
        Route("/info", guard(info, auth=False), methods=["GET"]),
        Route("/runs", guard(post_run), methods=["POST"]),
        Route("/runs/batch", guard(batch), methods=["POST"]),
        Route("/runs/multipart", guard(multipart), methods=["POST"]),
        Route("/runs/{run_id}", guard(patch_run), methods=["PATCH"]),
    ]

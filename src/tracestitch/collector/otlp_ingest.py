"""OTLP/HTTP trace ingest: ``POST /v1/traces`` and ``POST /otel/v1/traces`` (where the LangSmith
SDKs' OTel mode sends, ``{endpoint}/otel``), protobuf or JSON, identity or gzip (or zstd).

Spans become runs (:mod:`.otlp_spans`), validated as a whole before anything is written and
committed before the 200, like every other ingest route. A malformed request is answered 400
naming the problem, which OTLP exporters do not retry; a body the budget cannot hold right now
is answered 503 with Retry-After, which they do.
"""

from __future__ import annotations

from collections import Counter

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .bodies import UnsupportedEncoding
from .ingest import IngestError
from .otlp_spans import decode_json, decode_protobuf, protobuf_available, spans_to_ops
from .trace_store import TraceStore
from .web import BodyReader, Guard, HTTPError

__all__ = ["otlp_routes"]

_PROTOBUF_TYPES = ("application/x-protobuf", "application/protobuf")


def otlp_routes(
    store: TraceStore, guard: Guard, bodies: BodyReader, stats: Counter[str]
) -> list[Route]:
    """The OTLP/HTTP trace routes over ``store``; requests and spans are counted in ``stats``."""

    async def traces(request: Request) -> Response:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype in _PROTOBUF_TYPES:
            if not protobuf_available():
                raise UnsupportedEncoding(
                    "OTLP protobuf needs opentelemetry-proto: pip install 'tracestitch[otlp]',"
                    " or send OTLP/JSON"
                )
            decode = decode_protobuf
        elif ctype == "application/json":
            decode = decode_json
        else:
            raise UnsupportedEncoding(
                f"OTLP/HTTP takes application/x-protobuf or application/json, not {ctype!r}"
            )
        project = request.headers.get("langsmith-project") or None
        with bodies.budget.lease() as lease:  # held until the runs are committed
            body = await bodies.read(request, lease)

            def ingest() -> int:
                spans = decode(bodies.decoded(request, body, lease))
                ops = spans_to_ops(spans, store.span_run_ids, project)
                store.ingest(ops)
                return len(ops)

            try:
                count = await run_in_threadpool(ingest)
            except IngestError as exc:
                # OTLP's status for data the receiver cannot use; exporters drop, not retry.
                raise HTTPError(400, str(exc)) from None
        stats["otlp"] += 1
        stats[f"otlp:{request.headers.get('content-encoding', 'identity')}"] += 1
        stats["otlp:spans"] += count
        if decode is decode_protobuf:
            # An empty ExportTraceServiceResponse (full success) is zero bytes of protobuf.
            return Response(b"", media_type="application/x-protobuf")
        return Response(b"{}", media_type="application/json")

    handler = guard(traces)
    return [
        Route("/v1/traces", handler, methods=["POST"]),
        Route("/otel/v1/traces", handler, methods=["POST"]),
    ]

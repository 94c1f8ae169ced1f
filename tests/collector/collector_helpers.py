"""Builders of LangSmith wire runs (and multipart ingest bodies) for the collector tests, and
the collector app under a real uvicorn server in a thread."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import uvicorn

API_KEY = "test-key-123"


class ServerThread:
    """uvicorn.Server running in a thread; ``url`` is valid once :meth:`start` returns."""

    def __init__(self, app: Any) -> None:
        self.app = app
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")  # type: ignore[arg-type]
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = ""

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        # Waiting on uvicorn's own `started` flag, not guessing a delay.
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.005)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


BASE = datetime(2025, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
BOUNDARY = "testboundary42"
MP_HEADERS = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}


def ts(offset_ms: float) -> datetime:
    return BASE + timedelta(milliseconds=offset_ms)


def segment(start: datetime, run_id: str) -> str:
    return start.strftime("%Y%m%dT%H%M%S%fZ") + run_id


def make_run(
    name: str,
    *,
    parent: dict[str, Any] | None = None,
    start_ms: float = 0,
    end_ms: float | None = 10,
    service: str | None = None,
    run_type: str = "chain",
    project: str = "demo",
    run_id: str | None = None,
    **extra_fields: Any,
) -> dict[str, Any]:
    """A complete post dict (as a LangSmith SDK sends it) with a consistent dotted order."""
    rid = run_id or str(uuid.uuid4())
    start = ts(start_ms)
    # The dotted order's timestamp is clamped to the parent's, as the SDKs do.
    order_start = max(start, ts(parent["_start_ms"])) if parent else start
    run: dict[str, Any] = {
        "id": rid,
        "trace_id": parent["trace_id"] if parent else rid,
        "parent_run_id": parent["id"] if parent else None,
        "dotted_order": (parent["dotted_order"] + "." if parent else "")
        + segment(order_start, rid),
        "name": name,
        "run_type": run_type,
        "start_time": start.isoformat(),
        "end_time": ts(end_ms).isoformat() if end_ms is not None else None,
        "inputs": {"q": name},
        "outputs": {"a": name.upper()} if end_ms is not None else None,
        "session_name": project,
        "extra": {"metadata": {"service": service}} if service else {"metadata": {}},
        "tags": [],
        "_start_ms": start_ms,
    }
    run.update(extra_fields)
    return run


def wire(run: dict[str, Any]) -> dict[str, Any]:
    """The run without test-only keys."""
    return {k: v for k, v in run.items() if not k.startswith("_")}


def three_service_trace() -> list[dict[str, Any]]:
    """gateway -> orders -> (db query, llm call) + an error in payments, with hostile inputs."""
    root = make_run("GET /checkout", start_ms=0, end_ms=120, service="gateway", run_type="chain")
    orders = make_run("POST /orders", parent=root, start_ms=10, end_ms=90, service="orders")
    query = make_run(
        "select order",
        parent=orders,
        start_ms=15,
        end_ms=30,
        service="orders",
        run_type="retriever",
    )
    llm = make_run(
        "summarise",
        parent=orders,
        start_ms=35,
        end_ms=85,
        service="orders",
        run_type="llm",
        inputs={"prompt": "<script>window.__pwned = 1</script><img src=x onerror=alert(1)>"},
        outputs={
            "text": "ok",
            "usage_metadata": {
                "input_tokens": 120,
                "output_tokens": 30,
                "total_tokens": 150,
                "input_cost": 0.0012,
                "output_cost": 0.0006,
            },
        },
        events=[{"name": "new_token", "time": ts(40).isoformat(), "kwargs": {"token": "o"}}],
    )
    pay = make_run(
        "POST /payments",
        parent=root,
        start_ms=95,
        end_ms=115,
        service="payments",
        error='Traceback (most recent call last):\n  File "pay.py", line 3\n'
        "ValueError: card declined",
    )
    return [root, orders, query, llm, pay]


def multipart_body(parts: list[tuple[str, bytes, str]]) -> bytes:
    """A ``/runs/multipart`` body of ``(part name, data, content type)`` parts."""
    out = b""
    for name, data, ctype in parts:
        out += (
            (
                f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n'
                f"Content-Type: {ctype}\r\n\r\n"
            ).encode()
            + data
            + b"\r\n"
        )
    return out + f"--{BOUNDARY}--\r\n".encode()


def multipart_with_attachment(run: dict[str, Any], name: str, data: bytes, ctype: str) -> bytes:
    """A ``/runs/multipart`` body posting ``run`` with one attachment."""
    main = orjson.dumps(wire(run))
    return multipart_body(
        [
            (f"post.{run['id']}", main, "application/json"),
            (f"attachment.{run['id']}.{name}", data, f"{ctype}; length={len(data)}"),
        ]
    )


def realistic_trace() -> list[dict[str, Any]]:
    """A chat request as a real deployment records it: a gateway (FastAPI) retrieves context
    from a search service, asks an LLM, then fails pricing two hops down (the docs' picture)."""
    chat = make_run(
        "POST /chat",
        start_ms=0,
        end_ms=2400,
        service="gateway",
        inputs={"message": "Can I return a keyboard I bought three weeks ago?"},
        outputs={"status_code": 502},
        error="HTTP 502 Bad Gateway",
        extra={
            "metadata": {"service": "gateway", "http.route": "/chat", "user": "u-1842"},
            "route": "/chat",
            "span_kind": "server",
        },
        tags=["beta"],
    )
    retrieve = make_run(
        "retrieve context",
        parent=chat,
        start_ms=20,
        end_ms=300,
        service="gateway",
        run_type="retriever",
    )
    search_call = make_run(
        "GET 127.0.0.1:35341/search?q=refund+policy&limit=5",
        parent=retrieve,
        start_ms=30,
        end_ms=280,
        service="gateway",
        run_type="tool",
    )
    search = make_run("GET /search", parent=search_call, start_ms=40, end_ms=270, service="search")
    embed = make_run(
        "embed query",
        parent=search,
        start_ms=45,
        end_ms=90,
        service="search",
        run_type="embedding",
    )
    vectors = make_run(
        "vector search",
        parent=search,
        start_ms=95,
        end_ms=260,
        service="search",
        run_type="retriever",
        outputs={"documents": [{"page_content": "Returns are accepted within 30 days."}]},
    )
    llm = make_run(
        "ChatOpenAI",
        parent=chat,
        start_ms=310,
        end_ms=1900,
        service="gateway",
        run_type="llm",
        inputs={
            "messages": [
                {"role": "system", "content": "You answer questions about our shop's policies."},
                {"role": "user", "content": "Can I return a keyboard I bought three weeks ago?"},
            ]
        },
        outputs={
            "choices": [
                {
                    "message": {
                        "role": "assistant",
                        "content": "Yes: returns are accepted within 30 days of delivery.",
                    }
                }
            ],
            "usage_metadata": {
                "input_tokens": 412,
                "output_tokens": 38,
                "total_tokens": 450,
                "input_cost": 0.0000618,
                "output_cost": 0.0000228,
            },
        },
        extra={
            "metadata": {
                "service": "gateway",
                "ls_model_name": "gpt-4o-mini",
                "ls_provider": "openai",
            },
            "invocation_params": {"model": "gpt-4o-mini", "temperature": 0.2},
        },
    )
    price_call = make_run(
        "GET 127.0.0.1:35342/prices/kb-101",
        parent=chat,
        start_ms=1910,
        end_ms=2390,
        service="gateway",
        run_type="tool",
        error="HTTP 502 Bad Gateway",
    )
    price = make_run(
        "GET /prices/{sku}",
        parent=price_call,
        start_ms=1920,
        end_ms=2380,
        service="pricing",
        error='Traceback (most recent call last):\n  File "pricing/app.py", line 41, in price\n'
        "    book = legacy.fetch(sku, timeout=0.4)\n"
        "TimeoutError: legacy price book did not answer",
    )
    return [chat, retrieve, search_call, search, embed, vectors, llm, price_call, price]

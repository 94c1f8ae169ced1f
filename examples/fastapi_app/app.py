"""The gateway: a FastAPI service that calls the inventory and pricing services.

Run it (with a collector from ``tracestitch serve`` on :8700)::

    TRACESTITCH_ENDPOINT=http://127.0.0.1:8700 python app.py 8000
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel

from tracestitch import traceable
from tracestitch.clients.httpx import AsyncTracingTransport
from tracestitch.export.config import install_from_env
from tracestitch.middleware.asgi import TracingMiddleware

INVENTORY_URL = os.environ.get("INVENTORY_URL", "http://127.0.0.1:8001")
PRICING_URL = os.environ.get("PRICING_URL", "http://127.0.0.1:8002")

# Exporter settings come from the environment: TRACESTITCH_ENDPOINT (or LANGSMITH_ENDPOINT),
# TRACESTITCH_API_KEY, TRACESTITCH_PROJECT, ...
if not install_from_env():
    print("TRACESTITCH_ENDPOINT is not set: runs will not be exported", file=sys.stderr)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # One client for the app's life, so connections to the other services are reused. Its
    # transport records each call as a run and sends the trace headers along.
    async with httpx.AsyncClient(transport=AsyncTracingTransport(), timeout=10) as client:
        app.state.http = client
        yield


app = FastAPI(title="gateway", lifespan=lifespan)
# x-trace-id on every response: a caller (or a support ticket) can name the trace.
app.add_middleware(
    TracingMiddleware, service="gateway", exclude=["/health"], trace_id_header="x-trace-id"
)


class Order(BaseModel):
    sku: str
    quantity: int = 1


@traceable
def plan(action: str, sku: str) -> list[str]:
    """Which services a request needs (a stand-in for real routing or validation logic)."""
    if action == "order":
        return ["inventory"]
    return ["inventory", "pricing"]


async def get_json(client: httpx.AsyncClient, url: str, **kwargs: Any) -> Any:
    response = await client.request(kwargs.pop("method", "GET"), url, **kwargs)
    if response.status_code >= 400:
        # A client error passes through; a failing service makes this hop a 502 (Bad Gateway).
        status = 502 if response.status_code >= 500 else response.status_code
        raise HTTPException(status, f"{url} answered {response.status_code}: {response.text}")
    return response.json()


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/products/{sku}")
async def product(sku: str, request: Request) -> dict[str, Any]:
    """Fan-out: stock and price are fetched concurrently."""
    plan("view", sku)
    client: httpx.AsyncClient = request.app.state.http
    stock, price = await asyncio.gather(
        get_json(client, f"{INVENTORY_URL}/stock/{sku}"),
        get_json(client, f"{PRICING_URL}/prices/{sku}"),
    )
    return {"sku": sku, **stock, **price}


@app.post("/orders", status_code=201)
async def place_order(order: Order, request: Request) -> dict[str, Any]:
    """A chain: the inventory service reserves the items and asks pricing for the total."""
    plan("order", order.sku)
    client: httpx.AsyncClient = request.app.state.http
    reservation = await get_json(
        client, f"{INVENTORY_URL}/reservations", method="POST", json=order.model_dump()
    )
    return {"order": "confirmed", **reservation}


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ.get("PORT", "8000"))
    uvicorn.run(app, host=os.environ.get("HOST", "127.0.0.1"), port=port, log_level="warning")

"""The inventory service: an aiohttp server that asks the pricing service for prices.

Run it (with a collector from ``tracestitch serve`` on :8700)::

    TRACESTITCH_ENDPOINT=http://127.0.0.1:8700 python app.py 8001
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from tracestitch import trace
from tracestitch.clients.aiohttp import trace_config
from tracestitch.export.config import install_from_env
from tracestitch.middleware.aiohttp import flush_exporter, tracing_middleware

PRICING_URL = os.environ.get("PRICING_URL", "http://127.0.0.1:8002")
STOCK = {"kb-101": 12, "ms-202": 40, "ms-legacy-7": 3}

# Exporter settings come from the environment: TRACESTITCH_ENDPOINT (or LANGSMITH_ENDPOINT),
# TRACESTITCH_API_KEY, TRACESTITCH_PROJECT, ...
if not install_from_env():
    print("TRACESTITCH_ENDPOINT is not set: runs will not be exported", file=sys.stderr)

http_session = web.AppKey("http_session", aiohttp.ClientSession)


async def client_session(app: web.Application) -> AsyncIterator[None]:
    # trace_config() records each outgoing call as a run and sends the trace headers along.
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(trace_configs=[trace_config()], timeout=timeout) as session:
        app[http_session] = session
        yield


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def stock(request: web.Request) -> web.Response:
    sku = request.match_info["sku"]
    if sku not in STOCK:
        raise web.HTTPNotFound(text=f"unknown sku {sku!r}")
    return web.json_response({"in_stock": STOCK[sku]})


async def reserve(request: web.Request) -> web.Response:
    order = await request.json()
    sku, quantity = str(order["sku"]), int(order.get("quantity", 1))
    with trace("check_stock", inputs={"sku": sku, "quantity": quantity}):
        if STOCK.get(sku, 0) < quantity:
            raise web.HTTPConflict(text=f"only {STOCK.get(sku, 0)} of {sku!r} left")
    session = request.app[http_session]
    async with session.get(f"{PRICING_URL}/prices/{sku}", params={"quantity": quantity}) as resp:
        if resp.status != 200:
            # Pricing failed: say so (502 Bad Gateway); the trace shows why.
            raise web.HTTPBadGateway(text=f"pricing answered {resp.status}")
        price = await resp.json()
    STOCK[sku] -= quantity
    return web.json_response({"sku": sku, "quantity": quantity, **price}, status=201)


def create_app() -> web.Application:
    app = web.Application(middlewares=[tracing_middleware(service="inventory")])
    app.cleanup_ctx.append(client_session)
    # Runs still queued when the server stops are sent before the process exits.
    app.on_cleanup.append(flush_exporter)
    app.add_routes(
        [
            web.get("/health", health),
            web.get("/stock/{sku}", stock),
            web.post("/reservations", reserve),
        ]
    )
    return app


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ.get("PORT", "8001"))
    web.run_app(create_app(), host=os.environ.get("HOST", "127.0.0.1"), port=port, print=None)

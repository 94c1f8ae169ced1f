"""The pricing service: a Flask app behind tracestitch's WSGI middleware.

Prices for "legacy" SKUs come from an old price book that is down: those requests fail with a
500, and the error shows up in the trace of every service the request went through.

Run it (with a collector from ``tracestitch serve`` on :8700)::

    TRACESTITCH_ENDPOINT=http://127.0.0.1:8700 python app.py 8002
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from flask import Flask, abort, request

from tracestitch import traceable
from tracestitch.export.config import install_from_env
from tracestitch.middleware.wsgi import TracingMiddleware

PRICES = {"kb-101": 49.0, "ms-202": 19.5}
LEGACY_SKUS = {"ms-legacy-7"}

# Exporter settings come from the environment: TRACESTITCH_ENDPOINT (or LANGSMITH_ENDPOINT),
# TRACESTITCH_API_KEY, TRACESTITCH_PROJECT, ...
if not install_from_env():
    print("TRACESTITCH_ENDPOINT is not set: runs will not be exported", file=sys.stderr)

app = Flask("pricing")
app.wsgi_app = TracingMiddleware(app.wsgi_app, service="pricing", exclude=["/health"])


@traceable(run_type="tool")
def legacy_price_book(sku: str) -> float:
    raise TimeoutError(f"legacy price book did not answer for {sku!r}")


@traceable
def quote(sku: str, quantity: int) -> dict[str, Any]:
    unit = legacy_price_book(sku) if sku in LEGACY_SKUS else PRICES[sku]
    discount = 0.1 if quantity >= 10 else 0.0
    return {"unit_price": unit, "total": round(unit * quantity * (1 - discount), 2)}


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/prices/<sku>")
def price(sku: str) -> dict[str, Any]:
    if sku not in PRICES and sku not in LEGACY_SKUS:
        abort(404, f"no price for {sku!r}")
    return quote(sku, request.args.get("quantity", 1, type=int))


if __name__ == "__main__":
    # The development server dies on SIGTERM without running exit handlers; exiting normally
    # lets the exporter send what it still holds.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    port = int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ.get("PORT", "8002"))
    app.run(host=os.environ.get("HOST", "127.0.0.1"), port=port)

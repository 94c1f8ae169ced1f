"""Outgoing HTTP and WebSocket client hooks: each call (or connection) made inside a traced
request becomes a client run and carries the trace to the next service (only where the
``propagate_to`` policy allows).

Import the adapter for your client explicitly; this package imports no client library::

    from tracestitch.clients.httpx import TracingTransport  # pip install 'tracestitch[httpx]'
    from tracestitch.clients.aiohttp import trace_config  # pip install 'tracestitch[aiohttp]'
    from tracestitch.clients.requests import TracingAdapter  # pip install 'tracestitch[requests]'
    from tracestitch.clients.websockets import TracingClientConnection  # [websockets]
"""

from __future__ import annotations

from tracestitch.clients._common import ClientOptions, PropagationPolicy

__all__ = ["ClientOptions", "PropagationPolicy"]

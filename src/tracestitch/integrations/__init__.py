"""Integrations for channels other than HTTP, where one adapter covers both ends (the side
that sends and the side that receives), so it cannot live under ``middleware/`` (servers) or
``clients/`` (callers) alone.

Import the adapter for your framework explicitly; this package imports none::

    from tracestitch.integrations.celery import instrument_celery  # tracestitch[celery]
    from tracestitch.integrations.grpc import client_interceptor  # tracestitch[grpc]

Each is a thin adapter on :mod:`tracestitch.instrument` and imports exactly one framework.
"""

from __future__ import annotations

__all__: list[str] = []

"""The ``grpc.aio`` interceptors (exported by :mod:`tracestitch.integrations.grpc`).

grpc.aio files an interceptor under the first call shape it implements, so the client side is
four objects, one per shape, sharing the same two steps: start a client run and put its trace
in the metadata; finish the run when the call is done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from typing import Any

import grpc
import grpc.aio

from tracestitch import RunTree
from tracestitch.instrument import report
from tracestitch.integrations._grpc_common import (
    ServerSettings,
    begin_client,
    finish_client,
    with_trace,
)
from tracestitch.integrations._grpc_server import wrap_handler

__all__ = ["aio_client_interceptors", "aio_server_interceptor"]

# The finishing tasks still running: the event loop holds tasks only weakly.
_finishing: set[asyncio.Task[None]] = set()


def _traced(details: grpc.aio.ClientCallDetails, run: RunTree) -> grpc.aio.ClientCallDetails:
    try:
        return grpc.aio.ClientCallDetails(
            details.method,
            details.timeout,
            grpc.aio.Metadata(*with_trace(run, details.metadata)),
            details.credentials,
            details.wait_for_ready,
        )
    except Exception as exc:
        report("grpc.client", exc)
        return details


async def _finish(run: RunTree, call: Any) -> None:
    try:
        finish_client(run, await call.code(), await call.details())
    except Exception as exc:
        report("grpc.client", exc)


def _when_done(run: RunTree, call: Any) -> None:
    # The callback runs on the loop once the call has ended; code() and details() are
    # coroutines there (answered at once), so the run is finished by a short task.
    def done(_: Any) -> None:
        try:
            task = asyncio.get_running_loop().create_task(_finish(run, call))
            _finishing.add(task)
            task.add_done_callback(_finishing.discard)
        except Exception as exc:
            report("grpc.client", exc)

    call.add_done_callback(done)


async def _intercept(
    continuation: Callable[[Any, Any], Any], details: grpc.aio.ClientCallDetails, request: Any
) -> Any:
    run = begin_client(details.method)
    if run is None:
        return await continuation(details, request)
    try:
        call = await continuation(_traced(details, run), request)
    except BaseException as exc:
        code = exc.code() if isinstance(exc, grpc.aio.AioRpcError) else grpc.StatusCode.UNKNOWN
        finish_client(run, code, str(exc))
        raise
    _when_done(run, call)
    return call


class _UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        return await _intercept(continuation, client_call_details, request)


class _UnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        return await _intercept(continuation, client_call_details, request)


class _StreamUnary(grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return await _intercept(continuation, client_call_details, request_iterator)


class _StreamStream(grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return await _intercept(continuation, client_call_details, request_iterator)


def aio_client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """The client interceptors for ``grpc.aio.insecure_channel(target, interceptors=...)``
    (or ``secure_channel``): one per call shape."""
    return [_UnaryUnary(), _UnaryStream(), _StreamUnary(), _StreamStream()]


class _AioServerInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, settings: ServerSettings) -> None:
        self._settings = settings

    async def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: Any
    ) -> Any:
        handler = await continuation(handler_call_details)
        return wrap_handler(handler, handler_call_details, self._settings)


def aio_server_interceptor(
    *, trust: bool | Collection[str] = True, service: str | None = None
) -> grpc.aio.ServerInterceptor:
    """The server interceptor for ``grpc.aio.server(interceptors=[...])``; ``trust`` and
    ``service`` as for :func:`tracestitch.integrations.grpc.server_interceptor`."""
    return _AioServerInterceptor(ServerSettings.make(trust, service))

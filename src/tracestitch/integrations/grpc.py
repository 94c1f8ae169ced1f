"""gRPC: client and server interceptors, for ``grpc`` and ``grpc.aio``, unary and streaming.

One line wires each end in (gRPC's own interceptor API; nothing is patched)::

    from tracestitch.integrations.grpc import client_interceptor, server_interceptor

    channel = grpc.intercept_channel(grpc.insecure_channel(target), client_interceptor())
    server = grpc.server(executor, interceptors=[server_interceptor()])

    # grpc.aio
    channel = grpc.aio.insecure_channel(target, interceptors=aio_client_interceptors())
    server = grpc.aio.server(interceptors=[aio_server_interceptor()])

- **Client:** a call made inside a run is a client run (``"pkg.Service/Method"``, kind
  ``client``), and its trace goes to the server in the call's metadata (``langsmith-trace``,
  ``baggage``, ``traceparent``; the caller's other metadata kept). A call made outside any
  run goes out untraced. Every status but ``OK`` makes the run an error
  (``outputs["grpc_status"]`` names it). Wire it only on channels to services of your own:
  the channel you intercept is where the trace goes.
- **Server:** one run per call (kind ``server``), a child of the caller's run read from the
  metadata (a new trace when it carries none, or none to be believed: hostile metadata gets
  the same as none). It is current while the handler runs, and while a streaming response's
  iterator produces each message, so nested calls join it. The status the handler set (or
  ``UNKNOWN`` when it raised) is recorded; ``UNKNOWN``, ``DEADLINE_EXCEEDED``,
  ``UNIMPLEMENTED``, ``INTERNAL``, ``UNAVAILABLE`` and ``DATA_LOSS`` make it an error (the
  server's fault, as HTTP 5xx), with the handler's exception and traceback when it raised.

Nothing here can fail an RPC: an internal error is reported and the call runs untraced.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Collection
from typing import Any

try:
    import grpc
except ImportError as exc:  # pragma: no cover - exercised by the missing-extra test
    raise ImportError(
        "tracestitch.integrations.grpc needs grpcio: pip install 'tracestitch[grpc]'"
    ) from exc

from tracestitch import RunTree
from tracestitch.instrument import report
from tracestitch.integrations._grpc_aio import aio_client_interceptors, aio_server_interceptor
from tracestitch.integrations._grpc_common import (
    ServerSettings,
    begin_client,
    finish_client,
    with_trace,
)
from tracestitch.integrations._grpc_server import wrap_handler

__all__ = [
    "aio_client_interceptors",
    "aio_server_interceptor",
    "client_interceptor",
    "server_interceptor",
]


class _CallDetails(
    namedtuple(
        "_CallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    """The caller's call details with the trace in the metadata (gRPC's documented way for
    an interceptor to change them)."""


def _traced(details: Any, run: RunTree) -> Any:
    try:
        return _CallDetails(
            details.method,
            details.timeout,
            with_trace(run, details.metadata),
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )
    except Exception as exc:
        report("grpc.client", exc)
        return details


class _ClientInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    __slots__ = ()

    def _intercept(
        self, continuation: Callable[[Any, Any], Any], details: Any, request: Any
    ) -> Any:
        run = begin_client(details.method)
        if run is None:
            return continuation(details, request)
        try:
            call = continuation(_traced(details, run), request)
        except BaseException as exc:
            finish_client(run, getattr(exc, "code", lambda: grpc.StatusCode.UNKNOWN)(), str(exc))
            raise
        # One hook for the four shapes: the call is also a future, done when the RPC ends
        # (at once for a blocking unary call; after the last message of a stream).
        call.add_done_callback(lambda done: _client_done(run, done))
        return call

    def intercept_unary_unary(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        return self._intercept(continuation, client_call_details, request)

    def intercept_unary_stream(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        return self._intercept(continuation, client_call_details, request)

    def intercept_stream_unary(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return self._intercept(continuation, client_call_details, request_iterator)

    def intercept_stream_stream(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return self._intercept(continuation, client_call_details, request_iterator)


def _client_done(run: RunTree, call: Any) -> None:
    try:
        finish_client(run, call.code(), call.details())
    except Exception as exc:
        report("grpc.client", exc)


def client_interceptor() -> grpc.UnaryUnaryClientInterceptor:
    """The client interceptor for ``grpc.intercept_channel`` (all four call shapes)."""
    return _ClientInterceptor()


class _ServerInterceptor(grpc.ServerInterceptor):
    __slots__ = ("_settings",)

    def __init__(self, settings: ServerSettings) -> None:
        self._settings = settings

    def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: Any
    ) -> Any:
        details = handler_call_details
        return wrap_handler(continuation(details), details, self._settings)


def server_interceptor(
    *, trust: bool | Collection[str] = True, service: str | None = None
) -> grpc.ServerInterceptor:
    """The server interceptor for ``grpc.server(interceptors=[...])``. ``trust``: what the
    caller's baggage may set here (metadata, tags, project; see
    :func:`tracestitch.propagation.extract`). ``service``: the name its runs record in
    ``metadata["service"]`` (default: :func:`tracestitch.instrument.service_name`), as the
    HTTP servers' do; the calls a handler makes inherit it."""
    return _ServerInterceptor(ServerSettings.make(trust, service))

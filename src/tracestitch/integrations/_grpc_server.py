"""The server side of the gRPC interceptors (``grpc`` and ``grpc.aio`` alike): a method's handler
wrapped so that each call is a run, current while the handler's code runs.

A handler's behaviour comes in four kinds, and the wrapper keeps the kind, since the server
decides how to call it by that: a plain function (``grpc``, or ``grpc.aio`` running sync
handlers in its thread pool), a generator function (a streamed response), a coroutine
function and an async generator function (``grpc.aio``).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc

from tracestitch import RunTree
from tracestitch.instrument import attach, detach, report
from tracestitch.integrations._grpc_common import ServerSettings, begin_server, finish_server

__all__ = ["wrap_handler"]

Start = Callable[[], "RunTree | None"]


def wrap_handler(handler: Any, details: Any, settings: ServerSettings) -> Any:
    """``handler`` (a ``grpc.RpcMethodHandler``, or ``None`` for a method the server does not
    have: gRPC answers ``UNIMPLEMENTED`` itself) with its behaviour traced; ``handler`` as it
    is if that fails."""
    if handler is None:
        return None
    try:
        return _wrap(handler, details, settings)
    except Exception as exc:
        report("grpc.server", exc)
        return handler


def _wrap(handler: Any, details: Any, settings: ServerSettings) -> Any:

    def start() -> RunTree | None:
        return begin_server(details.method, details.invocation_metadata, settings)

    if handler.request_streaming and handler.response_streaming:
        make, behavior = grpc.stream_stream_rpc_method_handler, handler.stream_stream
    elif handler.request_streaming:
        make, behavior = grpc.stream_unary_rpc_method_handler, handler.stream_unary
    elif handler.response_streaming:
        make, behavior = grpc.unary_stream_rpc_method_handler, handler.unary_stream
    else:
        make, behavior = grpc.unary_unary_rpc_method_handler, handler.unary_unary
    if inspect.isasyncgenfunction(behavior):
        wrapped = _async_streaming(behavior, start)
    elif inspect.iscoroutinefunction(behavior):
        wrapped = _async(behavior, start)
    elif handler.response_streaming:
        wrapped = _streaming(behavior, start)
    else:
        wrapped = _unary(behavior, start)
    return make(
        wrapped,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _unary(behavior: Callable[[Any, Any], Any], start: Start) -> Callable[[Any, Any], Any]:
    def traced(request: Any, context: Any) -> Any:
        run = start()
        if run is None:
            return behavior(request, context)
        token = attach(run)
        try:
            response = behavior(request, context)
        except BaseException as exc:
            _end(run, context, exc)
            raise
        finally:
            detach(token)
        _end(run, context)
        return response

    return traced


def _streaming(behavior: Callable[[Any, Any], Any], start: Start) -> Callable[[Any, Any], Any]:
    def traced(request: Any, context: Any) -> Iterator[Any]:
        run = start()
        if run is None:
            yield from behavior(request, context)
            return
        try:
            # Current while the handler's code runs (each step of its iterator), never while
            # gRPC holds a message between steps.
            token = attach(run)
            try:
                responses = iter(behavior(request, context))
            finally:
                detach(token)
            while True:
                token = attach(run)
                try:
                    message = next(responses)
                except StopIteration:
                    break
                finally:
                    detach(token)
                yield message
        except BaseException as exc:
            _end(run, context, exc)
            raise
        _end(run, context)

    return traced


def _async(behavior: Callable[[Any, Any], Any], start: Start) -> Callable[[Any, Any], Any]:
    # A coroutine: a unary response, or a stream written with ``await context.write()``.
    async def traced(request: Any, context: Any) -> Any:
        run = start()
        if run is None:
            return await behavior(request, context)
        token = attach(run)  # each call runs in a task of its own: its context is its own
        try:
            response = await behavior(request, context)
        except BaseException as exc:
            _end(run, context, exc)
            raise
        finally:
            detach(token)
        _end(run, context)
        return response

    return traced


def _async_streaming(
    behavior: Callable[[Any, Any], AsyncIterator[Any]], start: Start
) -> Callable[[Any, Any], AsyncIterator[Any]]:
    async def traced(request: Any, context: Any) -> AsyncIterator[Any]:
        run = start()
        if run is None:
            async for message in behavior(request, context):
                yield message
            return
        responses = behavior(request, context)
        try:
            while True:
                token = attach(run)
                try:
                    message = await responses.__anext__()
                except StopAsyncIteration:
                    break
                finally:
                    detach(token)
                yield message
        except BaseException as exc:
            _end(run, context, exc)
            raise
        _end(run, context)

    return traced


def _end(run: RunTree, context: Any, raised: BaseException | None = None) -> None:
    # The status the handler set on its context (code() and details() are plain calls in
    # grpc and grpc.aio alike).
    finish_server(run, context.code(), context.details(), raised)

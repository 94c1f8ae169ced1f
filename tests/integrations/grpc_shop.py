"""A small gRPC service with no generated code (raw bytes in and out), for the gRPC tests and
the server process of the cross-process test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import grpc.aio

from tracestitch import traceable
from tracestitch.integrations.grpc import client_interceptor

SERVICE = "demo.Shop"


@traceable
def lookup(item: bytes) -> bytes:
    return b"price:" + item


def price(request: bytes, context: Any) -> bytes:
    if request == b"missing":
        context.abort(grpc.StatusCode.NOT_FOUND, "no such item")
    if request == b"crash":
        raise ValueError("handler crashed")
    return lookup(request)


def watch(request: bytes, context: Any) -> Iterator[bytes]:
    for i in range(int(request)):
        yield lookup(str(i).encode())


def upload(requests: Iterator[bytes], context: Any) -> bytes:
    return str(sum(1 for _ in requests)).encode()


def chat(requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
    for message in requests:
        yield lookup(message)


def meta(request: bytes, context: Any) -> bytes:
    """The metadata the call arrived with, ``key=value`` lines (gRPC's own keys left out)."""
    pairs = [f"{k}={v}" for k, v in context.invocation_metadata() if not k.startswith(":")]
    return "\n".join(sorted(p for p in pairs if not p.startswith(("user-agent", "grpc-")))).encode()


async def aio_meta(request: bytes, context: Any) -> bytes:
    return meta(request, context)


def sync_handlers(checkout_target: list[str]) -> grpc.GenericRpcHandler:
    """The service; ``Checkout`` calls ``Price`` on ``checkout_target[0]`` (set once the port is
    known) over a traced channel: the nested call."""

    def checkout(request: bytes, context: Any) -> bytes:
        channel = grpc.intercept_channel(
            grpc.insecure_channel(checkout_target[0]), client_interceptor()
        )
        with channel:
            return b"paid " + channel.unary_unary(f"/{SERVICE}/Price")(request, timeout=10)

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Price": grpc.unary_unary_rpc_method_handler(price),
            "Meta": grpc.unary_unary_rpc_method_handler(meta),
            "Checkout": grpc.unary_unary_rpc_method_handler(checkout),
            "Watch": grpc.unary_stream_rpc_method_handler(watch),
            "Upload": grpc.stream_unary_rpc_method_handler(upload),
            "Chat": grpc.stream_stream_rpc_method_handler(chat),
        },
    )


async def aio_price(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    if request == b"missing":
        await context.abort(grpc.StatusCode.NOT_FOUND, "no such item")
    if request == b"crash":
        raise ValueError("handler crashed")
    return lookup(request)


async def aio_watch(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    for i in range(int(request)):
        yield lookup(str(i).encode())


async def aio_upload(requests: AsyncIterator[bytes], context: Any) -> bytes:
    return str(len([r async for r in requests])).encode()


async def aio_chat(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
    async for message in requests:
        yield lookup(message)


def aio_handlers() -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Price": grpc.unary_unary_rpc_method_handler(aio_price),
            "Meta": grpc.unary_unary_rpc_method_handler(aio_meta),
            "Watch": grpc.unary_stream_rpc_method_handler(aio_watch),
            "Upload": grpc.stream_unary_rpc_method_handler(aio_upload),
            "Chat": grpc.stream_stream_rpc_method_handler(aio_chat),
        },
    )

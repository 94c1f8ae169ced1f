"""What the ``grpc`` and ``grpc.aio`` interceptors share: run names, the metadata carrying the
trace, status codes mapped to a run's error, and the start/finish of client and server runs.

Everything here runs on the RPC's path and never raises: an internal error is reported
(:func:`tracestitch.instrument.report`) and the RPC goes on as if untraced.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any, NamedTuple

import grpc
import grpc.aio

from tracestitch import RunTree
from tracestitch.instrument import (
    SERVICE_KEY,
    current_run,
    finish_run,
    inject,
    remote_parent,
    report,
    service_name,
    start_run,
)

__all__ = [
    "SERVER_ERROR_CODES",
    "ServerSettings",
    "begin_client",
    "begin_server",
    "finish_client",
    "finish_server",
    "rpc_name",
    "with_trace",
]

#: The status codes that make a *server* run an error (OpenTelemetry's rule for server spans:
#: the server's own fault, as HTTP 5xx); a client run is an error for every code but ``OK``.
SERVER_ERROR_CODES = frozenset(
    (
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    )
)

# The keys we write, lower case as gRPC metadata keys must be; replaced, never duplicated.
_OURS = ("langsmith-trace", "baggage", "traceparent", "tracestate")


def rpc_name(method: str | bytes) -> str:
    """``"/pkg.Service/Method"`` -> ``"pkg.Service/Method"`` (OpenTelemetry's span name)."""
    text = method.decode("ascii", "replace") if isinstance(method, bytes) else str(method)
    return text[1:] if text.startswith("/") else text


def with_trace(run: RunTree, metadata: Iterable[tuple[str, Any]] | None) -> list[tuple[str, Any]]:
    """``metadata`` (pairs) with ``run``'s trace written in: our keys replaced, the
    caller's other entries (and their order) kept, a foreign ``baggage``'s members kept."""
    pairs = list(metadata or ())
    carrier: dict[str, Any] = {}
    for key, value in pairs:
        if key == "baggage" and isinstance(value, str):
            carrier["baggage"] = value
    inject(run, carrier)
    kept = [(k, v) for k, v in pairs if k not in _OURS]
    return kept + [(k, v) for k, v in carrier.items() if isinstance(v, str)]


def begin_client(method: str | bytes) -> RunTree | None:
    """The client run of one call, a child of the current run; ``None`` outside any run
    (the call goes out untraced, with no trace metadata)."""
    try:
        parent = current_run()
        if parent is None:
            return None
        text = method.decode("ascii", "replace") if isinstance(method, bytes) else method
        return start_run(rpc_name(text), "tool", parent=parent, inputs={"rpc": text}, kind="client")
    except Exception as exc:
        report("grpc.client", exc)
        return None


def finish_client(run: RunTree, code: grpc.StatusCode | None, details: str | None) -> None:
    """End a client run with the call's status: every code but ``OK`` is an error."""
    try:
        code = code or grpc.StatusCode.OK
        outputs = {"grpc_status": code.name}
        error = None if code is grpc.StatusCode.OK else _status_text(code, details)
        finish_run(run, outputs, error)
    except Exception as exc:
        report("grpc.client", exc)


class ServerSettings(NamedTuple):
    """What a server interceptor is made with: ``trust`` (what the caller's baggage may set
    here) and the metadata its runs record (the service's name, as the HTTP servers')."""

    trust: bool | Collection[str]
    metadata: dict[str, Any]

    @classmethod
    def make(cls, trust: bool | Collection[str], service: str | None) -> ServerSettings:
        return cls(trust, {SERVICE_KEY: service or service_name()})


def begin_server(
    method: str, metadata: Iterable[Any] | None, settings: ServerSettings
) -> RunTree | None:
    """The server run of one call, a child of the caller's run read from ``metadata`` (a new
    trace when it carries none, or none to be believed)."""
    try:
        parent = remote_parent(tuple(metadata or ()), trust=settings.trust)
        inputs = {"rpc": method}
        name = rpc_name(method)
        return start_run(name, "chain", parent, inputs, settings.metadata, kind="server")
    except Exception as exc:
        report("grpc.server", exc)
        return None


def finish_server(
    run: RunTree,
    code: grpc.StatusCode | None,
    details: str | None,
    raised: BaseException | None = None,
) -> None:
    """End a server run with the status the handler set (or ``UNKNOWN`` when it raised
    without setting one, as gRPC answers then): an error for :data:`SERVER_ERROR_CODES`."""
    try:
        if code is None:
            code = grpc.StatusCode.OK if raised is None else grpc.StatusCode.UNKNOWN
        outputs = {"grpc_status": code.name}
        error: BaseException | str | None = None
        if code in SERVER_ERROR_CODES:
            # A handler's own exception tells more (its traceback) than the status gRPC sends.
            error = _status_text(code, details) if _aborted(raised) else raised
        elif raised is not None and code is grpc.StatusCode.OK:
            error = raised  # e.g. cancelled under us: not a status, still not a success
        finish_run(run, outputs, error)
    except Exception as exc:
        report("grpc.server", exc)


def _aborted(raised: BaseException | None) -> bool:
    # context.abort() raises a bare Exception (grpc) or AbortError (grpc.aio) after setting
    # the status: the status is the story then, not that exception.
    return raised is None or type(raised) is Exception or isinstance(raised, grpc.aio.AbortError)


def _status_text(code: grpc.StatusCode, details: str | None) -> str:
    return f"gRPC {code.name}: {details}" if details else f"gRPC {code.name}"

"""Reading and writing trace headers: ``langsmith-trace`` + ``baggage``, and W3C ``traceparent``.

Headers are untrusted input. :func:`extract` never raises and never does unbounded work: every
header is size-capped before it is parsed, and anything malformed is treated as absent, counted
in :func:`stats` and logged once per kind. The caller then simply starts a new root.

``headers`` may be any of the shapes a Python web stack hands around: a plain dict (any key case,
str or bytes), an ASGI header list of byte pairs, a WSGI environ (``HTTP_LANGSMITH_TRACE``), or a
header object of starlette, aiohttp (multidict), httpx, requests, or werkzeug.

The parts live next door: each shape read and written in :mod:`tracestitch.carriers` (for
``extract`` and ``inject`` alike), the trace headers collected in :mod:`tracestitch.headers`, the
``baggage`` members in :mod:`tracestitch.baggage`, ``traceparent`` in :mod:`tracestitch.w3c`, and
the counters behind :func:`stats` in :mod:`tracestitch.header_stats`.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tracestitch import ids
from tracestitch._guard import report
from tracestitch.baggage import _OURS, _apply_baggage, _encode_baggage
from tracestitch.carriers import collect_pairs, shape_of
from tracestitch.header_stats import _reject, reset_stats, stats
from tracestitch.header_stats import logger as logger  # re-export
from tracestitch.headers import (
    BAGGAGE,
    LANGSMITH_TRACE,
    TRACE_HEADERS,
    TRACEPARENT,
    TRACESTATE,
    _collect,
    _single,
    _text,
)
from tracestitch.w3c import _parse_traceparent, _parse_tracestate

if TYPE_CHECKING:
    from tracestitch.run_tree import RunTree

__all__ = [
    "BAGGAGE",
    "LANGSMITH_TRACE",
    "TRACEPARENT",
    "TRACESTATE",
    "Limits",
    "RemoteParent",
    "extract",
    "extract_parent",
    "inject",
    "reset_stats",
    "stats",
]


@dataclass(frozen=True)
class Limits:
    """Caps on what a header may make tracestitch do (all in bytes or counts)."""

    max_dotted_order_depth: int = ids.MAX_DOTTED_ORDER_DEPTH
    max_baggage_bytes: int = 8192  # W3C baggage's own recommended limit
    max_baggage_members: int = 64
    max_metadata_bytes: int = 4096
    max_metadata_keys: int = 64
    #: Nesting of metadata (and replica) JSON, the object itself counting as 1: metadata is a
    #: handful of key/value pairs, and deep nesting only costs every hop that parses it.
    max_metadata_depth: int = 20
    max_tags: int = 32
    max_tag_length: int = 256
    max_project_length: int = 256
    max_replicas: int = 8
    max_tracestate_bytes: int = 512
    #: How far ahead of ours a caller's clock may run. A child must not start before its parent,
    #: so the local subtree is shifted by the caller's lead; a header claiming more lead than this
    #: is not believed (it would date this service's runs years ahead).
    max_clock_skew_s: float = 300.0


DEFAULT_LIMITS = Limits()


@dataclass(slots=True)
class RemoteParent:
    """What the incoming headers say about the caller's run."""

    dotted_order: str
    trace_id: uuid.UUID
    run_id: uuid.UUID
    parent_run_id: uuid.UUID | None
    start_us: int
    metadata: dict[str, Any] | None = None
    tags: list[str] | None = None
    project_name: str | None = None
    #: The caller's destination when it names an agent address instead of a project
    #: (``lrn:agents/<id>/environments/<env>``, from the ``langsmith-address`` member).
    address: str | None = None
    replicas: list[dict[str, Any]] | None = None
    tracestate: str | None = None
    from_w3c: bool = False
    #: The W3C sampled flag of an OpenTelemetry caller: ``False`` (``-00``) means the caller
    #: records nothing of this request, so neither does this service (nor, told by the
    #: ``-00`` it passes on, the next one).
    sampled: bool = True


def extract(
    headers: Any,
    *,
    trust: bool | Collection[str] = True,
    limits: Limits = DEFAULT_LIMITS,
) -> RemoteParent | None:
    """The caller's run as told by ``headers``, or ``None`` (absent, or not to be believed).

    ``trust`` says what ``baggage`` may set here: ``True`` (all), ``False`` (nothing: ids only),
    or a subset of ``{"metadata", "tags", "project", "replicas"}`` (``"project"`` also covers
    the ``langsmith-address`` member: both name where the runs go). A parent whose trusted
    baggage names both a project and an address is not followed (``None``), as the SDKs do.
    """
    try:
        return _extract(headers, trust, limits)
    except Exception as exc:  # a bug here must never fail the request
        report("propagation.extract", exc)
        return None


def _extract(headers: Any, trust: bool | Collection[str], limits: Limits) -> RemoteParent | None:
    # An ASGI header list (every traced request) straight to its scan, one call fewer.
    found = collect_pairs(headers, TRACE_HEADERS) if type(headers) is list else _collect(headers)
    if not found:
        return None
    parent: RemoteParent | None = None
    order = _single(found, LANGSMITH_TRACE, limits.max_dotted_order_depth * 59)
    if order:
        try:
            _segments, start, trace_id, run_id, parent_id = ids.parse_dotted_order(
                order, limits.max_dotted_order_depth
            )
        except ids.DottedOrderError:
            _reject("dotted_order_malformed")
        else:
            if start - ids.now_micros() > limits.max_clock_skew_s * 1_000_000:
                _reject("dotted_order_in_future")
            else:
                parent = RemoteParent(order, trace_id, run_id, parent_id, start)
    elif order is None and LANGSMITH_TRACE not in found:
        parent = _from_traceparent(found)
    if parent is None:
        return None
    state = _single(found, TRACESTATE, limits.max_tracestate_bytes)
    if state:
        parent.tracestate = _parse_tracestate(state)
    if trust is not False and BAGGAGE in found and not _apply_baggage(parent, found, trust, limits):
        return None
    return parent


def _from_traceparent(found: dict[str, list[Any]]) -> RemoteParent | None:
    text = _single(found, TRACEPARENT, 512)
    if not text:
        return None
    parsed = _parse_traceparent(text)
    if parsed is None:
        return None
    trace_hex, span_hex, sampled = parsed
    # An OpenTelemetry caller has no dotted order: synthesise root and parent segments at "now"
    # so the children sort after them; the trace id and span id survive exactly.
    now = ids.now_micros()
    trace_id = ids.uuid_from_w3c(trace_hex)
    span_id = ids.uuid_from_w3c(trace_hex, span_hex)
    order = f"{ids.format_segment(now, trace_id)}.{ids.format_segment(now, span_id)}"
    return RemoteParent(order, trace_id, span_id, trace_id, now, from_w3c=True, sampled=sampled)


def extract_parent(
    headers: Any,
    *,
    trust: bool | Collection[str] = True,
    limits: Limits = DEFAULT_LIMITS,
    **inherit: Any,
) -> RunTree | None:
    """:func:`extract`, as a ``RunTree`` standing for the remote parent (never exported)."""
    from tracestitch.run_tree import RunTree

    remote = extract(headers, trust=trust, limits=limits)
    if remote is None:
        return None
    return RunTree._from_remote(remote, **inherit)


def inject(
    run: RunTree,
    headers: MutableMapping[str, Any] | None = None,
    *,
    limits: Limits = DEFAULT_LIMITS,
) -> MutableMapping[str, Any]:
    """Write ``run``'s trace headers into ``headers`` (a new dict when ``None``); return it.

    Writes ``langsmith-trace``, ``traceparent`` (and ``tracestate`` passed through from an
    OpenTelemetry caller), and ``baggage``: our members replace earlier ones of the same key,
    every foreign member already present is kept.
    """
    if headers is None:
        headers = {}
    shape = shape_of(headers)
    shape.set(headers, LANGSMITH_TRACE, run.dotted_order)
    shape.set(headers, TRACEPARENT, f"00-{run.trace_id.hex}-{ids.span_id_from_run_id(run.id)}-01")
    if run._tracestate:
        shape.set(headers, TRACESTATE, run._tracestate)
    ours = _encode_baggage(run, limits)
    existing = [t for t in (_text(v) for v in shape.get(headers, BAGGAGE)) if t]
    if existing:
        foreign = [
            m.strip()
            for m in ",".join(existing).split(",")
            if m.strip() and m.partition("=")[0].strip() not in _OURS
        ]
        merged = ",".join([*foreign, *ours])
        if merged:
            shape.set(headers, BAGGAGE, merged)
    elif ours:
        shape.set(headers, BAGGAGE, ",".join(ours))
    return headers

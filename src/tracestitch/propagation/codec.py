"""Reading and writing trace headers: ``langsmith-trace`` + ``baggage``, and W3C ``traceparent``.

Headers are untrusted input. :func:`extract` never raises and never does unbounded work: every
header is size-capped before it is parsed, and anything malformed is treated as absent, counted
in :func:`~tracestitch.propagation.stats` and logged once per kind. The caller then simply
starts a new root.

``headers`` may be any of the shapes a Python web stack hands around: a plain dict (any key case,
str or bytes), an ASGI header list of byte pairs, a WSGI environ (``HTTP_LANGSMITH_TRACE``), or a
header object of starlette, aiohttp (multidict), httpx, requests, or werkzeug.

The parts live next door: each shape read and written in :mod:`tracestitch.carriers` (for
``extract`` and ``inject`` alike), the trace headers collected in :mod:`.headers`, the
``baggage`` members in :mod:`.baggage`, ``traceparent`` in :mod:`.w3c`, the counters in
:mod:`.stats`.
"""

from __future__ import annotations

from collections.abc import Collection, MutableMapping
from typing import TYPE_CHECKING, Any, TypeVar, overload

from tracestitch import ids
from tracestitch._guard import report
from tracestitch.carriers import Collected, collect_pairs, shape_of
from tracestitch.propagation.baggage import OURS, apply_baggage, encode_baggage
from tracestitch.propagation.headers import (
    BAGGAGE,
    LANGSMITH_TRACE,
    TRACE_HEADERS,
    TRACEPARENT,
    TRACESTATE,
    collect,
    header_text,
    single,
)
from tracestitch.propagation.model import DEFAULT_LIMITS, Limits, RemoteParent
from tracestitch.propagation.stats import reject
from tracestitch.propagation.w3c import (
    TRACESTATE_KEY,
    parse_traceparent,
    parse_tracestate,
    split_tracestate,
    with_our_member,
)

if TYPE_CHECKING:
    from tracestitch.run_fields import RunFields

__all__ = ["extract", "inject"]

#: A carrier inject writes into: a mapping, or a list of (name, value) pairs.
H = TypeVar("H", MutableMapping[str, Any], list[Any])


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
    # What a middleware collected already, or an ASGI header list straight to its scan.
    kind = type(headers)
    if kind is Collected:
        found: dict[str, list[Any]] = headers
    else:
        found = collect_pairs(headers, TRACE_HEADERS) if kind is list else collect(headers)
    if not found:
        return None
    parent: RemoteParent | None = None
    order = single(found, LANGSMITH_TRACE, ids.max_order_length(limits.max_dotted_order_depth) + 1)
    if order:
        try:
            _segments, start, trace_id, run_id, parent_id = ids.parse_dotted_order(
                order, limits.max_dotted_order_depth
            )
        except ids.DottedOrderError:
            reject("dotted_order_malformed")
        else:
            if start - ids.now_micros() > limits.max_clock_skew_s * 1_000_000:
                reject("dotted_order_in_future")
            else:
                parent = RemoteParent(order, trace_id, run_id, parent_id, start)
    elif order is None and LANGSMITH_TRACE not in found:
        parent = _from_traceparent(found)
    if parent is None:
        return None
    state = single(found, TRACESTATE, limits.max_tracestate_bytes)
    if state:
        valid = parse_tracestate(state)
        if valid is not None and TRACESTATE_KEY in valid:  # ours: a tracestitch run upstream
            ancestor, parent.tracestate = split_tracestate(valid)
            if ancestor is not None and parent.from_w3c and ancestor != parent.run_id.hex[16:]:
                parent.ancestor_span = ancestor
        else:
            parent.tracestate = valid
    if trust is not False and BAGGAGE in found and not apply_baggage(parent, found, trust, limits):
        return None
    return parent


def _from_traceparent(found: dict[str, list[Any]]) -> RemoteParent | None:
    text = single(found, TRACEPARENT, 512)
    if not text:
        return None
    parsed = parse_traceparent(text)
    if parsed is None:
        return None
    trace_hex, span_hex, sampled = parsed
    # An OpenTelemetry caller has no dotted order: synthesise root and parent segments at "now"
    # so the children sort after them; the trace id and span id survive exactly.
    now = ids.now_micros()
    trace_id = ids.uuid_from_w3c(trace_hex)
    span_id = ids.uuid_from_w3c(trace_hex, span_hex)
    order = ids.child_order(ids.root_order(now, str(trace_id)), now, str(span_id))
    return RemoteParent(order, trace_id, span_id, trace_id, now, from_w3c=True, sampled=sampled)


@overload
def inject(run: RunFields, headers: None = None, *, limits: Limits = ...) -> dict[str, Any]: ...


@overload
def inject(run: RunFields, headers: H, *, limits: Limits = ...) -> H: ...


def inject(
    run: RunFields,
    headers: MutableMapping[str, Any] | list[Any] | None = None,
    *,
    limits: Limits = DEFAULT_LIMITS,
) -> MutableMapping[str, Any] | list[Any]:
    """Write ``run``'s trace headers into ``headers`` (a new dict when ``None``); return it.

    ``headers`` may be a mapping or a list of ``(name, value)`` pairs (a message's headers); a
    list gets names and values of the types its first pair has, and an empty one Kafka's
    ``(str, bytes)``, which kafka-python, aiokafka and confluent-kafka take:
    ``producer.send(topic, body, headers=inject(run, []))``.

    Writes ``langsmith-trace``, ``traceparent``, ``tracestate`` (our member, naming this run's
    span, in front of the members an OpenTelemetry caller sent), and ``baggage``: our members
    replace earlier ones of the same key, every foreign member already present is kept. For a
    run not being recorded (``tracing_enabled`` false: a sampled-out trace), only
    ``traceparent`` with the sampled flag ``00`` (and ``tracestate``), so the next service
    records nothing either.
    """
    if headers is None:
        headers = {}
    shape = shape_of(headers)
    span = ids.span_id_from_run_id(run.id)
    if not run.tracing_enabled:
        shape.set(headers, TRACEPARENT, f"00-{run.trace_id.hex}-{span}-00")
        if run.tracestate:
            shape.set(headers, TRACESTATE, run.tracestate)
        return headers
    shape.set(headers, LANGSMITH_TRACE, run.dotted_order)
    shape.set(headers, TRACEPARENT, f"00-{run.trace_id.hex}-{span}-01")
    shape.set(headers, TRACESTATE, with_our_member(span, run.tracestate))
    ours = encode_baggage(run, limits)
    existing = [t for t in (header_text(v) for v in shape.get(headers, BAGGAGE)) if t]
    if existing:
        foreign = [
            m.strip()
            for m in ",".join(existing).split(",")
            if m.strip() and m.partition("=")[0].strip() not in OURS
        ]
        merged = ",".join([*foreign, *ours])
        if merged:
            shape.set(headers, BAGGAGE, merged)
    elif ours:
        shape.set(headers, BAGGAGE, ",".join(ours))
    return headers

"""Reading and writing trace headers: ``langsmith-trace`` + ``baggage``, and W3C ``traceparent``.

Headers are untrusted input. :func:`extract` never raises and never does unbounded work: every
header is size-capped before it is parsed, and anything malformed is treated as absent, counted
in :func:`stats` and logged once per kind. The caller then simply starts a new root.

``headers`` may be any of the shapes a Python web stack hands around: a plain dict (any key case,
str or bytes), an ASGI header list of byte pairs, a WSGI environ (``HTTP_LANGSMITH_TRACE``), or a
header object of starlette, aiohttp (multidict), httpx, requests, or werkzeug.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import uuid
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

import orjson

from tracestitch import ids
from tracestitch._guard import report

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

logger = logging.getLogger("tracestitch.propagation")

LANGSMITH_TRACE = "langsmith-trace"
BAGGAGE = "baggage"
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
_META = "langsmith-metadata"
_TAGS = "langsmith-tags"
_PROJECT = "langsmith-project"
_REPLICAS = "langsmith-replicas"
_OURS = frozenset((_META, _TAGS, _PROJECT, _REPLICAS))
_WANTED = (LANGSMITH_TRACE, BAGGAGE, TRACEPARENT, TRACESTATE)
_WANTED_SET = frozenset(_WANTED)
_WANTED_BYTES = {name.encode(): name for name in _WANTED}
_ENVIRON_KEYS = {f"HTTP_{name.upper().replace('-', '_')}": name for name in _WANTED}
#: Fields a header may set on a replica: where it goes and harmless annotations. Never an API
#: URL or key: a header must not send runs elsewhere with this service's credentials.
_REPLICA_UPDATE_FIELDS = frozenset(("metadata", "tags"))
_TRUST_FIELDS = frozenset(("metadata", "tags", "project", "replicas"))


@dataclass(frozen=True)
class Limits:
    """Caps on what a header may make tracestitch do (all in bytes or counts)."""

    max_dotted_order_depth: int = ids.MAX_DOTTED_ORDER_DEPTH
    max_baggage_bytes: int = 8192  # W3C baggage's own recommended limit
    max_baggage_members: int = 64
    max_metadata_bytes: int = 4096
    max_metadata_keys: int = 64
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

# ---------------------------------------------------------------------------------------------
# Counters: one per kind of bad input; the first of each kind is logged.
# ---------------------------------------------------------------------------------------------
_stats: Counter[str] = Counter()
_stats_lock = threading.Lock()
_logged: set[str] = set()


_rejections = 0  # total, read by the baggage cache to keep only clean parses


def _reject(kind: str) -> None:
    global _rejections
    _rejections += 1
    with _stats_lock:
        _stats[kind] += 1
        first = kind not in _logged
        _logged.add(kind)
    if first:
        logger.warning(
            "tracestitch: ignored a trace header (%s); further ones are counted in "
            "tracestitch.propagation.stats()",
            kind,
        )


def stats() -> dict[str, int]:
    """How many incoming headers were ignored, by reason (``dotted_order_malformed``, ...)."""
    with _stats_lock:
        return dict(_stats)


def reset_stats() -> None:
    with _stats_lock:
        _stats.clear()
        _logged.clear()


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
    replicas: list[dict[str, Any]] | None = None
    tracestate: str | None = None
    from_w3c: bool = False


# ---------------------------------------------------------------------------------------------
# Collecting the four headers we read, from whatever shape they come in.
# ---------------------------------------------------------------------------------------------


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            _reject("non_utf8")
            return None
    return None


def _collect(headers: Any) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    if headers is None:
        return found
    if isinstance(headers, Mapping) and ("wsgi.version" in headers or "REQUEST_METHOD" in headers):
        for environ_key, wanted in _ENVIRON_KEYS.items():
            value = headers.get(environ_key)
            if value is not None:
                found[wanted] = [value]
        return found
    for method in ("getall", "get_list", "getlist", "get_all"):
        getter = getattr(headers, method, None)
        if getter is not None and not isinstance(headers, dict):
            for wanted in _WANTED:
                try:
                    values = getter(wanted)
                except KeyError:  # multidict's getall() without a default
                    continue
                if values:
                    found[wanted] = list(values)
            return found
    if type(headers) is dict:
        # The common case (httpx/requests users, tests): exact lower-case keys, no scan.
        for wanted in _WANTED:
            value = headers.get(wanted)
            if value is not None:
                found[wanted] = [value]
        if found:
            return found
    items: Iterable[Any] = headers.items() if isinstance(headers, Mapping) else headers
    for pair in items:
        key, value = pair
        name: str | None
        if isinstance(key, bytes):
            name = _WANTED_BYTES.get(key) or _WANTED_BYTES.get(key.lower())
        elif isinstance(key, str):
            name = key if key in _WANTED_SET else key.lower()
            if name not in _WANTED_SET:
                continue
        else:
            continue
        if name is not None:
            found.setdefault(name, []).append(value)
    return found


def _single(found: dict[str, list[Any]], name: str, max_len: int) -> str | None:
    values = found.get(name)
    if not values:
        return None
    if len(values) > 1:
        texts = {_text(v) for v in values}
        if len(texts) > 1:  # two different parents: ambiguous, so neither
            _reject(f"{name}_duplicate")
            return None
    value = values[0]
    if len(value) > max_len:  # checked before decoding: a 100 KB value costs nothing
        _reject(f"{name}_too_large")
        return None
    text = _text(value)
    return text.strip() if text is not None else None


# ---------------------------------------------------------------------------------------------
# Baggage
# ---------------------------------------------------------------------------------------------


def _baggage_members(found: dict[str, list[Any]], limits: Limits) -> list[tuple[str, str]]:
    values = found.get(BAGGAGE)
    if not values:
        return []
    # Several baggage headers are one list (RFC 9110 field combination).
    total = sum(len(v) for v in values)
    if total > limits.max_baggage_bytes:
        _reject("baggage_too_large")
        return []
    texts = [_text(v) for v in values]
    members: list[tuple[str, str]] = []
    for text in texts:
        if text is None:
            continue
        for item in text.split(","):
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or not key:
                continue
            members.append((key, value.split(";", 1)[0].strip()))
            if len(members) > limits.max_baggage_members:
                _reject("baggage_too_many_members")
                return members[: limits.max_baggage_members]
    return members


def _json_value(raw: str, limits: Limits, kind: str) -> Any:
    text = unquote(raw)
    if len(text) > limits.max_metadata_bytes:
        _reject(f"{kind}_too_large")
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested thousands deep
        _reject(f"{kind}_invalid_json")
        return None


def _parse_metadata(raw: str, limits: Limits) -> dict[str, Any] | None:
    value = _json_value(raw, limits, "metadata")
    if value is None:
        return None
    if not isinstance(value, dict):
        _reject("metadata_not_object")
        return None
    if len(value) > limits.max_metadata_keys:
        _reject("metadata_too_many_keys")
        return None
    return value


def _parse_tags(raw: str, limits: Limits) -> list[str] | None:
    tags = [t.strip() for t in unquote(raw).split(",")]
    tags = [t for t in tags if t and len(t) <= limits.max_tag_length and t.isprintable()]
    if len(tags) > limits.max_tags:
        _reject("tags_too_many")
        tags = tags[: limits.max_tags]
    return tags or None


def _parse_project(raw: str, limits: Limits) -> str | None:
    project = unquote(raw).strip()
    if not project or len(project) > limits.max_project_length or not project.isprintable():
        _reject("project_invalid")
        return None
    return project


def _parse_replicas(raw: str, limits: Limits) -> list[dict[str, Any]] | None:
    value = _json_value(raw, limits, "replicas")
    if not isinstance(value, list):
        if value is not None:
            _reject("replicas_not_list")
        return None
    replicas: list[dict[str, Any]] = []
    for item in value[: limits.max_replicas]:
        # Two forms: ["project", {updates}] (legacy) or {"project_name": ..., "updates": ...};
        # every other key, api_url and api_key above all, is dropped.
        if isinstance(item, list) and len(item) == 2:
            project, updates = item
        elif isinstance(item, dict):
            project, updates = item.get("project_name"), item.get("updates")
        else:
            continue
        if not isinstance(project, str) or not project or len(project) > limits.max_project_length:
            continue
        replica: dict[str, Any] = {"project_name": project}
        if isinstance(updates, dict):
            safe = {k: v for k, v in updates.items() if k in _REPLICA_UPDATE_FIELDS}
            if safe:
                replica["updates"] = safe
        replicas.append(replica)
    return replicas or None


# ---------------------------------------------------------------------------------------------
# W3C traceparent
# ---------------------------------------------------------------------------------------------
_TRACEPARENT_RE = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


def _parse_traceparent(text: str) -> tuple[str, str] | None:
    m = _TRACEPARENT_RE.fullmatch(text)
    if m is None:
        _reject("traceparent_malformed")
        return None
    version, trace_hex, span_hex, _flags, rest = m.groups()
    if version == "ff" or (version == "00" and rest) or trace_hex == _ZERO_TRACE:
        _reject("traceparent_invalid")
        return None
    if span_hex == _ZERO_SPAN:
        _reject("traceparent_invalid")
        return None
    return trace_hex, span_hex


# ---------------------------------------------------------------------------------------------
# extract / inject
# ---------------------------------------------------------------------------------------------


def _trusts(trust: bool | Collection[str], field: str) -> bool:
    return trust is True or (not isinstance(trust, bool) and field in trust)


def extract(
    headers: Any,
    *,
    trust: bool | Collection[str] = True,
    limits: Limits = DEFAULT_LIMITS,
) -> RemoteParent | None:
    """The caller's run as told by ``headers``, or ``None`` (absent, or not to be believed).

    ``trust`` says what ``baggage`` may set here: ``True`` (all), ``False`` (nothing: ids only),
    or a subset of ``{"metadata", "tags", "project", "replicas"}``.
    """
    try:
        return _extract(headers, trust, limits)
    except Exception as exc:  # a bug here must never fail the request
        report("propagation.extract", exc)
        return None


def _extract(headers: Any, trust: bool | Collection[str], limits: Limits) -> RemoteParent | None:
    found = _collect(headers)
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
    if state and state.isprintable():
        parent.tracestate = state
    if trust is not False and BAGGAGE in found:
        _apply_baggage(parent, found, trust, limits)
    return parent


def _from_traceparent(found: dict[str, list[Any]]) -> RemoteParent | None:
    text = _single(found, TRACEPARENT, 512)
    if not text:
        return None
    parsed = _parse_traceparent(text)
    if parsed is None:
        return None
    trace_hex, span_hex = parsed
    # An OpenTelemetry caller has no dotted order: synthesise root and parent segments at "now"
    # so the children sort after them; the trace id and span id survive exactly.
    now = ids.now_micros()
    trace_id = ids.uuid_from_w3c(trace_hex)
    span_id = ids.uuid_from_w3c(trace_hex, span_hex)
    order = f"{ids.format_segment(now, trace_id)}.{ids.format_segment(now, span_id)}"
    return RemoteParent(order, trace_id, span_id, trace_id, now, from_w3c=True)


_BaggageFields = tuple[
    "dict[str, Any] | None", "list[str] | None", "str | None", "list[dict[str, Any]] | None"
]
#: Parsed baggage by raw header value: an upstream sends the same baggage on every request, so
#: unquoting and JSON-decoding it each time is waste. Only parses that raised no complaint are
#: cached (every bad header is still counted); cleared when full, so it stays bounded.
_baggage_cache: dict[tuple[str, Any, Limits], _BaggageFields] = {}
_BAGGAGE_CACHE_SIZE = 256


def _apply_baggage(
    parent: RemoteParent,
    found: dict[str, list[Any]],
    trust: bool | Collection[str],
    limits: Limits,
) -> None:
    values = found[BAGGAGE]
    key = None
    if len(values) == 1 and isinstance(values[0], str):
        trust_key = trust if isinstance(trust, bool) else frozenset(trust)
        key = (values[0], trust_key, limits)
        cached = _baggage_cache.get(key)
        if cached is not None:
            metadata, tags, parent.project_name, parent.replicas = cached
            # Copies: whoever holds the RemoteParent may change them; the cache must not.
            parent.metadata = None if metadata is None else dict(metadata)
            parent.tags = None if tags is None else list(tags)
            return
    before = _rejections
    metadata = tags = project = replicas = None
    for name, value in _baggage_members(found, limits):
        if name not in _OURS:
            continue
        if name == _META and _trusts(trust, "metadata"):
            metadata = _parse_metadata(value, limits)
        elif name == _TAGS and _trusts(trust, "tags"):
            tags = _parse_tags(value, limits)
        elif name == _PROJECT and _trusts(trust, "project"):
            project = _parse_project(value, limits)
        elif name == _REPLICAS and _trusts(trust, "replicas"):
            replicas = _parse_replicas(value, limits)
    parent.metadata, parent.tags, parent.project_name, parent.replicas = (
        metadata,
        tags,
        project,
        replicas,
    )
    if key is not None and _rejections == before:
        fields: _BaggageFields = (
            None if metadata is None else dict(metadata),
            None if tags is None else list(tags),
            project,
            replicas,
        )
        if len(_baggage_cache) >= _BAGGAGE_CACHE_SIZE:
            _baggage_cache.clear()
        _baggage_cache[key] = fields


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


_quote_cache: dict[bytes | str, str] = {}


def _quoted(raw: bytes | str) -> str:
    # Metadata, tags and project repeat from run to run; percent-encoding is the slow part.
    encoded = _quote_cache.get(raw)
    if encoded is None:
        encoded = quote(raw)
        if len(_quote_cache) >= _BAGGAGE_CACHE_SIZE:
            _quote_cache.clear()
        _quote_cache[raw] = encoded
    return encoded


def _encode_baggage(run: RunTree, limits: Limits) -> list[str]:
    members: list[str] = []
    if run.metadata:
        try:
            encoded = _quoted(orjson.dumps(run.metadata, default=str))
        except (TypeError, ValueError):
            encoded = ""
        if encoded and len(encoded) <= limits.max_metadata_bytes:
            members.append(f"{_META}={encoded}")
        elif encoded:
            _reject("outgoing_metadata_too_large")
    if run.tags:
        members.append(f"{_TAGS}={_quoted(','.join(run.tags))}")
    if run.project_name:
        members.append(f"{_PROJECT}={_quoted(run.project_name)}")
    if run.replicas:
        safe = [
            {
                "project_name": r["project_name"],
                **({"updates": r["updates"]} if "updates" in r else {}),
            }
            for r in run.replicas
            if isinstance(r, dict) and r.get("project_name")
        ]
        if safe:
            members.append(f"{_REPLICAS}={quote(json.dumps(safe, separators=(',', ':')))}")
    return members


def _find_key(headers: MutableMapping[str, Any], name: str) -> str | None:
    if name in headers:
        return name
    if isinstance(headers, dict):
        for key in headers:
            if isinstance(key, str) and key.lower() == name:
                return key
        return None
    return name if headers.get(name) is not None else None  # case-insensitive header objects


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
    headers[LANGSMITH_TRACE] = run.dotted_order
    headers[TRACEPARENT] = f"00-{run.trace_id.hex}-{ids.span_id_from_run_id(run.id)}-01"
    if run._tracestate:
        headers[TRACESTATE] = run._tracestate
    ours = _encode_baggage(run, limits)
    key = _find_key(headers, BAGGAGE)
    if key is not None:
        existing = _text(headers[key]) or ""
        foreign = [
            m.strip()
            for m in existing.split(",")
            if m.strip() and m.partition("=")[0].strip() not in _OURS
        ]
        merged = ",".join([*foreign, *ours])
        if merged:
            headers[key] = merged
    elif ours:
        headers[BAGGAGE] = ",".join(ours)
    return headers

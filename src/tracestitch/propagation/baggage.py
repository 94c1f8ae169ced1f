"""The ``baggage`` header: reading our members (``langsmith-metadata``, ``-tags``, ``-project``,
``-address``, ``-replicas``) into a :class:`~tracestitch.propagation.RemoteParent`, and encoding
a run's (``-replicas`` is read, never written: the SDKs stopped writing it in January 2026).

Every member is bounded by :class:`~tracestitch.propagation.Limits` and anything malformed is
counted (:mod:`.stats`) and dropped. Values are read with plus-as-space:
OpenTelemetry's Python propagator re-encodes baggage values with ``quote_plus`` on the way
through an OTel service, and LangSmith's writers (ours included) percent-encode every ``+``, so a
bare ``+`` can only be such a space. Both directions are cached by raw value: an upstream sends
the same baggage on every request, and a run's metadata repeats from run to run.

Only the user's metadata goes out: the keys a service records about itself
(:data:`LOCAL_METADATA_KEYS`) stay in that service's runs.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Collection
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote_plus

import orjson

from tracestitch.propagation.headers import BAGGAGE, header_text
from tracestitch.propagation.model import DEFAULT_LIMITS, Limits, RemoteParent
from tracestitch.propagation.stats import collected, count, reject

if TYPE_CHECKING:
    from tracestitch.run_fields import RunFields

__all__ = [
    "LOCAL_METADATA_KEYS",
    "OURS",
    "SERVER_ADDRESS_KEY",
    "SERVICE_KEY",
    "apply_baggage",
    "encode_baggage",
]

#: Metadata key of the service a run was made in (the middleware's ``service=``).
SERVICE_KEY = "service"
#: Metadata key of the ``host:port`` a server run was served on.
SERVER_ADDRESS_KEY = "server.address"
#: Facts a service records about itself in its runs' metadata. They never ride in outgoing
#: baggage: a downstream service would label its runs with this one's name and address.
LOCAL_METADATA_KEYS = frozenset((SERVICE_KEY, SERVER_ADDRESS_KEY))

_META = "langsmith-metadata"
_TAGS = "langsmith-tags"
_PROJECT = "langsmith-project"
_ADDRESS = "langsmith-address"
_REPLICAS = "langsmith-replicas"
OURS = frozenset((_META, _TAGS, _PROJECT, _ADDRESS, _REPLICAS))
#: The ``trust`` name of each of our members. An address is a destination, as a project is,
#: so trusting the caller's project trusts its address.
_FIELDS = {
    _META: "metadata",
    _TAGS: "tags",
    _PROJECT: "project",
    _ADDRESS: "project",
    _REPLICAS: "replicas",
}
#: Fields a header may set on a replica: where it goes, harmless annotations, and ``reroot``
#: (the SDKs' re-parenting control). Never an API URL or key: a header must not send runs
#: elsewhere with this service's credentials.
_REPLICA_UPDATE_FIELDS = frozenset(("metadata", "tags", "reroot"))
#: An agent address as the SDKs write it: ``lrn:agents/<id>/environments/<env>``, the id a
#: DNS label, the environment one of four (the SDKs accept it in any case, write it lower).
_ADDRESS_RE = re.compile(
    r"lrn:agents/([a-z](?:[a-z0-9-]{0,61}[a-z0-9])?)/environments/"
    r"((?i:local|development|staging|production))"
)


def _baggage_members(values: tuple[Any, ...], limits: Limits) -> list[tuple[str, str]]:
    # Several baggage headers are one list (RFC 9110 field combination).
    total = sum(len(v) for v in values)
    if total > limits.max_baggage_bytes:
        reject("baggage_too_large")
        return []
    texts = [header_text(v) for v in values]
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
                reject("baggage_too_many_members")
                return members[: limits.max_baggage_members]
    return members


#: A member's value as W3C baggage allows it: percent-encoded printable ASCII (no space, quote,
#: comma, semicolon or backslash). Anything else (raw non-ASCII, controls, the surrogates aiohttp
#: makes of bytes that are not UTF-8) is not what any SDK sends, and is never decoded.
_VALUE_RE = re.compile(r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*")


def _decoded(raw: str) -> str | None:
    """A member's value percent-decoded, or ``None`` (counted) when it holds characters a
    baggage value cannot, or bytes that are not UTF-8 once decoded."""
    if _VALUE_RE.fullmatch(raw) is None:
        reject("baggage_member_invalid")
        return None
    try:
        return unquote_plus(raw, errors="strict")
    except UnicodeDecodeError:
        reject("baggage_member_invalid")
        return None


def _too_deep(value: Any, limit: int) -> bool:
    # Iterative: the parser accepts nesting deeper than Python's recursion limit.
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _json_value(text: str, limits: Limits, kind: str) -> Any:
    if len(text) > limits.max_metadata_bytes:
        reject(f"{kind}_too_large")
        return None
    try:
        # orjson, not json: it refuses a lone surrogate ("\ud800" is valid JSON but no text,
        # and a run holding one could not be exported), NaN and Infinity.
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        reject(f"{kind}_invalid_json")
        return None
    if _too_deep(value, limits.max_metadata_depth):
        reject(f"{kind}_too_deep")
        return None
    return value


def _parse_metadata(text: str, limits: Limits) -> dict[str, Any] | None:
    value = _json_value(text, limits, "metadata")
    if value is None:
        return None
    if not isinstance(value, dict):
        reject("metadata_not_object")
        return None
    if len(value) > limits.max_metadata_keys:
        reject("metadata_too_many_keys")
        return None
    return value


def _parse_tags(text: str, limits: Limits) -> list[str] | None:
    tags = [t.strip() for t in text.split(",")]
    tags = [t for t in tags if t and len(t) <= limits.max_tag_length and t.isprintable()]
    if len(tags) > limits.max_tags:
        reject("tags_too_many")
        tags = tags[: limits.max_tags]
    return tags or None


def _valid_project(project: str, limits: Limits) -> bool:
    return bool(project) and len(project) <= limits.max_project_length and project.isprintable()


def _parse_project(text: str, limits: Limits) -> str | None:
    project = text.strip()
    if not _valid_project(project, limits):
        reject("project_invalid")
        return None
    return project


def _parse_address(text: str) -> str | None:
    """The address in its canonical form (id as sent, environment lower-cased), or ``None``."""
    m = _ADDRESS_RE.fullmatch(text.strip())
    if m is None:
        reject("address_invalid")
        return None
    return f"lrn:agents/{m.group(1)}/environments/{m.group(2).lower()}"


def _parse_replicas(text: str, limits: Limits) -> list[dict[str, Any]] | None:
    value = _json_value(text, limits, "replicas")
    if not isinstance(value, list):
        if value is not None:
            reject("replicas_not_list")
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
        if not isinstance(project, str) or not _valid_project(project, limits):
            reject("replicas_project_invalid")
            continue
        replica: dict[str, Any] = {"project_name": project}
        if isinstance(updates, dict):
            safe = {k: v for k, v in updates.items() if k in _REPLICA_UPDATE_FIELDS}
            if safe:
                replica["updates"] = safe
        replicas.append(replica)
    return replicas or None


def _trusts(trust: bool | Collection[str], field: str) -> bool:
    return trust is True or (not isinstance(trust, bool) and field in trust)


_BaggageFields = tuple[
    "dict[str, Any] | None",
    "list[str] | None",
    "str | None",
    "str | None",
    "list[dict[str, Any]] | None",
]


def apply_baggage(
    parent: RemoteParent,
    found: dict[str, list[Any]],
    trust: bool | Collection[str],
    limits: Limits,
) -> bool:
    """Set ``parent``'s fields from the baggage; ``False`` when the parent is not to be
    followed at all: it names both a project and an address, which the SDKs refuse (joining
    the trace in either destination would misfile it)."""
    values = tuple(found[BAGGAGE])
    # Raw values, str or bytes (ASGI servers hand bytes over), are the cache's key; any other
    # shape is parsed each time.
    if len(values) == 1 and type(values[0]) in _RAW:
        if trust is True and limits is DEFAULT_LIMITS:
            # The default reading, keyed by the value alone: hashing the Limits dataclass
            # costs more than the lookup (bench/callgrind_asgi.py extract:parent).
            fields, complaints = _parse_default(values)
        else:
            trust_key = trust if isinstance(trust, bool) else frozenset(trust)
            fields, complaints = _parse_cached(values, trust_key, limits)
        count(complaints)
    elif all(type(v) in _RAW for v in values):
        trust_key = trust if isinstance(trust, bool) else frozenset(trust)
        fields, complaints = _parse_cached(values, trust_key, limits)
        count(complaints)
    else:
        trust_key = trust if isinstance(trust, bool) else frozenset(trust)
        fields = _parse_baggage(values, trust_key, limits)
    if fields is None:
        return False
    metadata, tags, parent.project_name, parent.address, parent.replicas = fields
    # Copies: whoever holds the RemoteParent may change them; the cache must not.
    parent.metadata = None if metadata is None else dict(metadata)
    parent.tags = None if tags is None else list(tags)
    return True


def _parse_baggage(
    values: tuple[Any, ...], trust: bool | frozenset[str], limits: Limits
) -> _BaggageFields | None:
    metadata = tags = project = address = replicas = None
    for name, value in _baggage_members(values, limits):
        if name not in OURS or not _trusts(trust, _FIELDS[name]):
            continue
        text = _decoded(value)
        if text is None:
            continue
        if name == _META:
            metadata = _parse_metadata(text, limits)
        elif name == _TAGS:
            tags = _parse_tags(text, limits)
        elif name == _PROJECT:
            project = _parse_project(text, limits)
        elif name == _ADDRESS:
            address = _parse_address(text)
        else:
            replicas = _parse_replicas(text, limits)
    if project is not None and address is not None:
        reject("baggage_project_and_address")
        return None
    return metadata, tags, project, address, replicas


@functools.lru_cache(maxsize=256)
def _parse_cached(
    values: tuple[str | bytes, ...], trust: bool | frozenset[str], limits: Limits
) -> tuple[_BaggageFields | None, tuple[str, ...]]:
    """:func:`_parse_baggage` and its complaints, by raw value: an upstream sends the same
    baggage on every request, and unquoting and JSON-decoding it each time is waste
    (see docs/architecture.md, "Caches", for the figure). The complaints are counted at
    every use, so each bad header is counted however often it comes."""
    return collected(_parse_baggage, values, trust, limits)


@functools.lru_cache(maxsize=256)
def _parse_default(
    values: tuple[str | bytes, ...],
) -> tuple[_BaggageFields | None, tuple[str, ...]]:
    """:func:`_parse_cached` for ``trust=True`` and the default limits."""
    return collected(_parse_baggage, values, True, DEFAULT_LIMITS)


_RAW = (bytes, str)


@functools.lru_cache(maxsize=256)
def _quoted(raw: bytes | str) -> str:
    """``raw`` percent-encoded. Metadata, tags and project repeat from run to run, and
    encoding is the slow part of writing baggage (see docs/architecture.md, "Caches")."""
    # Text the app set may hold lone surrogates, which UTF-8 cannot encode: they go out as
    # '?' (the header stays ASCII either way).
    return quote(raw) if isinstance(raw, bytes) else quote(raw, errors="replace")


def _user_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    # Checked key by key rather than by set intersection: this runs on every outgoing call,
    # and most runs carry both facts (a server run's children inherit them).
    if SERVICE_KEY in metadata or SERVER_ADDRESS_KEY in metadata:
        return {k: v for k, v in metadata.items() if k not in LOCAL_METADATA_KEYS}
    return metadata


def encode_baggage(run: RunFields, limits: Limits) -> list[str]:
    """The ``langsmith-*`` baggage members that carry ``run``'s user metadata, tags and
    project to the next service, within ``limits``."""
    members: list[str] = []
    metadata = _user_metadata(run.metadata) if run.metadata else None
    if metadata:
        try:
            encoded = _quoted(orjson.dumps(metadata, default=str))
        except (TypeError, ValueError):  # not JSON text (a lone surrogate, a huge int ...)
            encoded = ""
            reject("outgoing_metadata_invalid")
        if encoded and len(encoded) <= limits.max_metadata_bytes:
            members.append(f"{_META}={encoded}")
        elif encoded:
            reject("outgoing_metadata_too_large")
    if run.tags:
        members.append(f"{_TAGS}={_quoted(','.join(run.tags))}")
    # A run goes to its address or to its project, never both (the SDKs refuse a parent that
    # names both), so the address, when there is one, is the destination passed on.
    if run.address is not None:
        members.append(f"{_ADDRESS}={_quoted(run.address)}")
    elif run.project_name:
        members.append(f"{_PROJECT}={_quoted(run.project_name)}")
    return members

"""The trace headers we read and write, and how to find them in whatever shape of headers a
Python web stack hands around (see :mod:`tracestitch.propagation` for the list).

Values are untrusted: one that is not UTF-8, too large, or ambiguous (two different copies) is
counted in :mod:`tracestitch.header_stats` and treated as absent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

from tracestitch.header_stats import _reject

__all__ = ["BAGGAGE", "LANGSMITH_TRACE", "TRACEPARENT", "TRACESTATE"]

LANGSMITH_TRACE = "langsmith-trace"
BAGGAGE = "baggage"
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
_WANTED = (LANGSMITH_TRACE, BAGGAGE, TRACEPARENT, TRACESTATE)
_WANTED_SET = frozenset(_WANTED)
_WANTED_BYTES = {name.encode(): name for name in _WANTED}
_ENVIRON_KEYS = {f"HTTP_{name.upper().replace('-', '_')}": name for name in _WANTED}


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
    items: Iterable[Any]
    if type(headers) is list:
        # An ASGI header list, on every traced request: straight to the scan (the ABC and
        # getattr probes below cost more than the scan itself).
        items = headers
    else:
        scanned = _lookup(headers, found)
        if scanned is None:
            return found
        items = scanned
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


def _lookup(headers: Any, found: dict[str, list[Any]]) -> Iterable[Any] | None:
    """Fill ``found`` by lookups where ``headers`` allows them (``None``: done), else the
    ``(name, value)`` pairs to scan."""
    if isinstance(headers, Mapping) and ("wsgi.version" in headers or "REQUEST_METHOD" in headers):
        for environ_key, wanted in _ENVIRON_KEYS.items():
            value = headers.get(environ_key)
            if value is not None:
                found[wanted] = [value]
        return None
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
            return None
    if type(headers) is dict:
        # The common case (httpx/requests users, tests): exact lower-case keys, no scan.
        for wanted in _WANTED:
            value = headers.get(wanted)
            if value is not None:
                found[wanted] = [value]
        if found:
            return None
    items: Iterable[Any] = headers.items() if isinstance(headers, Mapping) else headers
    return items


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


def _find_key(headers: MutableMapping[str, Any], name: str) -> str | None:
    if name in headers:
        return name
    if isinstance(headers, dict):
        for key in headers:
            if isinstance(key, str) and key.lower() == name:
                return key
        return None
    return name if headers.get(name) is not None else None  # case-insensitive header objects

"""Recorded URLs and run names of client calls: the URL rebuilt from an adapter's parts, its
query with sensitive values redacted, and the path templated so calls to one endpoint share a
run name (``"GET service-b/items/{id}"``)."""

from __future__ import annotations

from collections.abc import Collection

from tracestitch.redact import REDACTED, SENSITIVE_QUERY_KEYS, QueryRedactor

__all__ = [
    "DEFAULT_SENSITIVE_QUERY_KEYS",
    "REDACTED",
    "default_run_name",
    "redact_query",
    "template_path",
]

#: The client hooks' default: the same names the middleware redacts (one implementation).
DEFAULT_SENSITIVE_QUERY_KEYS = SENSITIVE_QUERY_KEYS

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_HEX = frozenset("0123456789abcdefABCDEF")
_DIGITS = frozenset("0123456789")


def _netloc(scheme: str, host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    if port is None or port == _DEFAULT_PORTS.get(scheme):
        return shown
    return f"{shown}:{port}"


def _join_url(scheme: str, host: str, port: int | None, path: str, query: str) -> str:
    url = f"{scheme}://{_netloc(scheme, host, port)}{path or '/'}"
    return f"{url}?{query}" if query else url


def redact_query(query: str, sensitive: Collection[str] = DEFAULT_SENSITIVE_QUERY_KEYS) -> str:
    """``query`` with the values of sensitive parameters replaced::

    redact_query("q=cats&api_key=sk-123")  # "q=cats&api_key=[REDACTED]"
    """
    return QueryRedactor(sensitive)(query)


def _is_id_segment(segment: str) -> bool:
    if segment.isdigit():
        return True
    n = len(segment)
    if n == 36 and segment[8] == segment[13] == segment[18] == segment[23] == "-":
        return _HEX.issuperset(segment.replace("-", ""))
    # Hex ids (ObjectIds, hashes, compact UUIDs); a digit is required so that words made only
    # of the letters a-f ("facade") stay as they are.
    return n >= 16 and _HEX.issuperset(segment) and not segment.isalpha()


def template_path(path: str) -> str:
    """``path`` with id-looking segments (numbers, UUIDs, long hex) replaced by ``{id}``, so
    calls to the same endpoint share a run name::

    template_path("/items/42/parts/3f2c9a1e-8d4b-4c1a-9e7f-0a1b2c3d4e5f")
    # "/items/{id}/parts/{id}"
    """
    # Every id shape needs a digit, so the common digit-free path returns after one C-level scan.
    if _DIGITS.isdisjoint(path):
        return path
    segments = path.split("/")
    changed = False
    for i, segment in enumerate(segments):
        if segment and _is_id_segment(segment):
            segments[i] = "{id}"
            changed = True
    return "/".join(segments) if changed else path


def default_run_name(method: str, scheme: str, host: str, port: int | None, path: str) -> str:
    """``"GET service-b/items/{id}"``: method, host (with a non-default port) and the
    templated path."""
    return f"{method} {_netloc(scheme, host, port)}{template_path(path or '/')}"

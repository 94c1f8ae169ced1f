"""The ``propagate_to`` policy: which destinations of an outgoing call receive trace headers.

Host rules are decided once per host and cached (bounded); URL prefixes and regexes are checked
per call, and only when configured. The ``"internal"`` preset is :func:`is_internal_host`.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from tracestitch.clients._urls import _DEFAULT_PORTS, _join_url

__all__ = ["PropagateTo", "PropagationPolicy", "is_internal_host"]

#: What ``propagate_to`` accepts: a preset name, or a list whose entries are host names
#: (``"api.example.com"``), wildcards (``"*.example.com"``), IP networks (``"10.0.0.0/8"``),
#: URL prefixes (``"https://partner.example/v1/"``), compiled regexes (matched with ``re.match``
#: against the URL without userinfo) and the presets ``"internal"`` / ``"all"``.
PropagateTo = Literal["internal", "all", "none"] | Iterable[str | re.Pattern[str]]

_INTERNAL_SUFFIXES = (".svc.cluster.local", ".local", ".internal", ".localhost")
#: Host decisions a policy keeps. The cache pays: per traced httpx call (callgrind,
#: bench/callgrind_clients.py) 822,376 instructions with it, 855,969 without, 557,851 for the
#: call without the hook (service-b); the decision alone 1,429 against 34,425 (a host name goes
#: through ipaddress first).
_HOST_CACHE_SIZE = 1024


def _parse_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        # "2130706433", "127.1" and "0x7f.1" are 127.0.0.1 to the resolver; judge them as the
        # address they connect to, not as a single-label name.
        if host[:1].isdigit():
            try:
                return ipaddress.IPv4Address(socket.inet_aton(host))
            except OSError:
                return None
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def is_internal_host(host: str) -> bool:
    """The ``"internal"`` preset: loopback, private and link-local addresses; single-label
    names (``service-b``, ``localhost``); ``*.svc.cluster.local``, ``*.local``, ``*.internal``,
    ``*.localhost``."""
    host = host.rstrip(".").lower()
    if not host:
        return False
    ip = _parse_ip(host)
    if ip is not None:
        return ip.is_loopback or ip.is_private or ip.is_link_local
    if "." not in host:
        return True
    return host.endswith(_INTERNAL_SUFFIXES)


@dataclass(frozen=True, slots=True)
class _Prefix:
    scheme: str
    host: str
    port: int | None
    path: str


def _effective_port(scheme: str, port: int | None) -> int | None:
    return port if port is not None else _DEFAULT_PORTS.get(scheme)


class PropagationPolicy:
    """Which destinations receive trace headers (see :data:`PropagateTo`).

    Host rules are decided once per host and cached (bounded: the cache is cleared when it
    fills, so a stream of distinct hosts costs recomputation, never memory). URL prefixes and
    regexes depend on the path, so they are checked per call, and only when configured::

        policy = PropagationPolicy(["internal", "*.partner.example", "https://api.example/v2/"])
        policy.allows("https", "api.example", None, "/v2/items", "")  # True
    """

    __slots__ = (
        "_all",
        "_cache",
        "_exact",
        "_internal",
        "_networks",
        "_patterns",
        "_prefixes",
        "_suffixes",
    )

    def __init__(self, propagate_to: PropagateTo = "internal") -> None:
        self._all = False
        self._internal = False
        self._exact: set[str] = set()
        self._suffixes: list[str] = []
        self._networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self._prefixes: list[_Prefix] = []
        self._patterns: list[re.Pattern[str]] = []
        self._cache: dict[str, bool] = {}
        entries: Iterable[Any] = (
            [propagate_to] if isinstance(propagate_to, (str, re.Pattern)) else propagate_to
        )
        for entry in entries:
            self._add(entry)

    def _add(self, entry: Any) -> None:
        if isinstance(entry, re.Pattern):
            self._patterns.append(entry)
            return
        if not isinstance(entry, str) or not entry.strip():
            raise TypeError(f"propagate_to: unsupported entry {entry!r}")
        text = entry.strip()
        if text == "all":
            self._all = True
        elif text == "internal":
            self._internal = True
        elif text == "none":
            pass
        elif "://" in text:
            parts = urlsplit(text)
            if not parts.hostname:
                raise ValueError(f"propagate_to: URL prefix without a host: {entry!r}")
            scheme = parts.scheme.lower()
            self._prefixes.append(
                _Prefix(scheme, parts.hostname, _effective_port(scheme, parts.port), parts.path)
            )
        elif text.startswith("*."):
            self._suffixes.append(text[1:].lower().rstrip("."))
        elif "/" in text:
            self._networks.append(ipaddress.ip_network(text, strict=False))
        else:
            self._exact.add(text.lower().rstrip("."))

    def allows(self, scheme: str, host: str, port: int | None, path: str, query: str) -> bool:
        """Whether a request to this URL may carry trace headers."""
        if self._all:
            return True
        cached = self._cache.get(host)
        if cached is None:
            cached = self._host_allowed(host)
            cache = self._cache
            if len(cache) >= _HOST_CACHE_SIZE:
                cache.clear()
            cache[host] = cached
        if cached:
            return True
        if self._prefixes and self._prefix_allows(scheme, host, port, path):
            return True
        if self._patterns:
            url = _join_url(scheme, host, port, path, query)
            return any(p.match(url) for p in self._patterns)
        return False

    def _host_allowed(self, host: str) -> bool:
        name = host.rstrip(".").lower()
        if not name:
            return False
        if self._internal and is_internal_host(name):
            return True
        if name in self._exact:
            return True
        if self._suffixes and name.endswith(tuple(self._suffixes)):
            return True
        if self._networks:
            ip = _parse_ip(name)
            if ip is not None:
                return any(ip in net for net in self._networks if net.version == ip.version)
        return False

    def _prefix_allows(self, scheme: str, host: str, port: int | None, path: str) -> bool:
        scheme = scheme.lower()
        effective = _effective_port(scheme, port)
        name = host.rstrip(".").lower()
        for prefix in self._prefixes:
            if (
                prefix.host == name
                and prefix.scheme == scheme
                and prefix.port == effective
                and (path or "/").startswith(prefix.path)
            ):
                return True
        return False

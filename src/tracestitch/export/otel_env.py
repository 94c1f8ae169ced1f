"""The OpenTelemetry environment variables of an OTLP trace exporter, read as the OTel
specification says (``specification/protocol/exporter.md``, ``resource/sdk.md``).

:func:`otlp_settings_from_env` is a pure function of the environment mapping: it reads, it
does not log or connect. What it had to ignore is listed in :attr:`OTLPSettings.problems`
(the caller logs them); a configuration that cannot work raises :class:`OTLPConfigError`.

========================================= =========================================================
``TRACESTITCH_OTLP_ENDPOINT``             tracestitch's own name, and it wins: a *base* URL like
                                          ``OTEL_EXPORTER_OTLP_ENDPOINT`` (``/v1/traces`` is
                                          appended), except that a URL already ending in
                                          ``/v1/traces`` is taken as it is (as it always was)
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``    the traces URL, used as is (an empty path means ``/``)
``OTEL_EXPORTER_OTLP_ENDPOINT``           a base URL: traces go to ``<base>/v1/traces``
``OTEL_EXPORTER_OTLP[_TRACES]_HEADERS``   ``key=value,key2=value2``, values percent-decoded (W3C
                                          baggage format); the ``TRACES`` one replaces the other
``OTEL_EXPORTER_OTLP[_TRACES]_TIMEOUT``   milliseconds per export request (default 10000; ``0``:
                                          no limit, taken as one hour so a hung peer cannot hold
                                          the export thread forever)
``OTEL_EXPORTER_OTLP[_TRACES]_COMPRESSION`` ``gzip`` or ``none`` (unset: gzip, which the spec
                                          leaves to each exporter and every OTLP receiver reads)
``OTEL_EXPORTER_OTLP[_TRACES]_PROTOCOL``  ``http/protobuf`` (what is sent); ``http/json`` is
                                          noted and protobuf sent; ``grpc`` cannot be honoured
``OTEL_TRACES_EXPORTER``                  when set without ``otlp`` (``none``, ``console`` ...),
                                          the ``OTEL_EXPORTER_OTLP_*`` endpoints are not used
``TRACESTITCH_SERVICE_NAME``,             the service of runs that name none (a middleware's
``OTEL_SERVICE_NAME``                     runs carry their own); ``OTEL_SERVICE_NAME`` wins over
                                          ``service.name`` in ``OTEL_RESOURCE_ATTRIBUTES``
``OTEL_RESOURCE_ATTRIBUTES``              ``key=value,...``, keys and values percent-decoded; on
                                          any malformed member the whole value is discarded
========================================= =========================================================

An endpoint variable is what turns OTLP export on: with none set this returns ``None`` (the
spec's default ``http://localhost:4318`` is not assumed, so a process that merely has OTel
variables for another SDK does not start sending spans).

Example::

    settings = otlp_settings_from_env(os.environ)
    if settings is not None:
        sink = OTLPSink.from_settings(settings)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "OTLPConfigError",
    "OTLPSettings",
    "otlp_settings_from_env",
    "parse_key_values",
    "traces_url_from_base",
]

DEFAULT_TIMEOUT_S = 10.0
#: What a timeout of ``0`` ("no limit") becomes: long, but a hung collector still lets go.
NO_LIMIT_TIMEOUT_S = 3600.0
TRACES_PATH = "v1/traces"

# RFC 9110 token: what an HTTP header name may be.
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# A '%' not followed by two hex digits: not percent-encoding, so the value is malformed.
_BAD_PERCENT_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")


class OTLPConfigError(ValueError):
    """An OTLP configuration that cannot work (the message names the variable and value)."""


@dataclass(frozen=True)
class OTLPSettings:
    """What the environment says about exporting traces over OTLP/HTTP.

    ``traces_endpoint`` is the full URL spans are POSTed to. ``headers`` may hold credentials
    and is left out of the repr. ``service_name`` is for runs that carry no service of their
    own; ``resource_attributes`` (from ``OTEL_RESOURCE_ATTRIBUTES``, without ``service.name``)
    go on every resource. ``problems`` lists what was ignored and why, for the caller to log.
    """

    traces_endpoint: str
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    timeout: float = DEFAULT_TIMEOUT_S
    compression: str = "gzip"
    service_name: str | None = None
    resource_attributes: Mapping[str, str] = field(default_factory=dict)
    problems: tuple[str, ...] = ()


def _get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def _signal(env: Mapping[str, str], option: str) -> tuple[str, str] | None:
    """The traces-specific variable of ``option`` if set, else the general one: (name, value)."""
    for name in (f"OTEL_EXPORTER_OTLP_TRACES_{option}", f"OTEL_EXPORTER_OTLP_{option}"):
        value = _get(env, name)
        if value is not None:
            return name, value
    return None


def traces_url_from_base(base: str) -> str:
    """``<base>/v1/traces``, as the spec builds it from ``OTEL_EXPORTER_OTLP_ENDPOINT``: the
    base is made to end with one slash and the relative path appended."""
    return base.rstrip("/") + "/" + TRACES_PATH


def _check_url(name: str, url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise OTLPConfigError(f"{name}={url!r} is not an http(s) URL")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError as exc:
        raise OTLPConfigError(f"{name}={url!r}: {exc}") from None
    return url


def _percent_decode(text: str) -> str:
    """Strict RFC 3986 decoding: a stray ``%`` or bytes that are not UTF-8 raise ValueError.
    ``+`` stays a plus (baggage is not form encoding)."""
    if _BAD_PERCENT_RE.search(text):
        raise ValueError(f"malformed percent-encoding in {text!r}")
    return unquote(text, errors="strict")


def parse_key_values(text: str, *, decode_keys: bool) -> tuple[dict[str, str], list[str]]:
    """``key=value`` members separated by commas (W3C baggage without properties), values
    percent-decoded (keys too with ``decode_keys``); blanks around members and ``=`` are
    dropped. Returns the pairs and the members that could not be read."""
    pairs: dict[str, str] = {}
    bad: list[str] = []
    for member in text.split(","):
        member = member.strip()
        if not member:
            continue
        key, sep, value = member.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            bad.append(member)
            continue
        try:
            if decode_keys:
                key = _percent_decode(key)
            value = _percent_decode(value)
        except ValueError:
            bad.append(member)
            continue
        pairs[key] = value
    return pairs, bad


def _headers(env: Mapping[str, str], problems: list[str]) -> dict[str, str]:
    found = _signal(env, "HEADERS")
    if found is None:
        return {}
    name, raw = found
    pairs, bad = parse_key_values(raw, decode_keys=False)
    # Member text may hold credentials: problems name the variable, never the value.
    if bad:
        problems.append(f"{name}: {len(bad)} member(s) not of the form key=value ignored")
    headers: dict[str, str] = {}
    lowered: dict[str, str] = {}
    for key, value in pairs.items():
        if not _TOKEN_RE.fullmatch(key):
            problems.append(f"{name}: {key!r} is not an HTTP header name; ignored")
            continue
        if any(c in value for c in "\r\n\0"):
            problems.append(f"{name}: the value of {key!r} has a line break; ignored")
            continue
        previous = lowered.get(key.lower())
        if previous is not None:  # header names are case-insensitive: the last one wins
            del headers[previous]
        lowered[key.lower()] = key
        headers[key] = value
    return headers


def _timeout(env: Mapping[str, str], problems: list[str]) -> float:
    found = _signal(env, "TIMEOUT")
    if found is None:
        return DEFAULT_TIMEOUT_S
    name, raw = found
    try:
        millis = int(raw)
    except ValueError:
        problems.append(f"{name}={raw!r} is not a whole number of milliseconds; using 10000")
        return DEFAULT_TIMEOUT_S
    if millis < 0:
        problems.append(f"{name}={raw!r} is negative; using 10000")
        return DEFAULT_TIMEOUT_S
    return NO_LIMIT_TIMEOUT_S if millis == 0 else millis / 1000.0


def _compression(env: Mapping[str, str], problems: list[str]) -> str:
    found = _signal(env, "COMPRESSION")
    if found is None:
        return "gzip"
    name, raw = found
    value = raw.lower()
    if value in ("gzip", "none"):
        return value
    problems.append(f"{name}={raw!r}: only gzip and none are supported; using gzip")
    return "gzip"


def _resource(env: Mapping[str, str], problems: list[str]) -> dict[str, str]:
    raw = _get(env, "OTEL_RESOURCE_ATTRIBUTES")
    if raw is None:
        return {}
    pairs, bad = parse_key_values(raw, decode_keys=True)
    if bad:
        # The spec: on any error the entire value SHOULD be discarded.
        problems.append(
            f"OTEL_RESOURCE_ATTRIBUTES discarded: malformed member(s) {', '.join(map(repr, bad))}"
        )
        return {}
    return pairs


def _endpoint(env: Mapping[str, str], problems: list[str]) -> str | None:
    own = _get(env, "TRACESTITCH_OTLP_ENDPOINT")
    if own is not None:
        _check_url("TRACESTITCH_OTLP_ENDPOINT", own)
        if own.rstrip("/").endswith("/" + TRACES_PATH):
            return own
        return traces_url_from_base(own)
    signal = _get(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    base = _get(env, "OTEL_EXPORTER_OTLP_ENDPOINT")
    if signal is None and base is None:
        return None
    exporters = _get(env, "OTEL_TRACES_EXPORTER")
    if exporters is not None:
        names = {part.strip().lower() for part in exporters.split(",")}
        if "otlp" not in names:
            # The deployment said "no OTLP traces" (none, console ...): the endpoint
            # variables are there for other signals. TRACESTITCH_OTLP_ENDPOINT still works.
            return None
    protocol = _signal(env, "PROTOCOL")
    if protocol is not None:
        name, value = protocol
        if value.lower() == "grpc":
            raise OTLPConfigError(
                f"{name}=grpc: tracestitch sends OTLP/HTTP (protobuf) only; point "
                "TRACESTITCH_OTLP_ENDPOINT at the collector's OTLP/HTTP port (usually 4318)"
            )
        if value.lower() == "http/json":
            problems.append(f"{name}=http/json: spans are sent as http/protobuf")
        elif value.lower() != "http/protobuf":
            problems.append(f"{name}={value!r} is not a known protocol; sending http/protobuf")
    if signal is not None:
        _check_url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", signal)
        # Used as is; only an empty path becomes "/" (the spec's one exception).
        return signal if urlsplit(signal).path else signal + "/"
    assert base is not None
    _check_url("OTEL_EXPORTER_OTLP_ENDPOINT", base)
    return traces_url_from_base(base)


def otlp_settings_from_env(env: Mapping[str, str]) -> OTLPSettings | None:
    """The OTLP trace export ``env`` describes, or ``None`` when it names no endpoint.

    Raises :class:`OTLPConfigError` when the named endpoint cannot be used (not an http(s)
    URL; a gRPC protocol). Everything else that is malformed is ignored and described in
    ``problems``.
    """
    problems: list[str] = []
    endpoint = _endpoint(env, problems)
    if endpoint is None:
        return None
    resource = _resource(env, problems)
    service = (
        _get(env, "TRACESTITCH_SERVICE_NAME")
        or _get(env, "OTEL_SERVICE_NAME")
        or resource.pop("service.name", None)
        or None
    )
    resource.pop("service.name", None)
    return OTLPSettings(
        traces_endpoint=endpoint,
        headers=_headers(env, problems),
        timeout=_timeout(env, problems),
        compression=_compression(env, problems),
        service_name=service,
        resource_attributes=resource,
        problems=tuple(problems),
    )

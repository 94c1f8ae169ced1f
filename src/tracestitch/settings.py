"""The one reader of tracestitch's settings: the environment, and the checks ``configure`` uses.

Every setting has one parser, shared by both ways of giving it, so a value means the same in
``TRACESTITCH_MAX_QUEUE_BYTES=64MiB`` as in ``configure(max_queue_bytes="64MiB")``. A bad value
is a :class:`SettingError` naming the setting and the forms it accepts. ``configure()`` raises it
(it is a ``ValueError``); from the environment each bad setting is one warning line and falls
back to its default, so the app always starts.

The ``TRACESTITCH_*`` names win over the LangSmith ones (``LANGSMITH_*``, ``LANGCHAIN_*``),
which are honoured so that an app configured for LangSmith works unchanged. The OTLP
destination (``TRACESTITCH_OTLP_ENDPOINT`` and OpenTelemetry's ``OTEL_*`` names) is read as the
OTel specification says by :mod:`tracestitch.export.otel_env`.

Example::

    settings, problems = read_env(os.environ)
    settings.max_queue_bytes  # 67108864, or what TRACESTITCH_MAX_QUEUE_BYTES says
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "AUTO",
    "ENV_NAMES",
    "LANGSMITH_DEFAULT_ENDPOINT",
    "SettingError",
    "Settings",
    "parse_bool",
    "parse_compression",
    "parse_database_url",
    "parse_rate",
    "parse_seconds",
    "parse_size",
    "parse_url",
    "read_env",
]

logger = logging.getLogger("tracestitch")

LANGSMITH_DEFAULT_ENDPOINT = "https://api.smith.langchain.com"
AUTO = "auto"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_COMPRESSIONS = ("auto", "gzip", "zstd", "none")


class SettingError(ValueError):
    """A setting with a value it cannot take; the message names both and the accepted forms."""


def parse_bool(name: str, value: object) -> bool:
    """``True``/``False``, or ``1``/``0``, ``true``/``false``, ``yes``/``no``, ``on``/``off``."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise SettingError(f"{name}={value!r}: expected true or false (1/0, yes/no, on/off)")


_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?i?b?)\s*", re.ASCII | re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}


def parse_size(name: str, value: object, *, minimum: int = 1) -> int:
    """A byte count: an int, or text such as ``1048576``, ``10MB``, ``256MiB``, ``64 KiB``
    (``K``/``M``/``G``/``T``: powers of 1000; with ``i``: of 1024)."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        match = _SIZE.fullmatch(str(value))
        if match is None:
            raise SettingError(
                f"{name}={value!r}: expected a size in bytes, such as 1048576, 10MB or 256MiB"
            )
        digits, unit = match.groups()
        unit = unit.lower()
        scale = _UNITS[unit[:1]] if "i" not in unit else 1024 ** ("kmgt".index(unit[0]) + 1)
        number = int(float(digits) * scale)
    if number < minimum:
        raise SettingError(f"{name}={value!r}: must be at least {minimum} bytes")
    return number


def parse_seconds(name: str, value: object, *, allow_zero: bool = True) -> float:
    """A non-negative number of seconds (``2``, ``0.5``); ``allow_zero=False``: positive."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = float("nan")
    if not (number >= 0 and number != float("inf")) or (number == 0 and not allow_zero):
        bound = "0 or more" if allow_zero else "more than 0"
        raise SettingError(f"{name}={value!r}: expected a number of seconds, {bound}")
    return number


def parse_url(name: str, value: object) -> str:
    """An ``http://`` or ``https://`` URL with a host (a trailing ``/`` is dropped)."""
    from urllib.parse import urlsplit

    text = str(value).strip()
    try:
        parts = urlsplit(text)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        parts, port_ok = None, False
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or not port_ok
        or not text.isascii()
        or any(c in text for c in " \t\r\n")
    ):
        hint = f" (did you mean http://{text}?)" if text and "://" not in text else ""
        raise SettingError(
            f"{name}={value!r}: expected an http:// or https:// URL such as "
            f"http://127.0.0.1:8700{hint}"
        )
    return text.rstrip("/")


def parse_database_url(name: str, value: object) -> str:
    """A PostgreSQL URL, ``postgresql://user[:password]@host[:port]/database[?options]``
    (``postgres://`` too), for the collector's store."""
    text = str(value).strip()
    if not text.startswith(("postgresql://", "postgres://")) or any(c.isspace() for c in text):
        raise SettingError(
            f"{name}={value!r}: expected a PostgreSQL URL such as"
            " postgresql://tracestitch@db.internal:5432/traces"
        )
    return text


def parse_compression(name: str, value: object) -> str:
    """``auto`` (zstd when installed, else gzip), ``gzip``, ``zstd`` or ``none``."""
    text = str(value).strip().lower()
    if text not in _COMPRESSIONS:
        raise SettingError(f"{name}={value!r}: expected one of {', '.join(_COMPRESSIONS)}")
    return text


def parse_rate(name: str, value: object) -> float:
    """A share between 0 and 1 (``0.1``: one in ten)."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = float("nan")
    if not 0.0 <= number <= 1.0:
        raise SettingError(f"{name}={value!r}: expected a number from 0 to 1, such as 0.1")
    return number


def _parse_text(name: str, value: object) -> str:
    text = str(value).strip()
    if not text.isprintable():
        raise SettingError(f"{name}: contains control characters")
    return text


def _parse_api_key(name: str, value: object) -> str:
    text = str(value).strip()
    # It goes out as a header value: printable ASCII only (a pasted newline would otherwise
    # make every request fail, or worse, inject a header).
    if not text.isascii() or not text.isprintable():
        raise SettingError(f"{name}: must be printable ASCII (it is sent as a header)")
    return text


def _parse_spool_dir(name: str, value: object) -> str | None:
    text = str(value).strip()
    if text.lower() in _FALSE or text.lower() == "none":
        return None
    return text or AUTO


def _parse_endpoints(name: str, value: object) -> dict[str, str | None]:
    import json

    try:
        parsed = json.loads(str(value))
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise SettingError(f'{name}: expected a JSON object {{"https://host": "api key", ...}}')
    return {
        parse_url(name, url): (_parse_api_key(name, key) if key else None)
        for url, key in parsed.items()
    }


@dataclass(frozen=True)
class Settings:
    """Every setting, with its default; see ``ENV_NAMES`` for where each is read from."""

    enabled: bool = True
    #: Whether ``enabled`` was given at all (LangSmith's default endpoint needs it true).
    enabled_given: bool = False
    project: str = "default"
    endpoint: str | None = None
    api_key: str | None = None
    extra_endpoints: dict[str, str | None] | None = None
    console: bool = False
    file: str | None = None
    spool_dir: str | None = AUTO
    spool_max_bytes: int = 256 << 20
    max_queue_bytes: int = 64 << 20
    shutdown_timeout: float = 2.0
    shutdown_max: float = 30.0
    flush_interval: float = 0.2
    post_open_after: float = 2.0
    compression: str = AUTO
    service_name: str | None = None
    #: The share of traces kept (:mod:`tracestitch.sampling`); ``None``: all.
    sampling_rate: float | None = None
    #: Settings given in the environment but not taken, as ``(variable, problem)``.
    problems: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    def exporter_options(self) -> dict[str, Any]:
        """The ``BatchExporter`` options among these settings."""
        return {
            "max_queue_bytes": self.max_queue_bytes,
            "shutdown_timeout": self.shutdown_timeout,
            "shutdown_max": self.shutdown_max,
            "flush_interval": self.flush_interval,
            "post_open_after": self.post_open_after,
            "spool_max_bytes": self.spool_max_bytes,
        }

    def destinations(self) -> bool:
        """Whether these settings name anywhere to send runs (OTLP aside: see
        :mod:`tracestitch.export.otel_env`)."""
        return bool(self.endpoint or self.console or self.file)


Parser = Callable[[str, object], Any]

#: setting -> (environment variables, first set wins; parser).
ENV_NAMES: dict[str, tuple[tuple[str, ...], Parser]] = {
    "enabled": (
        (
            "TRACESTITCH_TRACING",
            "LANGSMITH_TRACING",
            "LANGSMITH_TRACING_V2",
            "LANGCHAIN_TRACING_V2",
        ),
        parse_bool,
    ),
    "project": (("TRACESTITCH_PROJECT", "LANGSMITH_PROJECT", "LANGCHAIN_PROJECT"), _parse_text),
    "endpoint": (("TRACESTITCH_ENDPOINT", "LANGSMITH_ENDPOINT", "LANGCHAIN_ENDPOINT"), parse_url),
    "api_key": (("TRACESTITCH_API_KEY", "LANGSMITH_API_KEY", "LANGCHAIN_API_KEY"), _parse_api_key),
    "extra_endpoints": (("LANGSMITH_RUNS_ENDPOINTS",), _parse_endpoints),
    "console": (("TRACESTITCH_CONSOLE",), parse_bool),
    "file": (("TRACESTITCH_FILE",), _parse_text),
    "spool_dir": (("TRACESTITCH_SPOOL_DIR",), _parse_spool_dir),
    "spool_max_bytes": (("TRACESTITCH_SPOOL_MAX_BYTES",), parse_size),
    "max_queue_bytes": (("TRACESTITCH_MAX_QUEUE_BYTES",), parse_size),
    "shutdown_timeout": (("TRACESTITCH_SHUTDOWN_TIMEOUT",), parse_seconds),
    "shutdown_max": (("TRACESTITCH_SHUTDOWN_MAX",), parse_seconds),
    "flush_interval": (
        ("TRACESTITCH_FLUSH_INTERVAL",),
        lambda n, v: parse_seconds(n, v, allow_zero=False),
    ),
    "post_open_after": (("TRACESTITCH_POST_OPEN_AFTER",), parse_seconds),
    "compression": (("TRACESTITCH_COMPRESSION",), parse_compression),
    "service_name": (("TRACESTITCH_SERVICE_NAME", "OTEL_SERVICE_NAME"), _parse_text),
    "sampling_rate": (
        (
            "TRACESTITCH_TRACING_SAMPLING_RATE",
            "LANGSMITH_TRACING_SAMPLING_RATE",
            "LANGCHAIN_TRACING_SAMPLING_RATE",
        ),
        parse_rate,
    ),
}


def read_env(env: Mapping[str, str], *, warn: bool = True) -> Settings:
    """The settings ``env`` gives. Each setting is read from the first of its variables that
    is set and not empty; a value it cannot take is logged (one warning line naming the
    variable and the accepted forms, when ``warn``), listed in ``problems`` and replaced by the
    default. Never raises."""
    values: dict[str, Any] = {}
    problems: list[tuple[str, str]] = []
    for key, (names, parse) in ENV_NAMES.items():
        for name in names:
            raw = env.get(name)
            if raw is None or not raw.strip():
                continue
            try:
                values[key] = parse(name, raw)
            except SettingError as exc:
                problems.append((name, str(exc)))
            break
    values["enabled_given"] = "enabled" in values
    if (
        values.get("endpoint") is None
        and values.get("api_key")
        and values.get("enabled") is True
        and not any(name == "TRACESTITCH_ENDPOINT" for name, _ in problems)
    ):
        # LangSmith's own default, as its SDK does: tracing on and a key, no endpoint.
        values["endpoint"] = LANGSMITH_DEFAULT_ENDPOINT
    if warn:
        for _, problem in problems:
            logger.warning("tracestitch: ignoring %s; using its default", problem)
    return Settings(**values, problems=tuple(problems))

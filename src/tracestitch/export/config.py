"""One process-wide exporter, configured in code or from the environment.

``configure(...)`` builds the sinks, wraps them in :class:`BatchExporter` s and installs the
result with :func:`tracestitch.exporter.set_exporter`; it also sets the default project and
the enabled flag (:func:`tracestitch.context.set_defaults`). :func:`install_from_env`, called
by ``import tracestitch``, only reads the environment and registers a *lazy* factory: importing
starts no thread, touches no disk and imports none of the export machinery (this module's
imports are the core's and the standard library's). The factory runs on the first run handed
over, on that request's path, so it only starts a thread that builds the exporter (imports,
sinks) and holds the runs meanwhile (:class:`~tracestitch.export.deferred.DeferredExporter`);
the spool directory is scanned and the endpoint connected on the exporter's worker threads.

Environment (the ``TRACESTITCH_*`` names win over the LangSmith ones, which are honoured so an
app configured for LangSmith works unchanged):

=============================== ===============================================================
``TRACESTITCH_ENDPOINT``        LangSmith-compatible endpoint (``LANGSMITH_ENDPOINT``,
                                ``LANGCHAIN_ENDPOINT``)
``TRACESTITCH_API_KEY``         its ``x-api-key`` (``LANGSMITH_API_KEY``, ``LANGCHAIN_API_KEY``)
``TRACESTITCH_PROJECT``         default project (``LANGSMITH_PROJECT``, ``LANGCHAIN_PROJECT``)
``TRACESTITCH_TRACING``         ``false`` turns tracing off (``LANGSMITH_TRACING``)
``TRACESTITCH_OTLP_ENDPOINT``   OTLP/HTTP endpoint (``OTEL_EXPORTER_OTLP_ENDPOINT``);
                                headers from ``OTEL_EXPORTER_OTLP_HEADERS``
``TRACESTITCH_SPOOL_DIR``       spool directory; ``off`` for none (default: a per-user cache
                                directory, one sub-directory per endpoint)
``TRACESTITCH_SPOOL_MAX_BYTES`` spool bound (default 256 MiB)
``TRACESTITCH_MAX_QUEUE_BYTES`` in-memory bound (default 64 MiB)
``TRACESTITCH_SHUTDOWN_TIMEOUT`` seconds ``shutdown``/exit may take (default 2)
``TRACESTITCH_COMPRESSION``     ``auto``/``gzip``/``zstd``/``none``
``TRACESTITCH_CONSOLE``         ``1``: also print each trace as a tree to stderr
``TRACESTITCH_FILE``            also write JSON lines to this file
``LANGSMITH_RUNS_ENDPOINTS``    JSON ``{url: api_key}``: more write endpoints
=============================== ===============================================================

With ``LANGSMITH_TRACING=true`` and an API key but no endpoint, runs go to LangSmith's default
``https://api.smith.langchain.com``, as the SDK does.

Example::

    import tracestitch
    tracestitch.configure(endpoint="http://127.0.0.1:1984", project="checkout")
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tracestitch._guard import report
from tracestitch.context import set_defaults
from tracestitch.exporter import (
    Exporter,
    NoopExporter,
    get_exporter,
    set_exporter,
    set_exporter_factory,
)

if TYPE_CHECKING:
    from pathlib import Path

    from tracestitch.export.sink import Sink
    from tracestitch.export.worker import BatchExporter

__all__ = ["configure", "exporter_from_env", "install_from_env"]

logger = logging.getLogger("tracestitch.export")

LANGSMITH_DEFAULT_ENDPOINT = "https://api.smith.langchain.com"
_FALSE = ("0", "false", "no", "off")
_TRUE = ("1", "true", "yes", "on")
_AUTO = "auto"


def _first(env: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        value = env.get(name)
        if value:
            return value.strip()
    return None


def _default_spool_root() -> Path:
    from pathlib import Path  # ~7 ms to import: not at `import tracestitch`

    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "tracestitch" / "spool"


def _spool_for(spool_dir: str | os.PathLike[str] | None, key: str) -> Path | None:
    """One spool per destination: spooled runs carry no address, so runs meant for one
    endpoint must never be replayed to another."""
    if spool_dir is None:
        return None
    from pathlib import Path

    root = _default_spool_root() if spool_dir == _AUTO else Path(spool_dir)
    return root / _spool_name(key)


def _spool_name(key: str) -> str:
    import hashlib

    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _spool_keys(settings: Mapping[str, Any]) -> list[str]:
    """The spool keys of the spooled destinations ``settings`` name (as ``configure`` makes
    them)."""
    keys = []
    if settings.get("endpoint"):
        keys.append(f"langsmith {settings['endpoint']}")
    if settings.get("otlp_endpoint"):
        keys.append(f"otlp {settings['otlp_endpoint']}")
    return keys


def _has_spooled_runs(settings: Mapping[str, Any]) -> bool:
    """Whether a spool of a destination in ``settings`` holds runs an earlier process left.
    Cheap when there is none (one ``stat`` of the spool root): it runs at import."""
    spool_dir = settings.get("spool_dir")
    if spool_dir is None:
        return False
    if spool_dir == _AUTO:
        cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(cache, "tracestitch", "spool")
    else:
        root = os.fspath(spool_dir)
    if not os.path.isdir(root):
        return False
    for key in _spool_keys(settings):
        try:
            with os.scandir(os.path.join(root, _spool_name(key))) as entries:
                if any(e.name.endswith((".seg", ".open")) or ".claim-" in e.name for e in entries):
                    return True
        except OSError:
            continue
    return False


def configure(
    *,
    endpoint: str | None = None,
    api_key: str | None = None,
    project: str | None = None,
    enabled: bool | None = None,
    otlp_endpoint: str | None = None,
    otlp_headers: Mapping[str, str] | None = None,
    console: bool = False,
    file: str | os.PathLike[str] | None = None,
    sinks: list[Sink] | None = None,
    extra_endpoints: Mapping[str, str | None] | None = None,
    spool_dir: str | os.PathLike[str] | None = _AUTO,
    compression: str = _AUTO,
    install: bool = True,
    **exporter_options: Any,
) -> Exporter:
    """Build and install the process-wide exporter; returns it.

    Each destination (``endpoint`` for LangSmith-compatible ingest, ``otlp_endpoint``,
    ``console``, ``file``, any ``sinks``) gets its own :class:`BatchExporter` (own queue, retries
    and spool), so a slow one cannot hold back another. ``spool_dir`` is ``"auto"`` (a per-user
    cache directory), a path, or ``None`` (no spool). ``exporter_options`` go to every
    ``BatchExporter`` (``max_queue_bytes``, ``shutdown_timeout``, ``flush_interval`` ...).
    The previously installed exporter is flushed and shut down.

    >>> configure(endpoint="http://127.0.0.1:1984", project="demo", spool_dir=None)
    ... # doctest: +SKIP
    """
    from tracestitch.export.console import ConsoleSink
    from tracestitch.export.fanout import FanoutExporter
    from tracestitch.export.file import FileSink
    from tracestitch.export.langsmith import LangSmithSink
    from tracestitch.export.worker import BatchExporter

    set_defaults(enabled=enabled, project_name=project)
    exporters: list[BatchExporter] = []

    def batch(sink: Sink, key: str, spooled: bool = True) -> BatchExporter:
        spool = _spool_for(spool_dir, key) if spooled else None
        return BatchExporter(sink, spool=spool, **exporter_options)

    if endpoint:
        sink = LangSmithSink(
            endpoint,
            api_key,
            compression=compression,  # type: ignore[arg-type]
            extra_endpoints=extra_endpoints,
        )
        exporters.append(batch(sink, f"langsmith {endpoint}"))
    if otlp_endpoint:
        from tracestitch.export.otlp import OTLPSink

        otlp = OTLPSink(otlp_endpoint, headers=otlp_headers)
        exporters.append(batch(otlp, f"otlp {otlp_endpoint}"))
    if file is not None:
        exporters.append(batch(FileSink(file), f"file {file}", spooled=False))
    if console:
        exporters.append(batch(ConsoleSink(), "console", spooled=False))
    for i, extra in enumerate(sinks or ()):
        exporters.append(batch(extra, f"sink {i} {extra!r}"))
    for exporter in exporters:
        exporter.start()  # its sender replays what a previous process left in the spool
    result: Exporter
    if not exporters:
        result = NoopExporter()  # only defaults were configured
    elif len(exporters) == 1:
        result = exporters[0]
    else:
        result = FanoutExporter(exporters)
    if install:
        previous = set_exporter(result)
        if previous is not result:
            previous.shutdown(0.5)
    return result


def _env_options(env: Mapping[str, str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for name, key, kind in (
        ("TRACESTITCH_MAX_QUEUE_BYTES", "max_queue_bytes", int),
        ("TRACESTITCH_SHUTDOWN_TIMEOUT", "shutdown_timeout", float),
        ("TRACESTITCH_FLUSH_INTERVAL", "flush_interval", float),
        ("TRACESTITCH_POST_OPEN_AFTER", "post_open_after", float),
        ("TRACESTITCH_SPOOL_MAX_BYTES", "spool_max_bytes", int),
    ):
        raw = env.get(name)
        if raw:
            try:
                options[key] = kind(raw)
            except ValueError:
                logger.warning("tracestitch: ignoring %s=%r (not a number)", name, raw)
    return options


def _settings_from_env(env: Mapping[str, str]) -> dict[str, Any] | None:
    """``configure`` keyword arguments from ``env``; ``None`` when it names no destination or
    tracing is switched off."""
    tracing = _first(env, "TRACESTITCH_TRACING", "LANGSMITH_TRACING", "LANGSMITH_TRACING_V2")
    if tracing is not None and tracing.lower() in _FALSE:
        return None
    api_key = _first(env, "TRACESTITCH_API_KEY", "LANGSMITH_API_KEY", "LANGCHAIN_API_KEY")
    endpoint = _first(env, "TRACESTITCH_ENDPOINT", "LANGSMITH_ENDPOINT", "LANGCHAIN_ENDPOINT")
    if endpoint is None and api_key and tracing is not None and tracing.lower() in _TRUE:
        endpoint = LANGSMITH_DEFAULT_ENDPOINT
    otlp = _first(env, "TRACESTITCH_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
    console = (env.get("TRACESTITCH_CONSOLE") or "").lower() in _TRUE
    file = _first(env, "TRACESTITCH_FILE")
    if not (endpoint or otlp or console or file):
        return None
    extra: dict[str, str | None] = {}
    raw_extra = env.get("LANGSMITH_RUNS_ENDPOINTS")
    if raw_extra:
        import orjson

        try:
            parsed = orjson.loads(raw_extra)
            if isinstance(parsed, dict):
                extra = {str(k): (str(v) if v else None) for k, v in parsed.items()}
        except orjson.JSONDecodeError:
            logger.warning("tracestitch: LANGSMITH_RUNS_ENDPOINTS is not a JSON object; ignored")
    otlp_headers: dict[str, str] = {}
    for item in (env.get("OTEL_EXPORTER_OTLP_HEADERS") or "").split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            otlp_headers[key.strip()] = value.strip()
    spool_env = _first(env, "TRACESTITCH_SPOOL_DIR") or _AUTO
    spool = None if spool_env.lower() in _FALSE else spool_env
    return {
        "endpoint": endpoint,
        "api_key": api_key,
        "project": _first(env, "TRACESTITCH_PROJECT", "LANGSMITH_PROJECT", "LANGCHAIN_PROJECT"),
        "otlp_endpoint": otlp,
        "otlp_headers": otlp_headers or None,
        "console": console,
        "file": file,
        "extra_endpoints": extra or None,
        "spool_dir": spool,
        "compression": (env.get("TRACESTITCH_COMPRESSION") or _AUTO).lower(),
        **_env_options(env),
    }


def exporter_from_env(env: Mapping[str, str] | None = None) -> Exporter | None:
    """Build (without installing) the exporter the environment describes, or ``None``."""
    settings = _settings_from_env(os.environ if env is None else env)
    if settings is None:
        return None
    return configure(install=False, **settings)


def install_from_env(env: Mapping[str, str] | None = None) -> bool:
    """Register a lazy factory for the exporter the environment describes (built on first
    use). Returns whether the environment named a destination.

    Called by ``import tracestitch``, so it must stay cheap and safe: it reads the
    environment, registers a factory and does nothing else (no thread, no socket, no heavy
    import), and never raises (a bad environment is logged and ignored). The one exception:
    when the destination's spool holds runs an earlier process left (one ``stat`` tells), the
    exporter is started at once, so a restarted service replays them even if it never makes a
    run. Calling it again registers a fresh factory in place of the installed exporter.
    """
    try:
        settings = _settings_from_env(os.environ if env is None else env)
    except Exception:  # never break `import tracestitch` over an odd environment
        logger.exception("tracestitch: could not read the export settings from the environment")
        return False
    if settings is None:
        return False

    def factory() -> Exporter:
        # On the first request's path: hand back a stand-in at once and build on a thread;
        # the stand-in takes the real exporter's place in the slot once it is built.
        from tracestitch.export.deferred import DeferredExporter

        def build() -> Exporter:
            return configure(install=False, **settings)

        timeout = settings.get("shutdown_timeout", 2.0)
        return DeferredExporter(build, shutdown_timeout=timeout).start()

    set_exporter_factory(factory)
    try:
        if _has_spooled_runs(settings):
            get_exporter()  # runs the factory: the exporter's sender replays the spool
    except Exception as exc:
        report("export.spool_check", exc)
    return True

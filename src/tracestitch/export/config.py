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

Settings are read and checked by :mod:`tracestitch.settings`: ``configure`` raises a
``ValueError`` naming a bad argument and the forms it accepts; from the environment a bad value
is one warning line and that setting keeps its default, so the app always starts. Sizes take
``1048576``, ``10MB`` or ``256MiB``.

Environment (the ``TRACESTITCH_*`` names win over the LangSmith ones, which are honoured so an
app configured for LangSmith works unchanged):

=============================== ===============================================================
``TRACESTITCH_ENDPOINT``        LangSmith-compatible endpoint (``LANGSMITH_ENDPOINT``,
                                ``LANGCHAIN_ENDPOINT``)
``TRACESTITCH_API_KEY``         its ``x-api-key`` (``LANGSMITH_API_KEY``, ``LANGCHAIN_API_KEY``)
``TRACESTITCH_PROJECT``         default project (``LANGSMITH_PROJECT``, ``LANGCHAIN_PROJECT``)
``TRACESTITCH_TRACING``         ``false`` turns tracing off (``LANGSMITH_TRACING``,
                                ``LANGSMITH_TRACING_V2``, ``LANGCHAIN_TRACING_V2``)
``TRACESTITCH_OTLP_ENDPOINT``   OTLP/HTTP base URL; the OTel variables
                                (``OTEL_EXPORTER_OTLP[_TRACES]_ENDPOINT``, ``_HEADERS`` ...) as
                                :mod:`tracestitch.export.otel_env` reads them
``TRACESTITCH_SPOOL_DIR``       spool directory; ``off`` for none (default: a per-user cache
                                directory, one sub-directory per endpoint)
``TRACESTITCH_SPOOL_MAX_BYTES`` spool bound (default 256 MiB)
``TRACESTITCH_MAX_QUEUE_BYTES`` in-memory bound (default 64 MiB)
``TRACESTITCH_SHUTDOWN_TIMEOUT`` seconds exit waits for an endpoint that takes nothing (2)
``TRACESTITCH_SHUTDOWN_MAX``    seconds exit goes on delivering to one that does (30)
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

from tracestitch import sigterm
from tracestitch.context import set_defaults
from tracestitch.export.otel_env import OTLPConfigError, OTLPSettings, otlp_settings_from_env
from tracestitch.exporter import (
    Exporter,
    NoopExporter,
    get_exporter,
    set_exporter,
    set_exporter_factory,
)
from tracestitch.instrument import report
from tracestitch.settings import (
    AUTO,
    SettingError,
    Settings,
    parse_compression,
    parse_seconds,
    parse_size,
    parse_url,
    read_env,
)

if TYPE_CHECKING:
    from pathlib import Path

    from tracestitch.export.sink import Sink
    from tracestitch.export.worker import BatchExporter

__all__ = ["configure", "exporter_from_env", "install_from_env"]

logger = logging.getLogger("tracestitch.export")

#: ``configure``'s exporter options that take a size or a number of seconds.
_SIZES = ("max_queue_bytes", "spool_max_bytes", "max_batch_bytes", "item_estimate")
_SECONDS = ("shutdown_timeout", "shutdown_max", "post_open_after")


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

    root = _default_spool_root() if spool_dir == AUTO else Path(spool_dir)
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
    otlp_settings = settings.get("otlp_settings")
    if otlp_settings is not None:
        keys.append(f"otlp {otlp_settings.traces_endpoint}")
    return keys


def _has_spooled_runs(settings: Mapping[str, Any]) -> bool:
    """Whether a spool of a destination in ``settings`` holds runs an earlier process left.
    Cheap when there is none (one ``stat`` of the spool root): it runs at import."""
    spool_dir = settings.get("spool_dir")
    if spool_dir is None:
        return False
    if spool_dir == AUTO:
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


def _checked_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """``configure``'s exporter options, sizes and durations checked (``ValueError``)."""
    checked = dict(options)
    for key, value in options.items():
        if key in _SIZES:
            checked[key] = parse_size(key, value)
        elif key in _SECONDS:
            checked[key] = parse_seconds(key, value)
        elif key == "flush_interval":
            checked[key] = parse_seconds(key, value, allow_zero=False)
    return checked


def configure(
    *,
    endpoint: str | None = None,
    api_key: str | None = None,
    project: str | None = None,
    enabled: bool | None = None,
    otlp_endpoint: str | None = None,
    otlp_headers: Mapping[str, str] | None = None,
    otlp_settings: OTLPSettings | None = None,
    console: bool = False,
    file: str | os.PathLike[str] | None = None,
    sinks: list[Sink] | None = None,
    extra_endpoints: Mapping[str, str | None] | None = None,
    spool_dir: str | os.PathLike[str] | None = AUTO,
    compression: str = AUTO,
    install: bool = True,
    **exporter_options: Any,
) -> Exporter:
    """Build and install the process-wide exporter; returns it.

    Each destination (``endpoint`` for LangSmith-compatible ingest, ``otlp_endpoint`` (an
    OTLP/HTTP traces URL; or ``otlp_settings``, as read from the OTel environment variables),
    ``console``, ``file``, any ``sinks``) gets its own :class:`BatchExporter` (own queue, retries
    and spool), so a slow one cannot hold back another. ``spool_dir`` is ``"auto"`` (a per-user
    cache directory), a path, or ``None`` (no spool). ``exporter_options`` go to every
    ``BatchExporter`` (``max_queue_bytes`` and ``spool_max_bytes`` as a number of bytes or
    text such as ``"64MiB"``, ``shutdown_timeout``, ``flush_interval`` ...). A bad value
    raises ``ValueError`` naming it and the accepted forms, before anything changes. The
    previously installed exporter is flushed and shut down.

    >>> configure(endpoint="http://127.0.0.1:1984", project="demo", spool_dir=None)
    ... # doctest: +SKIP
    """
    if endpoint is not None:
        endpoint = parse_url("endpoint", endpoint)
    if otlp_endpoint is not None:
        otlp_endpoint = parse_url("otlp_endpoint", otlp_endpoint)
    if extra_endpoints:
        extra_endpoints = {parse_url("extra_endpoints", u): k for u, k in extra_endpoints.items()}
    if api_key is not None and (not api_key.isascii() or not api_key.strip().isprintable()):
        raise SettingError("api_key: must be printable ASCII (it is sent as a header)")
    if enabled is not None and not isinstance(enabled, bool):
        raise SettingError(f"enabled={enabled!r}: expected True or False")
    compression = parse_compression("compression", compression)
    exporter_options = _checked_options(exporter_options)

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
    if otlp_settings is not None:
        from tracestitch.export.otlp import OTLPSink

        otlp = OTLPSink.from_settings(otlp_settings)
        exporters.append(batch(otlp, f"otlp {otlp_settings.traces_endpoint}"))
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
        sigterm.install()
        previous = set_exporter(result)
        if previous is not result:
            previous.shutdown(0.5)
    return result


def _otlp_from_env(env: Mapping[str, str]) -> OTLPSettings | None:
    """The OTLP destination the OTel variables (and ``TRACESTITCH_OTLP_ENDPOINT``) name; what
    cannot be used is one warning line each, as for every other setting."""
    try:
        otlp = otlp_settings_from_env(env)
    except OTLPConfigError as exc:
        logger.warning("tracestitch: OTLP export off: %s", exc)
        return None
    for problem in otlp.problems if otlp is not None else ():
        logger.warning("tracestitch: %s", problem)
    return otlp


def _configure_args(settings: Settings, env: Mapping[str, str]) -> dict[str, Any] | None:
    """``configure`` keyword arguments for ``settings`` (and the OTel variables in ``env``);
    ``None`` when they name no destination or tracing is switched off."""
    if not settings.enabled:
        return None
    otlp = _otlp_from_env(env)
    if not (settings.destinations() or otlp):
        return None
    return {
        "endpoint": settings.endpoint,
        "api_key": settings.api_key,
        "project": settings.project if settings.project != "default" else None,
        "otlp_settings": otlp,
        "console": settings.console,
        "file": settings.file,
        "extra_endpoints": settings.extra_endpoints,
        "spool_dir": settings.spool_dir,
        "compression": settings.compression,
        **settings.exporter_options(),
    }


def exporter_from_env(env: Mapping[str, str] | None = None) -> Exporter | None:
    """Build (without installing) the exporter the environment describes, or ``None``."""
    env = os.environ if env is None else env
    args = _configure_args(read_env(env, warn=False), env)
    if args is None:
        return None
    return configure(install=False, **args)


def install_from_env(env: Mapping[str, str] | None = None) -> bool:
    """Register a lazy factory for the exporter the environment describes (built on first
    use). Returns whether the environment named a destination.

    Called by ``import tracestitch``, so it must stay cheap and safe: it reads the
    environment, registers a factory and does nothing else (no thread, no socket, no heavy
    import), and never raises: a setting it cannot take is one warning line naming the
    variable and the accepted forms, and that setting keeps its default. The one exception to
    "no thread": when the destination's spool holds runs an earlier process left (one
    ``stat`` tells), the exporter is started at once, so a restarted service replays them even
    if it never makes a run. Calling it again registers a fresh factory in place of the
    installed exporter.
    """
    try:
        env = os.environ if env is None else env
        args = _configure_args(read_env(env), env)
    except Exception as exc:  # never break `import tracestitch` over an odd environment
        report("export.settings", exc)
        return False
    if args is None:
        return False
    settings = args

    def factory() -> Exporter:
        # On the first request's path: hand back a stand-in at once and build on a thread;
        # the stand-in takes the real exporter's place in the slot once it is built.
        from tracestitch.export.deferred import DeferredExporter

        def build() -> Exporter:
            return configure(install=False, **settings)

        return DeferredExporter(
            build,
            shutdown_timeout=settings["shutdown_timeout"],
            shutdown_max=settings["shutdown_max"],
        ).start()

    set_exporter_factory(factory)
    # Runs will leave this process: make SIGTERM deliver them too (atexit does not run).
    sigterm.install()
    try:
        if _has_spooled_runs(settings):
            get_exporter()  # runs the factory: the exporter's sender replays the spool
    except Exception as exc:
        report("export.spool_check", exc)
    return True

"""Running the collector: default paths, the API-key policy and the uvicorn server.

Policy: on a loopback address the collector may run open (development); on any other address it
requires an API key. When none is given, one is generated on first start, stored next to the
database (mode 0600) and printed, and reused on later starts.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import sys
from pathlib import Path
from typing import Any, TextIO

__all__ = [
    "database_url",
    "default_db_path",
    "is_loopback",
    "resolve_api_key",
    "serve",
    "viewer_url",
]


def default_db_path() -> Path:
    """``$TRACESTITCH_DB``, else ``$XDG_DATA_HOME/tracestitch/traces.db``
    (``~/.local/share/tracestitch/traces.db`` when XDG_DATA_HOME is unset)."""
    if os.environ.get("TRACESTITCH_DB"):
        return Path(os.environ["TRACESTITCH_DB"]).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "tracestitch" / "traces.db"


def database_url() -> str | None:
    """``$TRACESTITCH_DATABASE_URL``: the PostgreSQL database to store in (None: SQLite)."""
    from tracestitch.settings import parse_database_url

    value = os.environ.get("TRACESTITCH_DATABASE_URL", "").strip()
    return parse_database_url("TRACESTITCH_DATABASE_URL", value) if value else None


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a hostname: it may resolve anywhere, so treat it as exposed


def viewer_url(host: str, port: int, api_key: str | None) -> str:
    """The address to open the viewer at: a wildcard bind is reached through loopback, and the
    key rides in the fragment (``#key=``), which the browser never sends to the server."""
    from urllib.parse import quote

    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    shown = f"[{host}]" if ":" in host else host
    fragment = f"#key={quote(api_key, safe='')}" if api_key else ""
    return f"http://{shown}:{port}/{fragment}"


#: A stored key shorter than this is damaged (ours are 43 characters).
MIN_STORED_KEY_LENGTH = 16


def resolve_api_key(host: str, api_key: str | None, db_path: Path, out: TextIO) -> str | None:
    """The key the collector will require (None = open), announcing the choice on ``out``."""
    if api_key:
        print("API key required (x-api-key header).", file=out)
        return api_key
    if is_loopback(host):
        print(
            f"WARNING: no API key: anyone on this machine can send and read traces ({host} is"
            " loopback). Pass --api-key KEY to require one.",
            file=out,
        )
        return None
    key_file = db_path.parent / "api_key"
    if key_file.exists():
        key = key_file.read_text().strip()
        # An empty or truncated file must never mean "open": refuse to start, say what to do.
        if len(key) < MIN_STORED_KEY_LENGTH:
            raise SystemExit(
                f"tracestitch serve: {key_file} holds no usable API key; delete it to have a new "
                "one generated, or pass --api-key KEY"
            )
        print(f"{host} is not loopback: requiring the API key stored in {key_file}", file=out)
        return key
    key = secrets.token_urlsafe(32)
    key_file.parent.mkdir(parents=True, exist_ok=True)
    # Written 0600 from the start (never world-readable) to a temporary name, then renamed:
    # a crash mid-write leaves no half-written key file behind.
    partial = key_file.with_name(f".api_key.{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(partial, key_file)
    print(
        f"{host} is not loopback, so an API key is required. Generated one (saved to {key_file}):"
        f"\n\n    {key}\n\nSend it as the x-api-key header (LANGSMITH_API_KEY for LangSmith SDKs).",
        file=out,
    )
    return key


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8700,
    db_path: Path | None = None,
    database: str | None = None,
    api_key: str | None = None,
    max_body_bytes: int | None = None,
    max_runs: int | None = None,
    max_age_days: float | None = None,
    out: TextIO | None = None,
) -> None:
    """Run the collector until interrupted. Prints ``listening on URL`` once bound.

    ``database``: a ``postgresql://`` URL to store in, shared with any other collectors
    pointed at it; otherwise the SQLite file ``db_path``. Given neither,
    ``$TRACESTITCH_DATABASE_URL``, else ``$TRACESTITCH_DB``, else the default SQLite file.
    """
    import uvicorn

    from .app import DEFAULT_MAX_BODY_BYTES, create_app
    from .trace_store import open_store

    stream = out or sys.stdout
    url = database or (None if db_path else database_url())
    path = db_path or default_db_path()
    if url and not api_key and not is_loopback(host):
        # Each collector would generate a key of its own: the senders need one for all.
        raise SystemExit(
            "tracestitch serve: collectors sharing a PostgreSQL database off loopback need"
            " the same --api-key (or TRACESTITCH_API_KEY) on each"
        )
    # The database first: a path that is no SQLite database fails here (sqlite3.DatabaseError)
    # before a key file is written next to it.
    store = open_store(
        url or path,
        max_runs=max_runs,
        max_age_s=max_age_days * 86_400 if max_age_days is not None else None,
    )
    try:
        key = resolve_api_key(host, api_key, path, stream)
    except BaseException:
        store.close()
        raise
    app = create_app(
        store,
        api_key=key,
        max_body_bytes=max_body_bytes or DEFAULT_MAX_BODY_BYTES,
        close_store=True,
    )
    print(f"database: {_shown(url) if url else path}", file=stream)

    class _Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.servers:
                bound = self.servers[0].sockets[0].getsockname()
                shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
                # Printed after binding, so port 0 reports the real port (tests read this line).
                print(f"listening on http://{shown}:{bound[1]}", file=stream, flush=True)
                print(f"viewer: {viewer_url(bound[0], bound[1], key)}", file=stream, flush=True)

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    _Server(config).run()


def _shown(url: str) -> str:
    # The database URL without its password, for the banner.
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))

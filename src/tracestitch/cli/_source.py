"""Where the read commands find traces: the collector's database directly (SQLite, or the
PostgreSQL database several collectors share), or a running collector's HTTP API."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from tracestitch.collector.multipart import MultipartBatch


class CLIError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""


class Source(Protocol):
    def traces(self, params: dict[str, Any]) -> dict[str, Any]: ...

    def trace(self, ref: str) -> dict[str, Any] | None: ...

    def export(self, ref: str) -> dict[str, Any] | None: ...

    def load(self, batch: MultipartBatch) -> int: ...


class DbSource:
    def __init__(self, path: Path, database: str | None = None) -> None:
        from tracestitch.collector.trace_store import TraceStore, open_store

        self.store: TraceStore
        if database is not None:
            # The PostgreSQL database several collectors share.
            try:
                self.store = open_store(database)
            except Exception as exc:
                if type(exc).__module__.startswith(("psycopg", "psycopg_pool")):
                    raise CLIError(f"cannot use the database {database}: {exc}") from None
                raise
            return
        if not path.exists():
            raise CLIError(
                f"no trace database at {path}. Start a collector with `tracestitch serve`,"
                " or point at one with --db PATH, --database URL or --url URL."
            )
        self.store = open_store(path)

    def traces(self, params: dict[str, Any]) -> dict[str, Any]:
        from tracestitch.collector.query import TraceFilter

        return self.store.list_traces(TraceFilter(**params))

    def trace(self, ref: str) -> dict[str, Any] | None:
        from tracestitch.collector.query import TraceRefError, resolve_trace_ref
        from tracestitch.collector.tree import build_trace

        try:
            trace_id = resolve_trace_ref(ref, self.store.trace_ids_with_prefix)
        except TraceRefError as exc:
            raise CLIError(f"{exc}; copy one from `tracestitch traces`") from None
        runs = self.store.trace_runs(trace_id) if trace_id else []
        if not trace_id or not runs:
            return None
        return build_trace(trace_id, runs, self.store.trace_summary(trace_id))

    def export(self, ref: str) -> dict[str, Any] | None:
        from tracestitch.collector.transfer import export_document

        doc = self.trace(ref)
        return export_document(doc, self.store.get_attachment) if doc is not None else None

    def load(self, batch: MultipartBatch) -> int:
        return self.store.ingest(batch.ops, batch.attachments, batch.feedback)


class HttpSource:
    def __init__(self, url: str, api_key: str | None) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key

    def _get(self, path: str, body: Any = None, content_type: str = "application/json") -> Any:
        import urllib.error
        import urllib.request

        headers = {"accept": "application/json"}
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            headers["content-type"] = content_type
        request = urllib.request.Request(self.url + path, data=data, headers=headers)
        if self.api_key:
            request.add_header("x-api-key", self.api_key)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            if exc.code == 401 and self.api_key:
                raise CLIError(
                    "the collector rejected the API key (--api-key or TRACESTITCH_API_KEY):"
                    " it is not the one it requires"
                ) from None
            if exc.code == 401:
                raise CLIError(
                    "the collector requires an API key: pass --api-key or set TRACESTITCH_API_KEY"
                ) from None
            try:
                detail = json.loads(exc.read()).get("detail")
            except (ValueError, AttributeError):
                detail = None
            raise CLIError(f"{self.url} answered {exc.code}: {detail or exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise CLIError(
                f"cannot reach the collector at {self.url} ({exc}). Is `tracestitch serve`"
                " running there?"
            ) from None

    def traces(self, params: dict[str, Any]) -> dict[str, Any]:
        from urllib.parse import urlencode

        # The API's names and units for the store's filter fields.
        names = {"text": "q", "min_duration_us": "min_duration_ms", "start_gte_us": "start_gte"}
        scale = {"min_duration_us": 1e3, "start_gte_us": 1e6}
        query = {
            names.get(k, k): (v / scale[k] if k in scale else v)
            for k, v in params.items()
            if v is not None
        }
        doc = self._get("/api/traces?" + urlencode(query))
        return doc if isinstance(doc, dict) else {"traces": [], "total": 0}

    def trace(self, ref: str) -> dict[str, Any] | None:
        from urllib.parse import quote

        doc = self._get(f"/api/traces/{quote(ref, safe='')}")
        return doc if isinstance(doc, dict) else None

    def export(self, ref: str) -> dict[str, Any] | None:
        from urllib.parse import quote

        doc = self._get(f"/api/traces/{quote(ref, safe='')}/export")
        return doc if isinstance(doc, dict) else None

    def load(self, batch: MultipartBatch) -> int:
        from tracestitch.collector.transfer import multipart_body

        content_type, body = multipart_body(batch)
        self._get("/runs/multipart", body, content_type)
        return len(batch.ops)


def open_source(args: argparse.Namespace) -> Source:
    """The source the read options name: ``--url``, else ``--database``, else ``--db``."""
    if args.url:
        return HttpSource(args.url, args.api_key or os.environ.get("TRACESTITCH_API_KEY"))
    from tracestitch.collector.server import default_db_path

    path = Path(args.db).expanduser() if args.db else default_db_path()
    return DbSource(path, database_option(args.database, bool(args.db)))


def database_option(value: str | None, db_given: bool) -> str | None:
    """``--database``, else (unless ``--db`` names a SQLite file) $TRACESTITCH_DATABASE_URL."""
    from tracestitch.collector.server import database_url
    from tracestitch.settings import SettingError, parse_database_url

    try:
        if value is not None:
            return parse_database_url("--database", value)
        return None if db_given else database_url()
    except SettingError as exc:
        raise CLIError(str(exc)) from None

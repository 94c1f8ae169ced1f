"""The ``tracestitch`` command: ``serve``, ``traces``, ``show``, ``tail``, ``export``,
``import`` and ``demo``.

``traces``/``show``/``tail`` read the collector's SQLite database directly by default (so they
work whether or not ``serve`` is running, and need no key on your own machine); ``--url`` reads a
running collector's HTTP API instead (``--api-key`` or ``$TRACESTITCH_API_KEY`` when it needs one).
Heavy imports happen inside each command, so ``tracestitch --help`` stays instant.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

__all__ = ["main"]

DB_HELP = "SQLite database (default: $TRACESTITCH_DB or ~/.local/share/tracestitch/traces.db)"


class CLIError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""


class _Source(Protocol):
    def traces(self, params: dict[str, Any]) -> dict[str, Any]: ...

    def trace(self, ref: str) -> dict[str, Any] | None: ...

    def post(self, runs: list[dict[str, Any]]) -> int: ...


class _DbSource:
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

    def post(self, runs: list[dict[str, Any]]) -> int:
        from tracestitch.collector.ingest import IngestError, validate_op

        try:
            ops = [validate_op("post", run, f"runs[{i}]") for i, run in enumerate(runs)]
        except IngestError as exc:
            raise CLIError(str(exc)) from None
        return self.store.ingest(ops)


class _HttpSource:
    def __init__(self, url: str, api_key: str | None) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key

    def _get(self, path: str, body: Any = None) -> Any:
        import urllib.error
        import urllib.request

        headers = {"accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["content-type"] = "application/json"
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

    def post(self, runs: list[dict[str, Any]]) -> int:
        self._get("/runs/batch", {"post": runs})
        return len(runs)


def _source(args: argparse.Namespace) -> _Source:
    if args.url:
        return _HttpSource(args.url, args.api_key or os.environ.get("TRACESTITCH_API_KEY"))
    from tracestitch.collector.server import default_db_path

    path = Path(args.db).expanduser() if args.db else default_db_path()
    return _DbSource(path, _database(args.database, bool(args.db)))


def _color(args: argparse.Namespace) -> bool:
    if args.color == "always":
        return True
    if args.color == "never" or os.environ.get("NO_COLOR"):
        return False
    return sys.stdout.isatty()


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def _since(text: str) -> float:
    """``--since``: a duration such as ``90s``, ``15m``, ``2h``, ``7d`` in seconds."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text.lower())
    if not found:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: a number and a unit, such as 90s, 15m, 2h, 7d, 1w"
        )
    return float(found[1]) * _UNITS[found[2]]


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port: 0 to 65535 (0 = any free)")
    return port


def _filters(args: argparse.Namespace, limit: int) -> dict[str, Any]:
    since = int((time.time() - args.since) * 1_000_000) if args.since is not None else None
    return {
        "project": args.project,
        "service": args.service,
        "status": args.status,
        "text": args.search,
        "start_gte_us": since,
        "limit": limit,
    }


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def _database(value: str | None, db_given: bool) -> str | None:
    # --database, else (unless --db names a SQLite file) $TRACESTITCH_DATABASE_URL.
    from tracestitch.collector.server import database_url
    from tracestitch.settings import SettingError, parse_database_url

    try:
        if value is not None:
            return parse_database_url("--database", value)
        return None if db_given else database_url()
    except SettingError as exc:
        raise CLIError(str(exc)) from None


def _cmd_serve(args: argparse.Namespace) -> int:
    import sqlite3

    from tracestitch.collector.migrations import SchemaTooNew
    from tracestitch.collector.pg_schema import SchemaTooNew as PgSchemaTooNew
    from tracestitch.collector.server import default_db_path, serve

    db = Path(args.db).expanduser() if args.db else default_db_path()
    database = _database(args.database, bool(args.db))
    try:
        serve(
            host=args.host,
            port=args.port,
            db_path=db,
            database=database,
            api_key=args.api_key or os.environ.get("TRACESTITCH_API_KEY"),
            max_body_bytes=int(args.max_body_mb * 1024 * 1024),
            max_runs=args.max_runs,
            max_age_days=args.max_age_days,
        )
    except (sqlite3.DatabaseError, SchemaTooNew, PgSchemaTooNew) as exc:
        raise CLIError(
            f"{database or db} is not a tracestitch database it can use ({exc}). Pass another"
            " --db path or --database URL."
        ) from None
    except OSError as exc:
        raise CLIError(f"cannot start the collector: {exc}. Try another --port or --db.") from None
    except Exception as exc:
        # Cannot connect, or refused: psycopg's errors (imported only with the extra).
        if type(exc).__module__.startswith(("psycopg", "psycopg_pool")):
            raise CLIError(f"cannot use the database {database}: {exc}") from None
        raise
    return 0


def _cmd_traces(args: argparse.Namespace) -> int:
    from tracestitch.collector.terminal import render_trace_line

    page = _source(args).traces(_filters(args, args.limit))
    if args.json:
        _print_json(page)
        return 0
    if not page["traces"]:
        filtered = any(v is not None for k, v in _filters(args, 0).items() if k != "limit")
        print("no traces match" if filtered else "no traces yet", file=sys.stderr)
    for trace in page["traces"]:
        print(render_trace_line(trace, color=_color(args)))
    return 0


def _load_trace(args: argparse.Namespace) -> dict[str, Any] | None:
    doc = _source(args).trace(args.trace_id)
    if doc is None:
        print(
            f"no trace {args.trace_id}; list the stored ones with `tracestitch traces`",
            file=sys.stderr,
        )
    return doc


def _cmd_show(args: argparse.Namespace) -> int:
    from tracestitch.collector.terminal import render_trace

    doc = _load_trace(args)
    if doc is None:
        return 1
    if args.json:
        _print_json(doc)
    else:
        print(render_trace(doc, color=_color(args), detail=args.detail))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from tracestitch.collector.transfer import export_document

    doc = _load_trace(args)
    if doc is None:
        return 1
    text = json.dumps(export_document(doc), indent=2, ensure_ascii=False, default=str)
    if args.output and args.output != "-":
        Path(args.output).write_text(text + "\n", encoding="utf-8")
        print(f"wrote {len(doc['runs'])} runs to {args.output}", file=sys.stderr)
    else:
        print(text)
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from tracestitch.collector.ingest import IngestError
    from tracestitch.collector.transfer import import_ops

    source = _source(args)
    for name in args.files:
        try:
            text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
            ops = import_ops(json.loads(text), name)
        except (OSError, ValueError, IngestError) as exc:
            raise CLIError(f"cannot import {name}: {exc}") from None
        count = source.post([op.data for op in ops])
        print(f"imported {count} runs from {name}", file=sys.stderr)
    return 0


def _cmd_tail(args: argparse.Namespace) -> int:
    from tracestitch.collector.terminal import render_trace_line

    source = _source(args)
    # Traces already stored are history, not news: remember them, print only what arrives next.
    seen = {t["trace_id"] for t in source.traces(_filters(args, 500))["traces"]}
    printed = 0
    deadline = time.monotonic() + args.timeout if args.timeout else None
    try:
        while args.max is None or printed < args.max:
            for trace in reversed(source.traces(_filters(args, 100))["traces"]):
                if trace["trace_id"] in seen:
                    continue
                seen.add(trace["trace_id"])
                print(render_trace_line(trace, color=_color(args)), flush=True)
                printed += 1
                if args.max is not None and printed >= args.max:
                    return 0
            if deadline is not None and time.monotonic() >= deadline:
                return 0
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    try:
        import importlib

        demo = importlib.import_module("tracestitch.demo")
    except ImportError as exc:
        raise CLIError(f"the demo is not available in this install ({exc})") from None
    result = demo.main(args.demo_args)
    return int(result or 0)


def _add_source_options(parser: argparse.ArgumentParser, *, color: bool = True) -> None:
    parser.add_argument("--db", help=DB_HELP)
    parser.add_argument(
        "--database",
        metavar="URL",
        help="read this PostgreSQL database instead (default: $TRACESTITCH_DATABASE_URL)",
    )
    parser.add_argument("--url", help="use a running collector's HTTP API instead of --db")
    parser.add_argument("--api-key", help="API key for --url (default: $TRACESTITCH_API_KEY)")
    if color:
        parser.add_argument(
            "--color", choices=("auto", "always", "never"), default="auto", help="ANSI colour"
        )


def _add_filter_options(parser: argparse.ArgumentParser) -> None:
    from tracestitch.collector.terminal import STATUS_WORDS

    parser.add_argument("--project", help="only traces of this project")
    parser.add_argument("--service", help="only traces touching this service")
    parser.add_argument("--status", choices=STATUS_WORDS, help="only traces with this status")
    parser.add_argument("--search", help="text to find in run names, inputs, outputs, errors")
    parser.add_argument(
        "--since", type=_since, metavar="DURATION", help="only traces started within: 15m, 2h, 7d"
    )


TRACE_ID_HELP = "trace id, or 8 or more of its first characters (from `tracestitch traces`)"


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``tracestitch`` command."""
    parser = argparse.ArgumentParser(
        prog="tracestitch", description="Distributed traces on the LangSmith run model."
    )
    from tracestitch.version import __version__

    parser.add_argument("--version", action="version", version=f"tracestitch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser(
        "serve",
        help="run the collector and web viewer",
        description=(
            "Run the LangSmith-compatible collector and the web viewer. Off loopback an API key is"
            " required (generated and printed on first start when not given)."
        ),
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8700, help="port (default 8700; 0 = any free)")
    p.add_argument("--db", help=DB_HELP)
    p.add_argument(
        "--database",
        metavar="URL",
        help="store in this PostgreSQL database instead, shared by any number of collectors"
        " (postgresql://user@host:5432/db; default: $TRACESTITCH_DATABASE_URL)",
    )
    p.add_argument("--api-key", help="require this x-api-key (default: $TRACESTITCH_API_KEY)")
    p.add_argument("--max-body-mb", type=float, default=20.0, help="request body limit (MB)")
    p.add_argument("--max-runs", type=int, help="keep at most this many runs (oldest traces go)")
    p.add_argument("--max-age-days", type=float, help="drop traces older than this")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser(
        "traces",
        help="list recent traces, one per line",
        description=(
            "List recent traces, newest first: time, id, status, duration, runs, root, services."
        ),
    )
    _add_source_options(p)
    _add_filter_options(p)
    p.add_argument("-n", "--limit", type=int, default=20, help="how many (default 20)")
    p.add_argument("--json", action="store_true", help="print the API's JSON page instead")
    p.set_defaults(func=_cmd_traces)

    p = sub.add_parser(
        "show",
        help="print one trace as a tree",
        description=("Print a trace as a tree with durations, services and errors."),
    )
    p.add_argument("trace_id", help=TRACE_ID_HELP)
    _add_source_options(p)
    p.add_argument(
        "--detail", action="store_true", help="each run's inputs, outputs, metadata, whole error"
    )
    p.add_argument("--json", action="store_true", help="print the API's JSON document instead")
    p.set_defaults(func=_cmd_show)

    p = sub.add_parser(
        "export",
        help="write one trace as a JSON file",
        description=(
            "Write a trace's runs (LangSmith wire runs) as one JSON document, for"
            " `tracestitch import` into another collector. Attachments and feedback stay behind."
        ),
    )
    p.add_argument("trace_id", help=TRACE_ID_HELP)
    p.add_argument("-o", "--output", help="file to write (default: standard output)")
    _add_source_options(p, color=False)
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser(
        "import",
        help="load traces written by `tracestitch export`",
        description="Store the runs of export files (`-`: standard input) in --db or at --url.",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="export files")
    _add_source_options(p, color=False)
    p.set_defaults(func=_cmd_import)

    p = sub.add_parser(
        "tail",
        help="follow new traces as they arrive",
        description=("Print each new trace as it arrives, until Ctrl-C, --max or --timeout."),
    )
    _add_source_options(p)
    _add_filter_options(p)
    p.add_argument("--interval", type=float, default=1.0, help="poll interval in seconds")
    p.add_argument("--max", type=int, help="stop after this many traces")
    p.add_argument("--timeout", type=float, help="stop after this many seconds")
    p.set_defaults(func=_cmd_tail)

    p = sub.add_parser("demo", help="run the multi-service demo", add_help=False)
    p.add_argument("demo_args", nargs=argparse.REMAINDER, help="arguments for the demo")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tracestitch`` console script; returns the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["demo"]:
        # argparse's REMAINDER does not capture options (`demo --keep`): hand them over whole.
        args = argparse.Namespace(func=_cmd_demo, demo_args=arguments[1:])
    else:
        args = build_parser().parse_args(arguments)
    try:
        return int(args.func(args))
    except CLIError as exc:
        print(f"tracestitch: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # `tracestitch traces | head`: the reader has gone. Stop quietly, as Unix tools do, and
        # point stdout at /dev/null so the interpreter's final flush cannot fail again.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a command killed by the pipe


if __name__ == "__main__":
    sys.exit(main())

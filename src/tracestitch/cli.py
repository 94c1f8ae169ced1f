"""The ``tracestitch`` command: ``serve``, ``traces``, ``show``, ``tail`` and ``demo``.

``traces``/``show``/``tail`` read the collector's SQLite database directly by default (so they
work whether or not ``serve`` is running, and need no key on your own machine); ``--url`` reads a
running collector's HTTP API instead (``--api-key`` or ``$TRACESTITCH_API_KEY`` when it needs one).
Heavy imports happen inside each command, so ``tracestitch --help`` stays instant.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

__all__ = ["main"]

DB_HELP = "SQLite database (default: $TRACESTITCH_DB or ~/.local/share/tracestitch/traces.db)"


class CLIError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""


class _Source(Protocol):
    def traces(self, params: dict[str, Any]) -> dict[str, Any]: ...

    def trace(self, trace_id: str) -> dict[str, Any] | None: ...


class _DbSource:
    def __init__(self, path: Path) -> None:
        if not path.exists():
            raise CLIError(
                f"no trace database at {path}. Start a collector with `tracestitch serve`,"
                " or point at one with --db PATH or --url URL."
            )
        from tracestitch.collector.store import Store

        self.store = Store(path)

    def traces(self, params: dict[str, Any]) -> dict[str, Any]:
        from tracestitch.collector.query import TraceFilter

        return self.store.list_traces(TraceFilter(**params))

    def trace(self, trace_id: str) -> dict[str, Any] | None:
        from tracestitch.collector.tree import build_trace

        runs = self.store.trace_runs(trace_id)
        if not runs:
            return None
        return build_trace(trace_id, runs, self.store.trace_summary(trace_id))


class _HttpSource:
    def __init__(self, url: str, api_key: str | None) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key

    def _get(self, path: str) -> Any:
        import json
        import urllib.error
        import urllib.request

        request = urllib.request.Request(self.url + path, headers={"accept": "application/json"})
        if self.api_key:
            request.add_header("x-api-key", self.api_key)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            if exc.code == 401:
                raise CLIError(
                    "the collector wants an API key: pass --api-key or set TRACESTITCH_API_KEY"
                ) from None
            raise CLIError(f"{self.url} answered {exc.code}: {exc.read()[:200]!r}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise CLIError(
                f"cannot reach the collector at {self.url} ({exc}). Is `tracestitch serve`"
                " running there?"
            ) from None

    def traces(self, params: dict[str, Any]) -> dict[str, Any]:
        from urllib.parse import urlencode

        names = {"text": "q", "min_duration_us": "min_duration_ms"}
        query = {
            names.get(k, k): (v / 1000 if k == "min_duration_us" else v)
            for k, v in params.items()
            if v is not None
        }
        doc = self._get("/api/traces?" + urlencode(query))
        return doc if isinstance(doc, dict) else {"traces": [], "total": 0}

    def trace(self, trace_id: str) -> dict[str, Any] | None:
        doc = self._get(f"/api/traces/{trace_id}")
        return doc if isinstance(doc, dict) else None


def _source(args: argparse.Namespace) -> _Source:
    if args.url:
        return _HttpSource(args.url, args.api_key or os.environ.get("TRACESTITCH_API_KEY"))
    from tracestitch.collector.server import default_db_path

    return _DbSource(Path(args.db).expanduser() if args.db else default_db_path())


def _color(args: argparse.Namespace) -> bool:
    if args.color == "always":
        return True
    if args.color == "never" or os.environ.get("NO_COLOR"):
        return False
    return sys.stdout.isatty()


def _filters(args: argparse.Namespace, limit: int) -> dict[str, Any]:
    return {
        "project": args.project,
        "service": args.service,
        "status": args.status,
        "text": args.search,
        "limit": limit,
    }


def _cmd_serve(args: argparse.Namespace) -> int:
    from tracestitch.collector.server import serve

    try:
        serve(
            host=args.host,
            port=args.port,
            db_path=Path(args.db).expanduser() if args.db else None,
            api_key=args.api_key or os.environ.get("TRACESTITCH_API_KEY"),
            max_body_bytes=int(args.max_body_mb * 1024 * 1024),
            max_runs=args.max_runs,
            max_age_days=args.max_age_days,
        )
    except OSError as exc:
        raise CLIError(f"cannot start the collector: {exc}. Try another --port or --db.") from None
    return 0


def _cmd_traces(args: argparse.Namespace) -> int:
    from tracestitch.collector.terminal import render_trace_line

    page = _source(args).traces(_filters(args, args.limit))
    if not page["traces"]:
        print("no traces yet", file=sys.stderr)
    for trace in page["traces"]:
        print(render_trace_line(trace, color=_color(args)))
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from tracestitch.collector.terminal import render_trace

    try:
        trace_id = str(uuid.UUID(args.trace_id))
    except ValueError:
        raise CLIError(
            f"{args.trace_id!r} is not a trace id; copy one from `tracestitch traces`"
        ) from None
    doc = _source(args).trace(trace_id)
    if doc is None:
        print(
            f"no trace {trace_id}; list the stored ones with `tracestitch traces`", file=sys.stderr
        )
        return 1
    print(render_trace(doc, color=_color(args)))
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


def _add_source_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", help=DB_HELP)
    parser.add_argument("--url", help="read a running collector's HTTP API instead of --db")
    parser.add_argument("--api-key", help="API key for --url (default: $TRACESTITCH_API_KEY)")
    parser.add_argument(
        "--color", choices=("auto", "always", "never"), default="auto", help="ANSI colour"
    )


def _add_filter_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--project", help="only traces of this project")
    parser.add_argument("--service", help="only traces touching this service")
    parser.add_argument("--status", choices=("success", "error", "pending"))
    parser.add_argument("--search", help="text to find in run names, inputs, outputs, errors")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``tracestitch`` command."""
    parser = argparse.ArgumentParser(
        prog="tracestitch", description="Distributed traces on the LangSmith run model."
    )
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
    p.add_argument("--port", type=int, default=8700, help="port (default 8700; 0 = any free)")
    p.add_argument("--db", help=DB_HELP)
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
    p.set_defaults(func=_cmd_traces)

    p = sub.add_parser(
        "show",
        help="print one trace as a tree",
        description=("Print a trace as a tree with durations, services and errors."),
    )
    p.add_argument("trace_id", help="trace id (from `tracestitch traces`)")
    _add_source_options(p)
    p.set_defaults(func=_cmd_show)

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


if __name__ == "__main__":
    sys.exit(main())

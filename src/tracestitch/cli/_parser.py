"""The ``tracestitch`` command's arguments: the parser, its subcommands and their options."""

from __future__ import annotations

import argparse
import re

from tracestitch.cli._commands import (
    cmd_demo,
    cmd_export,
    cmd_import,
    cmd_serve,
    cmd_show,
    cmd_tail,
    cmd_traces,
)

DB_HELP = "SQLite database (default: $TRACESTITCH_DB or ~/.local/share/tracestitch/traces.db)"

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
    p.set_defaults(func=cmd_serve)

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
    p.set_defaults(func=cmd_traces)

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
    p.set_defaults(func=cmd_show)

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
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "import",
        help="load traces written by `tracestitch export`",
        description="Store the runs of export files (`-`: standard input) in --db or at --url.",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="export files")
    _add_source_options(p, color=False)
    p.set_defaults(func=cmd_import)

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
    p.set_defaults(func=cmd_tail)

    p = sub.add_parser("demo", help="run the multi-service demo", add_help=False)
    p.add_argument("demo_args", nargs=argparse.REMAINDER, help="arguments for the demo")
    p.set_defaults(func=cmd_demo)
    return parser

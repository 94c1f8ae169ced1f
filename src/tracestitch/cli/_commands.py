"""What each ``tracestitch`` command does once its arguments are parsed. Heavy imports happen
inside each command, so ``tracestitch --help`` stays instant."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from tracestitch.cli._source import CLIError, database_option, open_source


def _color(args: argparse.Namespace) -> bool:
    if args.color == "always":
        return True
    if args.color == "never" or os.environ.get("NO_COLOR"):
        return False
    return sys.stdout.isatty()


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


def cmd_serve(args: argparse.Namespace) -> int:
    import sqlite3

    from tracestitch.collector.migrations import SchemaTooNew
    from tracestitch.collector.pg_schema import SchemaTooNew as PgSchemaTooNew
    from tracestitch.collector.server import default_db_path, serve

    db = Path(args.db).expanduser() if args.db else default_db_path()
    database = database_option(args.database, bool(args.db))
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


def cmd_traces(args: argparse.Namespace) -> int:
    from tracestitch.collector.terminal import render_trace_line

    page = open_source(args).traces(_filters(args, args.limit))
    if args.json:
        _print_json(page)
        return 0
    if not page["traces"]:
        filtered = any(v is not None for k, v in _filters(args, 0).items() if k != "limit")
        print("no traces match" if filtered else "no traces yet", file=sys.stderr)
    for trace in page["traces"]:
        print(render_trace_line(trace, color=_color(args)))
    return 0


def _load_trace(args: argparse.Namespace, *, export: bool = False) -> dict[str, Any] | None:
    source = open_source(args)
    doc = source.export(args.trace_id) if export else source.trace(args.trace_id)
    if doc is None:
        print(
            f"no trace {args.trace_id}; list the stored ones with `tracestitch traces`",
            file=sys.stderr,
        )
    return doc


def cmd_show(args: argparse.Namespace) -> int:
    from tracestitch.collector.terminal import render_trace

    doc = _load_trace(args)
    if doc is None:
        return 1
    if args.json:
        _print_json(doc)
    else:
        print(render_trace(doc, color=_color(args), detail=args.detail))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    doc = _load_trace(args, export=True)
    if doc is None:
        return 1
    text = json.dumps(doc, indent=2, ensure_ascii=False, default=str)
    if args.output and args.output != "-":
        Path(args.output).write_text(text + "\n", encoding="utf-8")
        print(
            f"wrote {len(doc['runs'])} runs, {len(doc['attachments'])} attachments and"
            f" {len(doc['feedback'])} feedback to {args.output}",
            file=sys.stderr,
        )
    else:
        print(text)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from tracestitch.collector.ingest import IngestError
    from tracestitch.collector.transfer import import_batch

    source = open_source(args)
    for name in args.files:
        try:
            text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
            batch = import_batch(json.loads(text), name)
        except (OSError, ValueError, IngestError) as exc:
            raise CLIError(f"cannot import {name}: {exc}") from None
        count = source.load(batch)
        print(f"imported {count} runs from {name}", file=sys.stderr)
    return 0


def cmd_tail(args: argparse.Namespace) -> int:
    from tracestitch.collector.terminal import render_trace_line

    source = open_source(args)
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


def cmd_demo(args: argparse.Namespace) -> int:
    try:
        import importlib

        demo = importlib.import_module("tracestitch.demo")
    except ImportError as exc:
        raise CLIError(f"the demo is not available in this install ({exc})") from None
    result = demo.main(args.demo_args)
    return int(result or 0)

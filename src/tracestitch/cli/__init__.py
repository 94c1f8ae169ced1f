"""The ``tracestitch`` command: ``serve``, ``traces``, ``show``, ``tail``, ``export``,
``import`` and ``demo``.

``traces``/``show``/``tail`` read the collector's SQLite database directly by default (so they
work whether or not ``serve`` is running, and need no key on your own machine); ``--url`` reads a
running collector's HTTP API instead (``--api-key`` or ``$TRACESTITCH_API_KEY`` when it needs one).
Heavy imports happen inside each command, so ``tracestitch --help`` stays instant.

Here: ``main``; the arguments in ``_parser.py``, what each command does in ``_commands.py``,
where the read commands find traces (database or HTTP API) in ``_source.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence

from tracestitch.cli._commands import cmd_demo
from tracestitch.cli._parser import build_parser
from tracestitch.cli._source import CLIError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tracestitch`` console script; returns the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["demo"]:
        # argparse's REMAINDER does not capture options (`demo --keep`): hand them over whole.
        args = argparse.Namespace(func=cmd_demo, demo_args=arguments[1:])
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

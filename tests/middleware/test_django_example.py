"""docs/architecture.md's adapter example is the shipped Django middleware's own code: every line
of the example is in ``tracestitch/middleware/django.py``, in the same order (``...`` skips
lines), so the page cannot drift from the module the conformance suite runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"
MODULE = ROOT / "src" / "tracestitch" / "middleware" / "django.py"


def _example() -> str:
    section = DOC.read_text(encoding="utf-8").split("## How to add an integration", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found is not None, "the section lost its example"
    return found.group(1)


def _missing(example: str, module: str) -> list[str]:
    """The example's lines not found in ``module`` after the one before them."""
    lines = module.splitlines()
    at, missing = 0, []
    for line in example.splitlines():
        if line.strip() in ("", "..."):
            continue
        try:
            at = lines.index(line, at) + 1
        except ValueError:
            missing.append(line)
    return missing


def test_the_example_is_short_and_real() -> None:
    example = _example()
    assert 20 <= len(example.splitlines()) <= 60
    assert "class _Exchange(Exchange):" in example and "def route_template" in example


def test_every_line_of_the_example_is_in_the_shipped_module_in_order() -> None:
    assert _missing(_example(), MODULE.read_text(encoding="utf-8")) == []


def test_the_check_sees_a_changed_line_and_a_changed_order() -> None:
    module = "a\nb\nc\n"
    assert _missing("a\n...\nc\n", module) == []
    assert _missing("a\nx\n", module) == ["x"]
    assert _missing("c\na\n", module) == ["a"]

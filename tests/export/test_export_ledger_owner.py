"""The export byte ledger is edited in one place: ``accounting.py`` owns the counters and the
bytes held in memory; the other stages call ``hold``/``release``/``settle``/``sent``/``drop``."""

from __future__ import annotations

import ast
from pathlib import Path

import tracestitch.export

EXPORT = Path(tracestitch.export.__file__).parent
LEDGER_FIELDS = {"mem_bytes", "settled", "counts", "drop_reasons"}


def _ledger_writes(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, field) of every assignment to a ledger field through an attribute."""
    found = []
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        for target in targets:
            if isinstance(target, ast.Subscript):  # counts["sent"] += 1
                target = target.value
            if isinstance(target, ast.Attribute) and target.attr in LEDGER_FIELDS:
                found.append((node.lineno, target.attr))
    return found


def test_only_accounting_writes_the_ledger() -> None:
    offenders = {
        path.name: writes
        for path in sorted(EXPORT.glob("*.py"))
        if path.name != "accounting.py" and (writes := _ledger_writes(ast.parse(path.read_text())))
    }
    assert offenders == {}


def test_the_check_sees_a_write() -> None:
    assert _ledger_writes(ast.parse("ledger.mem_bytes -= 5\nledger.counts['x'] += 1")) == [
        (1, "mem_bytes"),
        (2, "counts"),
    ]

"""`make bench`: every benchmark, each in its own process, then one summary of ratios.

Each module's ``run(quick)`` returns its rows; this prints them as a table per module and a
headline table (tracestitch vs bare, vs OpenTelemetry, vs the langsmith SDK). By default the
short variants run (a few minutes on 2 cores); ``--full`` runs the long ones the issue notes
quote (about 15 minutes).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import machine  # noqa: E402

MODULES = [
    "bench_core",
    "bench_middleware",
    "bench_clients",
    "bench_e2e",
    "bench_export",
    "bench_collector",
    "bench_short_lived",
]
TIMEOUT = 1800  # bench_e2e --full: 14 service pairs x 5 rounds x 3,000 requests
MARK = "@@ROWS@@"


def _rows(module: str, quick: bool) -> list[dict[str, Any]]:
    code = (
        "import dataclasses, json, sys;"
        f"sys.path.insert(0, {str(HERE)!r});"
        f"import {module} as m;"
        f"rows = m.run({quick!r});"
        "rows = [dataclasses.asdict(r) if dataclasses.is_dataclass(r) else r for r in rows];"
        f"print({MARK!r} + json.dumps(rows, default=str))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=HERE.parent,
        check=False,
    )
    for line in done.stdout.splitlines():
        if line.startswith(MARK):
            return list(json.loads(line[len(MARK) :]))
    tail = "\n".join(done.stderr.strip().splitlines()[-15:])
    raise RuntimeError(f"{module} failed (exit {done.returncode}):\n{tail}")


def _flatten(row: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    return flat


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    return "" if value is None else str(value)


def print_rows(title: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n## {title}")
    flat = [_flatten(r) for r in rows]
    keys: list[str] = []
    for r in flat:
        keys += [k for k in r if k not in keys]
    table = [[_cell(r.get(k)) for k in keys] for r in flat]
    widths = [max(len(k), *(len(row[i]) for row in table)) for i, k in enumerate(keys)]
    print(" | ".join(k.ljust(w) for k, w in zip(keys, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for row in table:
        print(" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


def main(argv: list[str]) -> int:
    quick = "--full" not in argv
    only = [a for a in argv if not a.startswith("-")]
    print(f"tracestitch benchmarks ({'quick' if quick else 'full'}) on {machine()}")
    results: dict[str, list[dict[str, Any]]] = {}
    failed = 0
    for module in MODULES:
        if only and module not in only and module.removeprefix("bench_") not in only:
            continue
        started = time.perf_counter()
        try:
            results[module] = _rows(module, quick)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            failed += 1
            print(f"\n## {module}: FAILED\n{exc}")
            continue
        print_rows(f"{module} ({time.perf_counter() - started:.0f} s)", results[module])
    from summary import print_summary

    print_summary(results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

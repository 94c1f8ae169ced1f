"""Hostile header sets through the three server middlewares, counted the way issue 11 counts them.

For each middleware (ASGI, WSGI, aiohttp) ``N`` generated hostile header sets (default 100,000)
go through the traced app and through the same app untraced; the table says, per middleware, how
many answers changed, how many exceptions escaped, how many outgoing trace headers ``http.client``
refuses (or that are not printable ASCII and well formed), how many runs were lost on the way to
the collector's ingest validation, and how many ops were exported as something other than a JSON
object. The harness (apps, echo server, checking sink) and the generator are the property tests'
own: ``tests/hostile/``. tracestitch runs as in production here (internal errors swallowed and
counted; the count is printed under the table).

    python bench/fuzz_headers.py                   # 100,000 sets per middleware
    python bench/fuzz_headers.py -n 2000 --seed 7  # a quick look
    python bench/fuzz_headers.py --only aiohttp -v # one middleware, first examples of each kind
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "hostile"))

from hostile_harness import MIDDLEWARES, Harness, internal_errors
from hostile_headers import hostile_set

from tracestitch import propagation
from tracestitch._guard import set_strict

COLUMNS = (
    "changed answers",
    "escaped exceptions",
    "outgoing headers http.client refuses",
    "lost runs",
    "ops exported as non-objects",
)
SETTLE_EVERY = 250  # sets between exporter flushes: batches span many requests, as in production


def fuzz(harness: Harness, middleware: str, n: int, seed: int, verbose: bool) -> dict[str, int]:
    rng = random.Random(f"{seed}-{middleware}")
    counts: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    errors_before = internal_errors()

    def note(kind: str, text: str) -> None:
        found = examples.setdefault(kind, [])
        if len(found) < 3:
            found.append(text)

    def settle() -> None:
        lost, non_objects, problems = harness.settle()
        counts["lost runs"] += len(lost)
        counts["ops exported as non-objects"] += non_objects
        for problem in problems:
            note("sink", problem)

    for i in range(n):
        pairs = hostile_set(rng)
        result = harness.run_set(middleware, pairs)
        if result.changed is not None:
            counts["changed answers"] += 1
            note("changed answers", f"{result.changed} for {pairs!r}")
        if result.escaped is not None:
            counts["escaped exceptions"] += 1
            note("escaped exceptions", f"{result.escaped} for {pairs!r}")
        if result.refused:
            counts["outgoing headers http.client refuses"] += len(result.refused)
            if any("http.client refuses" in p for p in result.refused):
                counts["of which http.client itself refuses"] += sum(
                    "http.client refuses" in p for p in result.refused
                )
            note("outgoing headers", f"{result.refused[0]} for {pairs!r}")
        if result.made < result.expected:
            counts["lost runs"] += result.expected - result.made  # never even made
            note("lost runs", f"{result.made} runs made for {pairs!r}")
        if (i + 1) % SETTLE_EVERY == 0:
            settle()
    settle()
    counts["internal errors swallowed"] = internal_errors() - errors_before
    if verbose:
        for kind, found in examples.items():
            print(f"\n{middleware}: first {kind}:", file=sys.stderr)
            for text in found:
                print(f"  {text[:600]}", file=sys.stderr)
    return dict(counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=100_000, help="sets per middleware")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--only", choices=MIDDLEWARES, action="append")
    parser.add_argument("-v", "--verbose", action="store_true", help="show first examples")
    args = parser.parse_args()
    set_strict(False)  # as in production: internal errors are swallowed (and counted)
    # One warning per kind of bad header is by design, and aiohttp logs every request its
    # parser refuses; what matters is counted.
    logging.disable(logging.ERROR)
    middlewares = tuple(args.only or MIDDLEWARES)
    harness = Harness(middlewares)
    harness.install()
    rows: dict[str, dict[str, int]] = {}
    started = time.monotonic()
    try:
        for middleware in middlewares:
            t0 = time.monotonic()
            rows[middleware] = fuzz(harness, middleware, args.n, args.seed, args.verbose)
            print(
                f"{middleware}: {args.n:,} sets in {time.monotonic() - t0:,.0f} s",
                file=sys.stderr,
                flush=True,
            )
    finally:
        harness.close()
    print(f"\n{args.n:,} hostile header sets per middleware (seed {args.seed})\n")
    print("| | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for middleware, counts in rows.items():
        cells = " | ".join(f"{counts.get(c, 0):,}" for c in COLUMNS)
        label = {"asgi": "ASGI", "wsgi": "WSGI"}.get(middleware, middleware)
        print(f"| {label} | {cells} |")
    print()
    for middleware, counts in rows.items():
        swallowed = counts.get("internal errors swallowed", 0)
        refused = counts.get("of which http.client itself refuses", 0)
        print(
            f"{middleware}: internal errors swallowed {swallowed:,}; "
            f"outgoing headers http.client itself refuses {refused:,}"
        )
    top = sorted(propagation.stats().items(), key=lambda kv: -kv[1])
    print("\nincoming headers ignored and counted (propagation.stats()):")
    print("  " + ", ".join(f"{k} {v:,}" for k, v in top))
    print(f"\n{time.monotonic() - started:,.0f} s in all")


if __name__ == "__main__":
    main()

"""The headline table of `make bench`: one line per target the issues set, with its ratio."""

from __future__ import annotations

from typing import Any

Rows = list[dict[str, Any]]


def _core(rows: Rows) -> list[tuple[str, str, str]]:
    out = []
    targets = {
        "hop": ("vs otel", 0.5, "vs langsmith", 0.03),
        "async @traceable": ("vs langsmith", 0.05),
    }
    for row in rows:
        case, ratios = row.get("case"), row.get("ratios") or {}
        if case not in targets:
            continue
        spec = targets[case]
        for key, target in zip(spec[::2], spec[1::2], strict=True):
            if key in ratios:
                out.append((f"core: {case} {key}", f"{ratios[key]:.3f}x", f"<= {target}x"))
    return out


def _middleware(rows: Rows) -> list[tuple[str, str, str]]:
    out = []
    for row in rows:
        variant, harness = row.get("variant"), row.get("harness")
        if variant == "bare":
            continue
        target = {"tracestitch": "<= 2.0x bare", "floor": "(reference)"}.get(variant, "(peer)")
        out.append(
            (f"{harness} middleware: {variant} CPU", f"{row['x_bare_cpu']:.2f}x bare", target)
        )
        if variant == "tracestitch":
            out.append(
                (
                    f"{harness} middleware: RSS growth",
                    f"{row['rss_growth_mib']:.2f} MiB",
                    "<= 2 MiB",
                )
            )
    return out


def _clients(rows: Rows) -> list[tuple[str, str, str]]:
    out = []
    for row in rows:
        if row.get("bench") == "per-call" and row.get("x_otel_added") is not None:
            out.append(
                (
                    f"client {row['client']}: added cost",
                    f"{row['x_otel_added']:.2f}x otel's",
                    "<= 0.5x",
                )
            )
    return out


def _end_to_end(rows: Rows) -> list[tuple[str, str, str]]:
    out = []
    for row in rows:
        if row.get("mode") == "untraced":
            continue
        target = ">= 0.95x" if row["mode"] == "tracestitch" else "(peer)"
        out.append(
            (
                f"end to end {row['server']}: {row['mode']} throughput",
                f"{row['x_untraced_rps']:.3f}x untraced",
                target,
            )
        )
        out.append(
            (
                f"end to end {row['server']}: {row['mode']} CPU A+B",
                f"{row['x_untraced_cpu']:.3f}x untraced",
                "",
            )
        )
    return out


def _generic(name: str, rows: Rows) -> list[tuple[str, str, str]]:
    out = []
    for row in rows:
        ratios = row.get("ratios") or {}
        label = row.get("case") or row.get("name") or ""
        for key, value in ratios.items():
            out.append((f"{name}: {label} {key}", f"{value:.3f}x", ""))
    return out


def print_summary(results: dict[str, Rows]) -> None:
    lines: list[tuple[str, str, str]] = []
    lines += _core(results.get("bench_core", []))
    lines += _middleware(results.get("bench_middleware", []))
    lines += _clients(results.get("bench_clients", []))
    lines += _end_to_end(results.get("bench_e2e", []))
    lines += _generic("export", results.get("bench_export", []))
    if not lines:
        return
    print("\n## summary: tracestitch against its targets")
    width = max(len(what) for what, _, _ in lines)
    value_width = max(len(value) for _, value, _ in lines)
    for what, value, target in lines:
        print(f"{what.ljust(width)}  {value.ljust(value_width)}  {target}")

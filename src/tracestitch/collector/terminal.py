"""Plain-text rendering of traces for terminals (``tracestitch show``/``traces``, the demo).

Input is the JSON the query API returns, so a renderer works the same on the HTTP API's answer
and on :func:`tracestitch.collector.tree.build_trace` output read straight from the database.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from tracestitch.status import ERROR, PENDING, STATUS_WORDS, SUCCESS

from .runs import error_summary

__all__ = ["STATUS_WORDS", "error_summary", "render_trace", "render_trace_line"]

_RESET = "\x1b[0m"
_DIM = "\x1b[2m"
_BOLD = "\x1b[1m"
_RED = "\x1b[31m"
_GREEN = "\x1b[32m"
_YELLOW = "\x1b[33m"
_SERVICE_COLOURS = ("\x1b[36m", "\x1b[35m", "\x1b[34m", "\x1b[33m", "\x1b[32m", "\x1b[96m")
# The status words (tracestitch.status: the API's own, in the CLI and the viewer alike).
_STATUS = {SUCCESS: (SUCCESS, _GREEN), ERROR: (ERROR, _RED), PENDING: (PENDING, _YELLOW)}
#: Characters of one input, output or metadata document shown by ``show --detail``.
_DETAIL_LIMIT = 4000


def _paint(text: str, code: str, color: bool) -> str:
    return f"{code}{text}{_RESET}" if color and text else text


def _ms(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "—"
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.1f} ms"


def _clean(text: Any, limit: int = 200) -> str:
    # Run names and errors come from the network: strip control characters so a hostile value
    # cannot drive the terminal (escape sequences, cursor moves, fake lines).
    out = "".join(ch if ch.isprintable() else " " for ch in str(text))
    return out if len(out) <= limit else out[: limit - 1] + "…"


def _json_lines(value: Any) -> list[str]:
    text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    if len(text) > _DETAIL_LIMIT:
        more = len(text) - _DETAIL_LIMIT
        text = text[:_DETAIL_LIMIT] + f"\n… {more} more characters (--json shows everything)"
    return text.splitlines()


def _detail_lines(run: dict[str, Any]) -> list[tuple[str, str]]:
    # (text, colour) lines shown under a run by ``show --detail``; the error is shown whole.
    out: list[tuple[str, str]] = []
    if run.get("error"):
        out.append(("error:", _RED))
        out += [("  " + line, _RED) for line in str(run["error"]).rstrip().splitlines()]
    extra = run["extra"] if isinstance(run.get("extra"), dict) else {}
    for label, value in (
        ("inputs", run.get("inputs")),
        ("outputs", run.get("outputs")),
        ("metadata", extra.get("metadata")),
    ):
        if value:
            out.append((f"{label}:", _DIM))
            out += [("  " + line, "") for line in _json_lines(value)]
    return out


def render_trace_line(trace: dict[str, Any], *, color: bool = False) -> str:
    """One line for a trace summary (an item of ``GET /api/traces``)."""
    start = trace.get("start_us")
    when = (
        datetime.fromtimestamp(start / 1e6, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        if isinstance(start, int)
        else "?"
    )
    label, code = _STATUS.get(str(trace.get("status")), (str(trace.get("status")), ""))
    services = ",".join(_clean(s, 40) for s in trace.get("services") or []) or "-"
    return "  ".join(
        [
            _paint(when, _DIM, color),
            str(trace.get("trace_id")),
            _paint(f"{label:<7}", code, color),
            f"{_ms(trace.get('duration_ms')):>10}",
            f"{trace.get('run_count', 0):>4} runs",
            _paint(_clean(trace.get("name") or "(root missing)", 60), _BOLD, color),
            f"[{services}]",
        ]
    )


def render_trace(trace: dict[str, Any], *, color: bool = False, detail: bool = False) -> str:
    """The trace as an indented tree: name, run type, service, duration, status, errors.

    ``detail``: under each run, its inputs, outputs and metadata (as JSON) and its whole error.

    ``trace`` is a ``GET /api/traces/{id}`` document. Orphans (parent never arrived) and runs
    starting before their parent (clock skew) are marked.
    """
    summary = trace.get("summary") or {}
    runs: list[dict[str, Any]] = trace.get("runs") or []
    services = sorted({str(r["service"]) for r in runs if r.get("service")})
    colours = {s: _SERVICE_COLOURS[i % len(_SERVICE_COLOURS)] for i, s in enumerate(services)}
    head = [
        _paint(f"trace {trace.get('trace_id')}", _BOLD, color),
        f"{len(runs)} runs",
        f"services: {', '.join(_clean(s, 40) for s in services) or '-'}",
    ]
    if summary.get("total_tokens"):
        head.append(f"tokens: {summary['total_tokens']}")
    if summary.get("total_cost"):
        head.append(f"cost: ${summary['total_cost']:.4f}")
    lines = ["  ".join(head)]
    # Whether each ancestor level still has siblings below decides "│" vs blank in the prefix.
    depths = [int(r.get("depth") or 0) for r in runs]
    # A run is the last of its siblings when no later run sits at its depth before the tree
    # climbs above it: one backwards pass, tracking the depths that still have runs below.
    last_flags = [False] * len(runs)
    open_depths: set[int] = set()
    for i in range(len(runs) - 1, -1, -1):
        last_flags[i] = depths[i] not in open_depths
        open_depths = {d for d in open_depths if d < depths[i]} | {depths[i]}
    last_at_depth: dict[int, bool] = {}
    for i, run in enumerate(runs):
        depth, is_last = depths[i], last_flags[i]
        last_at_depth[depth] = is_last
        prefix = "".join("   " if last_at_depth.get(d) else "│  " for d in range(depth))
        branch = "└─ " if is_last else "├─ "
        label, code = _STATUS.get(str(run.get("status")), ("?", ""))
        service = run.get("service")
        parts = [
            _paint(_clean(run.get("name") or "(unnamed)", 80), _BOLD, color),
            _paint(f"[{run.get('run_type') or '?'}]", _DIM, color),
        ]
        if service:
            parts.append(_paint(_clean(service, 40), colours.get(service, ""), color))
        parts += [_ms(run.get("duration_ms")), _paint(label, code, color)]
        if run.get("total_tokens"):
            parts.append(f"{run['total_tokens']} tok")
        if run.get("orphan"):
            parts.append(_paint("(orphan: parent never arrived)", _YELLOW, color))
        if run.get("parent_outside"):
            parts.append(_paint("(parent outside tracestitch)", _YELLOW, color))
        if run.get("skew_us"):
            skew = _ms(run["skew_us"] / 1000)
            parts.append(_paint(f"(starts {skew} before its parent: clock skew)", _YELLOW, color))
        lines.append(prefix + branch + " ".join(parts))
        pad = prefix + ("   " if is_last else "│  ")
        if detail:
            for text, code in _detail_lines(run):
                lines.append(pad + _paint(_clean(text, 10_000), code, color))
        elif run.get("error"):
            lines.append(pad + _paint("! " + _clean(error_summary(run["error"]), 160), _RED, color))
    return "\n".join(lines)

"""What the collector reads off a wire run: post and patch merged, service, status, times.

Shared by the write path (the indexed columns of ``runs``) and the read path (the query API's
run views), so the two always agree.
"""

from __future__ import annotations

from typing import Any

from tracestitch.status import error_summary, status_of

from .ingest import parse_time_us

__all__ = ["error_summary", "merge_run", "overlay", "run_service", "run_status", "time_us"]


def overlay(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated with ``update``'s fields.

    None means "not sent" on the wire (the SDK serialises unset fields as null), so it never
    erases a value; ``extra`` is merged one level deep so a patch's metadata adds to the post's.
    """
    out = dict(base)
    for key, value in update.items():
        if value is None:
            continue
        old = out.get(key)
        if key == "extra" and isinstance(old, dict) and isinstance(value, dict):
            merged = {**old, **value}
            if isinstance(old.get("metadata"), dict) and isinstance(value.get("metadata"), dict):
                merged["metadata"] = {**old["metadata"], **value["metadata"]}
            out[key] = merged
        else:
            out[key] = value
    return out


def merge_run(post: dict[str, Any] | None, patch: dict[str, Any] | None) -> dict[str, Any]:
    """The run as the union of its post and patch, the patch's fields winning."""
    return overlay(post or {}, patch or {})


def run_service(run: dict[str, Any]) -> str | None:
    """The service a run belongs to: ``extra.metadata.service``, or None.

    Not the project: a plain ``@traceable`` or a LangSmith SDK run names no service, and
    showing its project as one would invent a service that does not exist.
    """
    extra = run.get("extra")
    metadata = extra.get("metadata") if isinstance(extra, dict) else None
    service = metadata.get("service") if isinstance(metadata, dict) else None
    return service if isinstance(service, str) else None


def run_status(run: dict[str, Any], end_us: int | None) -> str:
    """``error`` if the run reports one, else ``success`` once it has ended, else ``pending``."""
    return status_of(run.get("error"), end_us is not None)


def time_us(value: Any) -> int | None:
    """Epoch microseconds of an ISO-8601 time, or None for a missing or unreadable one."""
    if value is None:
        return None
    try:
        return parse_time_us(value)
    except (ValueError, OverflowError):
        return None

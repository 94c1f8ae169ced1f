"""The values a run is given, normalized: ids, dicts, errors, attachments, times.

Shared by :class:`tracestitch.run_tree.RunTree`'s constructor and its setters, and by nothing
on the request path that could do without them.
"""

from __future__ import annotations

import traceback
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from tracestitch import ids

__all__ = [
    "MAX_ERROR_CHARS",
    "TimeLike",
    "as_dict",
    "as_uuid",
    "format_error",
    "normalize_attachments",
    "root_ids",
]

#: A time as the LangSmith SDKs take it: a datetime, epoch milliseconds or ISO-8601 text.
TimeLike = datetime | float | int | str
#: The longest ``error`` a run keeps (summary and traceback together).
MAX_ERROR_CHARS = 16_384


def as_uuid(value: uuid.UUID | str) -> uuid.UUID:
    """``value`` as a UUID (text is parsed)."""
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def as_dict(value: Any, key: str) -> dict[str, Any]:
    """Inputs or outputs as a dict: ``None`` is empty, a dict is kept as it is (not copied:
    the caller handed it over), another mapping is copied, anything else is ``{key: value}``."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    if isinstance(value, Mapping):
        return dict(value)
    return {key: value}


def format_error(error: BaseException | str) -> str:
    """``"Type: message"`` then the traceback, as stored in a run's ``error`` (capped)."""
    if isinstance(error, str):
        return error[:MAX_ERROR_CHARS]
    summary = f"{type(error).__name__}: {error}"
    if error.__traceback__ is None:
        return summary[:MAX_ERROR_CHARS]
    tb = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return f"{summary}\n\n{tb}"[:MAX_ERROR_CHARS]


def normalize_attachments(value: Mapping[str, Any] | None) -> dict[str, tuple[str, bytes]]:
    """Attachments as ``{name: (mime type, bytes)}``, from that shape or the JS SDK's
    ``{name: {"mime_type": ..., "data": ...}}``; text data is encoded as UTF-8."""
    result: dict[str, tuple[str, bytes]] = {}
    for name, item in (value or {}).items():
        if isinstance(item, Mapping):  # the JS shape {"mime_type": ..., "data": ...}
            mime, data = item.get("mime_type"), item.get("data")
        else:
            mime, data = item
        if isinstance(data, str):
            data = data.encode("utf-8")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"attachment {name!r}: data must be bytes or str")
        result[str(name)] = (str(mime), bytes(data))
    return result


def root_ids(
    run_id: ids.RunId | None,
    trace_id: uuid.UUID | str | None,
    dotted_order: str | None,
    start_us: int,
) -> tuple[ids.RunId | None, str | None, ids.RunId | None, ids.RunId | None]:
    """A root run's (id, dotted order, trace id, parent id) from the keyword constructor's
    ``id``, ``trace_id`` and ``dotted_order``; ``None`` for what they leave to the run.

    An order given is the truth for ids not given (as ``from_dotted_order`` implies); ids
    given must agree with it (``ValueError``), since exporters read them from the order. A
    trace given without an order gets a root segment in front of the run's, so the order
    still names the trace (as the LangSmith server requires).
    """
    given_trace = None if trace_id is None else ids.run_id(trace_id)
    if dotted_order is not None:
        _, _, order_trace, order_id, order_parent = ids.parse_dotted_order(dotted_order)
        if run_id is None:
            run_id = order_id
        if run_id != order_id or (given_trace is not None and given_trace != order_trace):
            raise ValueError("id/trace_id do not match the dotted_order given")
        return run_id, dotted_order, order_trace, order_parent
    if given_trace is None:
        return run_id, None, None, None
    if run_id is None:
        run_id = ids.new_run_id()[0]
    if given_trace == run_id:
        return run_id, None, None, None
    root = ids.root_order(start_us, given_trace.text)
    return run_id, ids.child_order(root, start_us, run_id.text), given_trace, None

"""The floor's worker half (see :mod:`floor`): a record resolved into its ids, order and
inherited fields, turned into the LangSmith ingest dict tracestitch exports, serialized with
orjson, and handed in batches to a sink by :class:`FloorExporter`'s thread.
"""

from __future__ import annotations

import threading
import traceback
from collections import deque
from http import HTTPStatus
from typing import Any

import orjson
from floor_parse import (
    MAX_ERROR,
    MAX_HEADER,
    MAX_PATH,
    MAX_QUERY,
    RECORDED,
    env_project,
    hyphenated,
    iso,
    remote_parent,
    run_id,
    segment,
)

from tracestitch.redact import redact_query  # the redaction policy itself

__all__ = ["BATCH", "FloorExporter", "Resolved", "resolve", "serialize", "to_wire"]

BATCH = 200
FLUSH_INTERVAL = 0.2


class Resolved:
    """A run's computed identity and inherited fields."""

    __slots__ = (
        "address",
        "ancestor",
        "id_int",
        "id_text",
        "meta",
        "order",
        "parent_text",
        "project",
        "sampled",
        "skew",
        "start_us",
        "tags",
        "trace",
    )


def resolve(run: Any) -> Resolved:
    r = run.r
    if r is not None:
        return r
    r = Resolved()
    r.id_int = value = run_id(run.start_ns, run.seq)
    r.id_text = id_text = hyphenated(value)
    r.ancestor = None
    start = run.start_ns // 1000
    parent = run.parent if not run.is_server else None
    if parent is not None:
        p = resolve(parent)
        start += p.skew
        if start < p.start_us:  # a child never starts before its parent (LangSmith's rule)
            start = p.start_us
        r.order = f"{p.order}.{segment(start, id_text)}"
        r.trace, r.parent_text, r.skew, r.sampled = p.trace, p.id_text, p.skew, p.sampled
        r.meta, r.tags, r.project, r.address = p.meta, p.tags, p.project, p.address
    elif run.is_server:
        _resolve_server(run, r, start)
        start = r.start_us
    else:  # a traced call outside any request: a root
        r.order = segment(start, id_text)
        r.trace, r.parent_text, r.skew, r.sampled = id_text, None, 0, True
        r.meta, r.tags, r.project, r.address = {}, [], env_project(), None
    r.start_us = start
    run.r = r
    return r


def _resolve_server(run: Any, r: Resolved, start: int) -> None:
    mw = run.mw
    own = mw._meta_by_server.get(run.server)
    if own is None:
        own = {"service": mw.service}
        if run.server:
            host, port = run.server
            own["server.address"] = str(host) if port is None else f"{host}:{port}"
        if len(mw._meta_by_server) < 64:
            mw._meta_by_server[run.server] = own
    remote = remote_parent(run.headers, start)
    r.project, r.address, r.sampled = mw.project, None, True
    if remote is None:
        r.order = segment(start, r.id_text)
        r.trace, r.parent_text, r.skew = r.id_text, None, 0
        r.meta, r.tags = own, []
    else:
        order, trace, parent_text, parent_us, fields = remote
        r.skew = parent_us - start if parent_us > start else 0
        start += r.skew
        r.order = f"{order}.{segment(start, r.id_text)}"
        r.trace, r.parent_text = trace, parent_text
        meta, tags, project, address, r.sampled, r.ancestor = fields
        r.meta = {**meta, **own} if meta else own
        r.tags = list(tags) if tags else []
        if project:
            r.project = project
        r.address = address
    r.start_us = start


# ---------------------------------------------------------------------------------------------
# The wire (worker)
# ---------------------------------------------------------------------------------------------

_status_text: dict[int, str] = {}


def _error_text(error: BaseException) -> str:
    summary = f"{type(error).__name__}: {error}"
    if error.__traceback__ is None:
        return summary[:MAX_ERROR]
    tb = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return f"{summary}\n\n{tb}"[:MAX_ERROR]


def _status_error(status: int) -> str:
    text = _status_text.get(status)
    if text is None:
        try:
            text = f"HTTP {status} {HTTPStatus(status).phrase}"
        except ValueError:
            text = f"HTTP {status}"
        if len(_status_text) < 100:
            _status_text[status] = text
    return text


def to_wire(run: Any) -> dict[str, Any] | None:
    """The LangSmith ingest dict of a finished run (``None``: sampled out by the caller)."""
    r = resolve(run)
    if not r.sampled:
        return None
    end_us = run.end_ns // 1000 + r.skew
    if end_us < r.start_us:
        end_us = r.start_us
    error = None
    if run.is_server:
        template = getattr(run.route, "path_format", None)
        if isinstance(template, str):
            prefix = run.root_path_end
            if prefix != run.root_path and prefix.startswith(run.root_path):
                template = prefix[len(run.root_path) :] + template
            name = f"{run.method} {template[:MAX_PATH]}"
        else:
            name = f"{run.method} {run.path[:MAX_PATH]}"
        extra: dict[str, Any] = {"span_kind": "server"}
        if isinstance(template, str):
            extra["route"] = template[:MAX_PATH]
        if r.ancestor is not None:
            extra["w3c_ancestor"] = r.ancestor
        inputs: dict[str, Any] = {"method": run.method, "path": run.path[:MAX_PATH]}
        if run.query:
            inputs["query"] = redact_query(run.query.decode("latin-1")[:MAX_QUERY])
        if run.client:
            inputs["client"] = run.client[0]
        recorded: dict[str, str] | None = None
        for key, value in run.headers:
            hname = RECORDED.get(key)
            if hname is not None:
                if recorded is None:
                    recorded = {}
                text = value.decode("latin-1")[:MAX_HEADER]
                before = recorded.get(hname)
                recorded[hname] = text if before is None else f"{before}, {text}"[:MAX_HEADER]
        if recorded:
            inputs["headers"] = recorded
        outputs: dict[str, Any] = {"status_code": run.status, "response_size": run.size}
        if run.incomplete:
            outputs["incomplete"] = True
        if run.error is not None:
            error = _error_text(run.error)
        elif run.status is not None and run.status >= 500:
            error = _status_error(run.status)
        run_type = "chain"
    else:
        spec = run.spec
        name, run_type = spec.name, spec.run_type
        extra = {}
        inputs = spec.inputs(run.args, run.kwargs)
        out = run.output
        outputs = out if isinstance(out, dict) else {"output": out}
        if run.error is not None:
            error = _error_text(run.error)
            outputs = {}
    if r.meta:
        extra["metadata"] = r.meta
    wire: dict[str, Any] = {
        "id": r.id_text,
        "name": name,
        "run_type": run_type,
        "start_time": iso(r.start_us),
        "trace_id": r.trace,
        "dotted_order": r.order,
        "session_name": r.project,
        "extra": extra,
        "tags": r.tags,
        "events": [],
    }
    if r.parent_text is not None:
        wire["parent_run_id"] = r.parent_text
    if r.address is not None:
        wire["address"] = r.address
        del wire["session_name"]
    wire["inputs"] = inputs
    wire["end_time"] = iso(end_us)
    if run.error is None or run.is_server:
        wire["outputs"] = outputs
    if error is not None:
        wire["error"] = error
    return wire


def _fallback(obj: Any) -> Any:
    """What orjson cannot encode: its text, never an exception (one odd value must not cost
    the batch)."""
    try:
        return repr(obj)[:1000]
    except Exception:
        return f"<unrepresentable {type(obj).__name__}>"


def serialize(run: Any) -> bytes | None:
    """One run as one JSON object (``None``: not exported)."""
    wire = to_wire(run)
    if wire is None:
        return None
    try:
        return orjson.dumps(wire, default=_fallback, option=orjson.OPT_NON_STR_KEYS)
    except Exception:  # text that is no Unicode, ints beyond 64 bits, cycles: their repr
        for key in ("inputs", "outputs", "extra"):
            wire[key] = {"repr": _fallback(wire.get(key))}
        return orjson.dumps(wire, default=_fallback)


class FloorExporter:
    """A deque the request path appends to, and one daemon thread that drains it in batches
    of at most :data:`BATCH`: resolve, build the wire dict, ``orjson.dumps``, hand the list of
    bodies to ``sink.send``. Woken when the queue reaches a batch, else every 0.2 s."""

    def __init__(self, sink: Any) -> None:
        self.sink = sink
        self.queue: deque[Any] = deque()
        self.wake = threading.Event()
        self.dropped = 0
        self.failed = 0
        self.sent = 0
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="floor-export", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        queue, wake = self.queue, self.wake
        while not self._stop:
            wake.wait(FLUSH_INTERVAL)
            wake.clear()
            while queue:
                batch: list[bytes] = []
                markers: list[threading.Event] = []
                while queue and len(batch) < BATCH:
                    run = queue.popleft()
                    if type(run) is threading.Event:
                        markers.append(run)
                        break
                    try:
                        body = serialize(run)
                    except Exception:
                        self.failed += 1
                        continue
                    if body is not None:
                        batch.append(body)
                if batch:
                    try:
                        self.sink.send(batch)
                        self.sent += len(batch)
                    except Exception:
                        self.failed += len(batch)
                for marker in markers:
                    marker.set()

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything submitted before the call has been handed to the sink."""
        if self._stop:
            return not self.queue
        marker = threading.Event()
        self.queue.append(marker)
        self.wake.set()
        return marker.wait(timeout)

    def shutdown(self, timeout: float = 5.0) -> None:
        """Flush, then stop the thread (once)."""
        if self._stop:
            return
        self.flush(timeout)
        self._stop = True
        self.wake.set()
        self._thread.join(timeout)

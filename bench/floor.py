"""The floor: what tracestitch's ASGI request path costs when the same work is done plainly.

A reference variant for the benches (``bench_middleware``'s ``"floor"``), not a library: a pure
ASGI middleware and a ``@traceable``-like decorator that make the same two runs (the server run
and its child) with the same wire fields as tracestitch's export, divided as the issue wants:

* **Request path: record raw values only.** The header list (a tuple copy of the ASGI pairs),
  integer clock reads (``time.time_ns``), a sequence number, a small ``__slots__`` record, one
  ``ContextVar`` set/reset, one ``deque`` append.
* **Worker thread: everything else.** Parsing the incoming context (``langsmith-trace`` and
  ``baggage``, else ``traceparent``/``tracestate``, with tracestitch's caps and validation:
  a bad header is a new root), choosing the recorded request headers, redacting the query,
  the UUIDv7 text, dotted orders, ISO times, binding the child's arguments to names, and one
  ``orjson.dumps`` per run into batches handed to an in-process sink (``common.DiscardSink``,
  which counts them as it counts tracestitch's).

Ids are deterministic in the record: a run's UUIDv7 is made from its start millisecond and its
sequence number (the 12-bit counter field, as RFC 9562 allows, and 62 bits from a keyed
splitmix64 of it), so a run's id and dotted order can be computed on demand by any thread
(:func:`current_headers`, what an outgoing call would inject) and always come out the same.

Left out, because the bench does not exercise them and they cost nothing when absent: sample
rates other than 1 (the W3C sampled flag is honoured), exclusions, ``langsmith-replicas``
(read, not followed), the response trace-id header, Starlette mount templates (a mounted
route is named with the concrete mount prefix), a client disconnect ending the run early (it
ends when the app returns, marked incomplete), fork handling.

    exporter = floor.install(DiscardSink())
    app.add_middleware(floor.FloorMiddleware, service="bench")
    child = floor.traceable(name="work")(work)
    ...
    exporter.flush(30)
"""

from __future__ import annotations

import inspect
import itertools
import sys
import time
from contextvars import ContextVar
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from floor_parse import env_project
from floor_wire import BATCH, FloorExporter, Resolved, resolve

__all__ = [
    "ChildRun",
    "FloorExporter",
    "FloorMiddleware",
    "ServerRun",
    "current_headers",
    "exporter",
    "install",
    "traceable",
]

MAX_QUEUE = 100_000  # runs waiting for the worker; beyond it, dropped and counted
_time_ns = time.time_ns
_next_seq = itertools.count(1).__next__
_current: ContextVar[Any] = ContextVar("floor_run", default=None)


# ---------------------------------------------------------------------------------------------
# The request path
# ---------------------------------------------------------------------------------------------


class ServerRun:
    """One request, as recorded: raw scope values at the start, status/size/route at the end."""

    is_server = True  # what the worker asks (the records' modules do not import each other)

    __slots__ = (
        "client",
        "done",
        "end_ns",
        "error",
        "headers",
        "incomplete",
        "method",
        "mw",
        "path",
        "query",
        "r",
        "root_path",
        "root_path_end",
        "route",
        "scope",
        "send_",
        "seq",
        "server",
        "size",
        "start_ns",
        "status",
    )

    def __init__(self, mw: FloorMiddleware, scope: dict[str, Any], send: Any) -> None:
        self.start_ns = _time_ns()
        self.seq = _next_seq()
        self.mw = mw
        self.scope = scope
        self.send_ = send
        self.method = scope["method"]
        self.path = scope["path"]
        self.query = scope.get("query_string")
        self.headers = tuple(scope.get("headers") or ())  # a later middleware may edit the list
        self.client = scope.get("client")
        self.server = scope.get("server")
        self.root_path = scope.get("root_path", "")
        self.status = None
        self.size = 0
        self.done = False
        self.incomplete = False
        self.error: BaseException | None = None
        self.r: Resolved | None = None

    async def send(self, message: Any) -> None:
        final = False
        if not self.done:
            try:
                kind = message["type"]
                if kind == "http.response.body":
                    body = message.get("body")
                    if body:
                        self.size += len(body)
                    final = not message.get("more_body", False)
                elif kind == "http.response.start":
                    self.status = message.get("status")
                else:
                    final = kind == "http.response.pathsend"
            except Exception:
                pass  # a message we cannot read is the server's to refuse, not ours
        await self.send_(message)
        if final:
            self.finish()

    def finish(self) -> None:
        if self.done:
            return
        self.done = True
        self.end_ns = _time_ns()
        scope = self.scope
        self.route = scope.get("route")
        self.root_path_end = scope.get("root_path", "")
        self.scope = None  # the record keeps only what it read
        _submit(self)


class ChildRun:
    """One call of a traced function, as recorded: its arguments and result are references
    (serialized later, as tracestitch does)."""

    is_server = False

    __slots__ = (
        "args",
        "end_ns",
        "error",
        "kwargs",
        "output",
        "parent",
        "r",
        "seq",
        "spec",
        "start_ns",
    )

    def __init__(self, spec: _Spec, parent: Any, args: tuple[Any, ...], kwargs: Any) -> None:
        self.start_ns = _time_ns()
        self.seq = _next_seq()
        self.spec = spec
        self.parent = parent
        self.args = args
        self.kwargs = kwargs
        self.output: Any = None
        self.error: BaseException | None = None
        self.r: Resolved | None = None


class FloorMiddleware:
    """Pure ASGI middleware: one :class:`ServerRun` per HTTP request; other scopes pass."""

    def __init__(self, app: Any, *, service: str, project: str | None = None) -> None:
        self.app = app
        self.service = service
        self.project = project or env_project()
        self._meta_by_server: dict[Any, dict[str, Any]] = {}  # worker only

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        run = ServerRun(self, scope, send)
        token = _current.set(run)
        try:
            await self.app(scope, receive, run.send)
        except BaseException as exc:
            run.error = exc
            raise
        finally:
            _current.reset(token)
            if not run.done:  # the app returned (or raised) before its last body chunk
                run.incomplete = run.error is None
                run.finish()


class _Spec:
    """What a decorated function's runs share: name, type, parameter names (read once)."""

    __slots__ = ("name", "names", "run_type", "skip_first", "var_positional")

    def __init__(self, fn: Any, name: str | None, run_type: str) -> None:
        self.name = name or getattr(fn, "__name__", "Unnamed")
        self.run_type = run_type
        try:
            params = list(inspect.signature(fn).parameters.values())
        except (TypeError, ValueError):
            params = []
        positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        self.names = tuple(p.name for p in params if p.kind in positional)
        self.skip_first = bool(self.names) and self.names[0] in ("self", "cls")
        self.var_positional = next(
            (p.name for p in params if p.kind is inspect.Parameter.VAR_POSITIONAL), "args"
        )

    def inputs(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        names = self.names
        inputs = dict(zip(names, args, strict=False))
        if self.skip_first and args:
            del inputs[names[0]]
        if len(args) > len(names):
            inputs[self.var_positional] = args[len(names) :]
        if kwargs:
            inputs.update(kwargs)
        return inputs


def traceable(name: str | None = None, run_type: str = "chain") -> Any:
    """Trace each call of a sync or async function as a child of the current run."""

    def decorate(fn: Any) -> Any:
        spec = _Spec(fn, name, run_type)
        if inspect.iscoroutinefunction(fn):

            async def traced_async(*args: Any, **kwargs: Any) -> Any:
                run = ChildRun(spec, _current.get(), args, kwargs)
                token = _current.set(run)
                try:
                    run.output = result = await fn(*args, **kwargs)
                    return result
                except BaseException as exc:
                    run.error = exc
                    raise
                finally:
                    _current.reset(token)
                    run.end_ns = _time_ns()
                    _submit(run)

            return traced_async

        def traced(*args: Any, **kwargs: Any) -> Any:
            run = ChildRun(spec, _current.get(), args, kwargs)
            token = _current.set(run)
            try:
                run.output = result = fn(*args, **kwargs)
                return result
            except BaseException as exc:
                run.error = exc
                raise
            finally:
                _current.reset(token)
                run.end_ns = _time_ns()
                _submit(run)

        return traced

    return decorate


def _submit(run: Any) -> None:
    exporter = _exporter
    if exporter is None:
        return
    queue = exporter.queue
    n = len(queue)
    if n >= MAX_QUEUE:
        exporter.dropped += 1
        return
    queue.append(run)
    if n + 1 == BATCH:
        exporter.wake.set()


def current_headers() -> dict[str, str]:
    """The current run's ``langsmith-trace``, ``baggage`` and ``traceparent`` for an outgoing
    call (computed on demand: the same values the worker computes for the run)."""
    run = _current.get()
    if run is None:
        return {}
    r = resolve(run)
    span = f"{r.id_int & 0xFFFFFFFFFFFFFFFF:016x}"
    trace_hex = r.trace.replace("-", "")
    if not r.sampled:
        return {"traceparent": f"00-{trace_hex}-{span}-00"}
    headers = {"langsmith-trace": r.order, "traceparent": f"00-{trace_hex}-{span}-01"}
    members = []
    user_meta = {k: v for k, v in r.meta.items() if k not in ("service", "server.address")}
    if user_meta:
        members.append("langsmith-metadata=" + _quote(orjson.dumps(user_meta).decode()))
    if r.tags:
        members.append("langsmith-tags=" + _quote(",".join(r.tags)))
    if r.address is not None:
        members.append("langsmith-address=" + _quote(r.address))
    elif r.project:
        members.append("langsmith-project=" + _quote(r.project))
    if members:
        headers["baggage"] = ",".join(members)
    return headers


def _quote(text: str) -> str:
    return quote(text, safe="")


_exporter: FloorExporter | None = None


def install(sink: Any) -> FloorExporter:
    """Make a :class:`FloorExporter` to ``sink`` the process's (replacing any earlier one)."""
    global _exporter
    previous, _exporter = _exporter, FloorExporter(sink)
    if previous is not None:
        previous.shutdown(1.0)
    return _exporter


def exporter() -> FloorExporter | None:
    """The installed exporter, if any."""
    return _exporter

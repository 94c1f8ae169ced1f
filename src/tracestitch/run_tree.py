"""``RunTree``: one run of a trace, and the operations the LangSmith SDKs define on it.

A plain ``__slots__`` class rather than a pydantic model: creating, linking and ending runs is on
every request's path, and validation there would cost more than the rest of the hop together
(see bench/). ``to_run()`` gives the validated :class:`tracestitch.schemas.Run` when it is wanted.

Times are integer microseconds since the epoch (``start_time_us``/``end_time_us``); the
``start_time``/``end_time`` properties give and take datetimes, epoch milliseconds or ISO text.
"""

from __future__ import annotations

import traceback
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from tracestitch import ids
from tracestitch.context import default_project, get_current_run_tree
from tracestitch.exporter import Exporter, dispatch

if TYPE_CHECKING:
    from tracestitch.propagation import RemoteParent
    from tracestitch.schemas import Run

__all__ = [
    "RunTree",
    "convert_to_dotted_order_format",
    "format_error",
    "is_run_tree",
    "is_runnable_config_like",
]

TimeLike = datetime | float | int | str
MAX_ERROR_CHARS = 16_384


_new = object.__new__


def _as_uuid(value: uuid.UUID | str) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def _as_dict(value: Any, key: str) -> dict[str, Any]:
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


def _normalize_attachments(value: Mapping[str, Any] | None) -> dict[str, tuple[str, bytes]]:
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


class RunTree:
    """A run: ids, timing, inputs and outputs, and its place in a (possibly distributed) trace.

    Example::

        root = RunTree(name="pipeline", inputs={"q": "hi"})
        child = root.create_child("llm-call", run_type="llm")
        child.end(outputs={"answer": "hello"})
        child.post()
        root.end()
        root.post()
    """

    __slots__ = (
        "__weakref__",
        "_children",
        "_id_text",
        "_remote",
        "_skew_us",
        "_tracestate",
        "address",
        "attachments",
        "child_execution_order",
        "distributed_parent_id",
        "dotted_order",
        "end_time_us",
        "error",
        "events",
        "execution_order",
        "exporter",
        "extra",
        "id",
        "inputs",
        "invocation_params",
        "metadata",
        "name",
        "on_end",
        "outputs",
        "parent_run",
        "parent_run_id",
        "project_name",
        "reference_example_id",
        "replicas",
        "run_type",
        "serialized",
        "start_time_us",
        "tags",
        "trace_id",
        "tracing_enabled",
    )

    id: uuid.UUID
    name: str
    run_type: str
    project_name: str
    #: An agent address (``lrn:agents/<id>/environments/<env>``) the run is sent to instead of
    #: its project, as LangSmith 0.14+ addresses runs; inherited from a caller that named one.
    address: str | None
    parent_run: RunTree | None
    parent_run_id: uuid.UUID | None
    start_time_us: int
    end_time_us: int | None
    extra: dict[str, Any]
    metadata: dict[str, Any]
    tags: list[str]
    error: str | None
    inputs: dict[str, Any]
    outputs: dict[str, Any] | None
    reference_example_id: uuid.UUID | None
    serialized: dict[str, Any] | None
    tracing_enabled: bool
    on_end: Callable[[RunTree], None] | None
    execution_order: int
    child_execution_order: int
    dotted_order: str
    trace_id: uuid.UUID
    attachments: dict[str, tuple[str, bytes]]
    replicas: list[dict[str, Any]] | None
    distributed_parent_id: uuid.UUID | None
    invocation_params: dict[str, Any] | None
    events: list[dict[str, Any]]
    exporter: Exporter | None
    _children: dict[int, RunTree] | None
    # (id, its text, trace_id, its text, parent_run_id, its text) as made at creation: the
    # text goes out with every export, and str(UUID) is slow. Trusted only while the UUIDs
    # are still the very objects it was made for (a field reassigned later is re-formatted).
    _id_text: tuple[uuid.UUID, str, uuid.UUID, str, uuid.UUID | None, str | None] | None
    _remote: bool
    _skew_us: int
    _tracestate: str | None

    def __init__(
        self,
        name: str = "Unnamed",
        run_type: str = "chain",
        *,
        id: uuid.UUID | str | None = None,
        project_name: str | None = None,
        session_name: str | None = None,
        parent_run: RunTree | None = None,
        parent_run_id: uuid.UUID | str | None = None,
        child_runs: Sequence[RunTree] | None = None,
        start_time: TimeLike | None = None,
        end_time: TimeLike | None = None,
        extra: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        tags: Sequence[str] | None = None,
        error: str | BaseException | None = None,
        inputs: Mapping[str, Any] | None = None,
        outputs: Mapping[str, Any] | None = None,
        reference_example_id: uuid.UUID | str | None = None,
        serialized: dict[str, Any] | None = None,
        tracing_enabled: bool | None = None,
        on_end: Callable[[RunTree], None] | None = None,
        execution_order: int = 1,
        child_execution_order: int | None = None,
        dotted_order: str | None = None,
        trace_id: uuid.UUID | str | None = None,
        attachments: Mapping[str, Any] | None = None,
        replicas: Sequence[Any] | None = None,
        distributed_parent_id: uuid.UUID | str | None = None,
        invocation_params: dict[str, Any] | None = None,
        events: list[dict[str, Any]] | None = None,
        exporter: Exporter | None = None,
        client: Exporter | None = None,
        address: str | None = None,
    ) -> None:
        self.id = ids.uuid7() if id is None else _as_uuid(id)
        self.name = name
        self.run_type = run_type
        self.end_time_us = None if end_time is None else ids.to_micros(end_time)
        extra_dict = dict(extra) if extra else {}
        meta = dict(extra_dict.pop("metadata", None) or {})
        if metadata:
            meta.update(metadata)
        self.extra = extra_dict
        self.tags = list(tags) if tags else []
        self.error = None if error is None else format_error(error)
        self.inputs = _as_dict(inputs, "input")
        self.outputs = None if outputs is None else _as_dict(outputs, "output")
        self.reference_example_id = (
            None if reference_example_id is None else _as_uuid(reference_example_id)
        )
        self.serialized = serialized
        self.on_end = on_end
        self.execution_order = execution_order
        self.child_execution_order = (
            execution_order if child_execution_order is None else child_execution_order
        )
        self.attachments = _normalize_attachments(attachments)
        self.distributed_parent_id = (
            None if distributed_parent_id is None else _as_uuid(distributed_parent_id)
        )
        self.invocation_params = invocation_params
        self.events = list(events) if events else []
        self._children = None
        self._remote = False
        self._id_text = None
        self.parent_run = parent_run
        if parent_run is not None:
            # Inherit the trace and its context; a child never starts before its parent
            # (LangSmith rejects that), and keeps the clock correction of a remote parent.
            self._skew_us = parent_run._skew_us
            start = (
                ids.now_micros() + self._skew_us
                if start_time is None
                else ids.to_micros(start_time)
            )
            if start < parent_run.start_time_us:
                start = parent_run.start_time_us
            self.start_time_us = start
            self.parent_run_id = parent_run.id
            self.trace_id = parent_run.trace_id
            self.dotted_order = f"{parent_run.dotted_order}.{ids.format_segment(start, self.id)}"
            self.project_name = project_name or session_name or parent_run.project_name
            # A project named here outranks an inherited address (as in the SDKs).
            self.address = address or (None if project_name or session_name else parent_run.address)
            if parent_run.metadata:
                meta = {**parent_run.metadata, **meta}
            if parent_run.tags:
                self.tags = [*parent_run.tags, *(t for t in self.tags if t not in parent_run.tags)]
            self.tracing_enabled = (
                parent_run.tracing_enabled if tracing_enabled is None else tracing_enabled
            )
            own = exporter if exporter is not None else client
            self.exporter = own if own is not None else parent_run.exporter
            self.replicas = list(replicas) if replicas else parent_run.replicas
            self._tracestate = parent_run._tracestate
            if parent_run_id is not None and _as_uuid(parent_run_id) != parent_run.id:
                raise ValueError("parent_run_id does not match parent_run.id")
        else:
            self._skew_us = 0
            self.start_time_us = (
                ids.now_micros() if start_time is None else ids.to_micros(start_time)
            )
            self.parent_run_id = None if parent_run_id is None else _as_uuid(parent_run_id)
            if dotted_order is not None:
                # The order is the truth for ids not given (as from_dotted_order implies);
                # ids given must agree with it, since exporters read them from the order.
                _, _, order_trace, order_id, order_parent = ids.parse_dotted_order(dotted_order)
                if id is None:
                    self.id = order_id
                if self.id != order_id or (
                    trace_id is not None and _as_uuid(trace_id) != order_trace
                ):
                    raise ValueError("id/trace_id do not match the dotted_order given")
                if self.parent_run_id is None:
                    self.parent_run_id = order_parent
                self.dotted_order = dotted_order
                self.trace_id = order_trace
            else:
                self.trace_id = self.id if trace_id is None else _as_uuid(trace_id)
                self.dotted_order = ids.format_segment(self.start_time_us, self.id)
                if self.trace_id != self.id:
                    # A known trace but no parent order: put a root segment in front so the
                    # order still names the trace (as the LangSmith server requires).
                    root = ids.format_segment(self.start_time_us, self.trace_id)
                    self.dotted_order = f"{root}.{self.dotted_order}"
            self.project_name = project_name or session_name or default_project()
            self.address = address
            self.tracing_enabled = True if tracing_enabled is None else tracing_enabled
            self.exporter = exporter if exporter is not None else client
            self.replicas = list(replicas) if replicas else None
            self._tracestate = None
        self.metadata = meta
        if child_runs:
            for child in child_runs:
                self._adopt(child)

    # ------------------------------------------------------------------ construction helpers

    @classmethod
    def _from_remote(cls, remote: RemoteParent, **inherit: Any) -> RunTree:
        """A stand-in for a caller's run in another process: children attach to it; it is never
        exported itself (the caller exports the real one)."""
        if inherit:
            inherit.setdefault("name", "parent")
            run = cls(
                id=remote.run_id,
                dotted_order=remote.dotted_order,
                trace_id=remote.trace_id,
                parent_run_id=remote.parent_run_id,
                **inherit,
            )
        else:  # every request with a trace header comes here: skip the keyword constructor
            run = _new(cls)
            run.id = remote.run_id
            run.name = "parent"
            run.run_type = "chain"
            run.dotted_order = remote.dotted_order
            run.trace_id = remote.trace_id
            run.parent_run_id = remote.parent_run_id
            run.parent_run = None
            run.project_name = default_project()
            run.metadata = {}
            run.tags = []
            run.extra = {}
            run.inputs = {}
            run.outputs = None
            run.error = None
            run.events = []
            run.end_time_us = None
            run.reference_example_id = None
            run.serialized = None
            run.tracing_enabled = True
            run.on_end = None
            run.execution_order = run.child_execution_order = 1
            run.attachments = {}
            run.replicas = None
            run.address = None
            run.invocation_params = None
            run.exporter = None
            run._children = None
            run._id_text = None
        run.start_time_us = remote.start_us
        now = ids.now_micros()
        # The caller's clock runs ahead of ours: shift our subtree by the difference, so the
        # children start after the parent (as LangSmith requires) and keep their real durations.
        run._skew_us = remote.start_us - now if remote.start_us > now else 0
        run._remote = True
        if remote.metadata:
            run.metadata = {**remote.metadata, **run.metadata} if run.metadata else remote.metadata
        if remote.tags:
            run.tags = [*remote.tags, *(t for t in run.tags if t not in remote.tags)]
        if remote.project_name and "project_name" not in inherit:
            run.project_name = remote.project_name
        if remote.replicas:
            run.replicas = remote.replicas
        if remote.address is not None and "project_name" not in inherit:
            run.address = remote.address
        run._tracestate = remote.tracestate
        run.distributed_parent_id = remote.run_id
        if run._id_text is None and run.dotted_order is remote.dotted_order:
            # The ids were parsed from this order, so its text is theirs (lower-cased: an
            # upstream SDK may write hex in upper case). Children take their parent's text.
            order = remote.dotted_order
            run._id_text = (
                run.id,
                order[-ids.UUID_LENGTH :].lower(),
                run.trace_id,
                order[ids.TIMESTAMP_LENGTH : ids.SEGMENT_LENGTH].lower(),
                None,
                None,
            )
        return run

    def _adopt(self, child: RunTree) -> None:
        if self._children is None:
            self._children = {}
        # Keyed by identity: hashing a UUID is a Python-level call, and this is every child.
        self._children[id(child)] = child

    def create_child(
        self,
        name: str = "Unnamed",
        run_type: str = "chain",
        *,
        inputs: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        tags: Sequence[str] | None = None,
        project_name: str | None = None,
        **kwargs: Any,
    ) -> RunTree:
        """A new run under this one: same trace, project (unless given) and exporter;
        metadata and tags inherited; start time never earlier than this run's."""
        self.child_execution_order += 1
        if "run_id" in kwargs:  # the LangSmith Python SDK's name for it
            kwargs["id"] = kwargs.pop("run_id")
        if kwargs:
            child = RunTree(
                name,
                run_type,
                parent_run=self,
                inputs=inputs,
                metadata=metadata,
                tags=tags,
                project_name=project_name,
                execution_order=self.child_execution_order,
                **kwargs,
            )
        else:
            child = self._new_child(name, run_type, inputs, metadata, tags, project_name)
        self._adopt(child)
        return child

    def _new_child(
        self,
        name: str,
        run_type: str,
        inputs: Mapping[str, Any] | None,
        metadata: Mapping[str, Any] | None,
        tags: Sequence[str] | None,
        project_name: str | None,
    ) -> RunTree:
        # The constructor's parent branch, without its ~30 keyword arguments: this is the path
        # of every @traceable call and every server and client run.
        child = _new(RunTree)
        run_id, text, now = ids.new_run_id()
        start = now + self._skew_us
        if start < self.start_time_us:
            start = self.start_time_us
        child.id = run_id
        child.name = name
        child.run_type = run_type
        child.parent_run = self
        child.parent_run_id = self.id
        child.trace_id = self.trace_id
        child.start_time_us = start
        child.end_time_us = None
        child.dotted_order = f"{self.dotted_order}.{ids.format_timestamp(start)}{text}"
        known = self._id_text
        if known is not None and known[0] is self.id and known[2] is self.trace_id:
            child._id_text = (run_id, text, self.trace_id, known[3], self.id, known[1])
        else:
            child._id_text = None
        child.project_name = project_name or self.project_name
        child.address = None if project_name else self.address
        parent_meta = self.metadata
        if metadata:
            child.metadata = {**parent_meta, **metadata} if parent_meta else dict(metadata)
        else:
            child.metadata = dict(parent_meta) if parent_meta else {}
        parent_tags = self.tags
        if tags:
            child.tags = [*parent_tags, *(t for t in tags if t not in parent_tags)]
        else:
            child.tags = list(parent_tags) if parent_tags else []
        child.inputs = _as_dict(inputs, "input")
        child.tracing_enabled = self.tracing_enabled
        child.execution_order = self.child_execution_order
        child.child_execution_order = self.child_execution_order
        child.replicas = self.replicas
        child.exporter = self.exporter
        child._skew_us = self._skew_us
        child._tracestate = self._tracestate
        child._set_defaults()
        return child

    @classmethod
    def _new_root(
        cls,
        name: str,
        run_type: str,
        inputs: Mapping[str, Any] | None,
        metadata: Mapping[str, Any] | None,
        tags: Sequence[str] | None,
        project_name: str | None,
    ) -> RunTree:
        """A root run without the keyword constructor (the path of every untraced-upstream
        request and every top-level ``@traceable`` call)."""
        run = _new(cls)
        run_id, text, start = ids.new_run_id()
        run.id = run.trace_id = run_id
        run.name = name
        run.run_type = run_type
        run.parent_run = None
        run.parent_run_id = None
        run.start_time_us = start
        run.end_time_us = None
        run.dotted_order = ids.format_timestamp(start) + text
        run._id_text = (run_id, text, run_id, text, None, None)
        run.project_name = project_name or default_project()
        run.address = None
        run.metadata = dict(metadata) if metadata else {}
        run.tags = list(tags) if tags else []
        run.inputs = _as_dict(inputs, "input")
        run.tracing_enabled = True
        run.execution_order = run.child_execution_order = 1
        run.replicas = None
        run.exporter = None
        run._skew_us = 0
        run._tracestate = None
        run._set_defaults()
        return run

    def _set_defaults(self) -> None:
        # The fields a new run starts without; shared by the two fast constructors.
        self.extra = {}
        self.outputs = None
        self.error = None
        self.events = []
        self.reference_example_id = None
        self.serialized = None
        self.on_end = None
        self.attachments = {}
        self.distributed_parent_id = None
        self.invocation_params = None
        self._children = None
        self._remote = False

    # ------------------------------------------------------------------ time

    @property
    def start_time(self) -> datetime:
        return ids.micros_to_datetime(self.start_time_us)

    @start_time.setter
    def start_time(self, value: TimeLike) -> None:
        self.start_time_us = ids.to_micros(value)

    @property
    def end_time(self) -> datetime | None:
        return None if self.end_time_us is None else ids.micros_to_datetime(self.end_time_us)

    @end_time.setter
    def end_time(self, value: TimeLike | None) -> None:
        self.end_time_us = None if value is None else ids.to_micros(value)

    @property
    def latency(self) -> float | None:
        """Seconds from start to end, ``None`` while the run is open."""
        if self.end_time_us is None:
            return None
        return (self.end_time_us - self.start_time_us) / 1e6

    @property
    def session_name(self) -> str:
        """The LangSmith SDK's name for ``project_name``."""
        return self.project_name

    @property
    def child_runs(self) -> list[RunTree]:
        """Children not yet exported as finished. A child that has been posted or patched
        after ending is released, so a long-lived parent does not retain every child."""
        return list(self._children.values()) if self._children else []

    # ------------------------------------------------------------------ mutation

    def end(
        self,
        outputs: Mapping[str, Any] | None = None,
        error: str | BaseException | None = None,
        end_time: TimeLike | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Set outputs/error/end time (default now), merge ``metadata``, call ``on_end``."""
        if outputs is not None:
            self.outputs = _as_dict(outputs, "output")
        if error is not None:
            self.error = format_error(error)
        end = ids.now_micros() + self._skew_us if end_time is None else ids.to_micros(end_time)
        self.end_time_us = end if end > self.start_time_us else self.start_time_us
        if metadata:
            self.metadata.update(metadata)
        if self.on_end is not None:
            self.on_end(self)

    def add_event(
        self,
        event: str | Mapping[str, Any] | Sequence[Mapping[str, Any]],
        time: TimeLike | None = None,
        kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        """Record a timestamped event: ``add_event("retrieved", kwargs={"n": 3})`` or a dict
        (``{"name", "time", "kwargs"}``), or a list of such dicts."""
        if isinstance(event, str):
            items: Sequence[Mapping[str, Any]] = [{"name": event, "kwargs": kwargs}]
        elif isinstance(event, Mapping):
            items = [event]
        else:
            items = event
        for item in items:
            when = item.get("time", time)
            micros = ids.now_micros() + self._skew_us if when is None else ids.to_micros(when)
            record: dict[str, Any] = {
                "name": str(item.get("name", "event")),
                "time": ids.micros_to_datetime(micros).isoformat(),
            }
            item_kwargs = item.get("kwargs", kwargs)
            if item_kwargs:
                record["kwargs"] = dict(item_kwargs)
            self.events.append(record)

    def add_tags(self, tags: str | Sequence[str]) -> None:
        for tag in [tags] if isinstance(tags, str) else tags:
            if tag not in self.tags:
                self.tags.append(tag)

    def add_metadata(self, metadata: Mapping[str, Any]) -> None:
        self.metadata.update(metadata)

    def set(
        self,
        *,
        inputs: Mapping[str, Any] | None = None,
        outputs: Mapping[str, Any] | None = None,
        tags: Sequence[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        usage_metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Replace inputs/outputs; add tags/metadata; record LLM ``usage_metadata`` (token
        counts and costs, as the LangSmith SDK reports them) in the outputs."""
        if inputs is not None:
            self.inputs = _as_dict(inputs, "input")
        if outputs is not None:
            self.outputs = _as_dict(outputs, "output")
        if tags:
            self.add_tags(tags)
        if metadata:
            self.add_metadata(metadata)
        if usage_metadata is not None:
            if self.outputs is None:
                self.outputs = {}
            self.outputs["usage_metadata"] = dict(usage_metadata)

    # ------------------------------------------------------------------ export

    def post(self, exclude_child_runs: bool = True) -> None:
        """Hand the run to its exporter (O(1); the exporter serializes and sends later)."""
        if self._remote or not self.tracing_enabled:
            return
        dispatch("post", self, self.exporter)
        if self.end_time_us is not None:
            self._release()
        if not exclude_child_runs:
            for child in self.child_runs:
                child.post(exclude_child_runs=False)

    def patch(self) -> None:
        """Send the run's end state (outputs, error, end time, events...)."""
        if self._remote or not self.tracing_enabled:
            return
        dispatch("patch", self, self.exporter)
        if self.end_time_us is not None:
            self._release()

    def _release(self) -> None:
        parent = self.parent_run
        if parent is not None and parent._children:
            parent._children.pop(id(self), None)

    # ------------------------------------------------------------------ headers

    def to_headers(self, headers: dict[str, str] | None = None) -> dict[str, str]:
        """``langsmith-trace``, ``baggage`` and ``traceparent`` for a downstream call, merged
        into ``headers`` (foreign baggage members kept)."""
        from tracestitch.propagation import inject

        return inject(self, {} if headers is None else headers)  # type: ignore[return-value]

    @classmethod
    def from_headers(cls, headers: Any, **inherit: Any) -> RunTree | None:
        """The caller's run as told by incoming ``headers``, or ``None`` when they carry no
        (valid) trace. Create the service's own run with ``parent.create_child(...)``."""
        from tracestitch.propagation import extract_parent

        return extract_parent(headers, **inherit)

    @classmethod
    def from_dotted_order(cls, dotted_order: str, **inherit: Any) -> RunTree | None:
        """Like :meth:`from_headers` from a bare ``langsmith-trace`` value."""
        return cls.from_headers({"langsmith-trace": dotted_order}, **inherit)

    @classmethod
    def from_runnable_config(cls, config: Mapping[str, Any] | None, **props: Any) -> RunTree | None:
        """A run for a LangChain-style config: ``run_name``/``tags``/``metadata`` from it.

        The parent is the run the config's LangChain callback manager is tracing (when
        ``langchain_core`` is installed and it names one), else the current run; with neither,
        a new root. Returns ``None`` only when tracing is disabled.
        """
        config = config or {}
        if props.get("tracing_enabled") is False:
            return None
        parent = _parent_from_callbacks(config.get("callbacks")) or get_current_run_tree()
        name = props.pop("name", None) or config.get("run_name") or "Unnamed"
        run_type = props.pop("run_type", "chain")
        metadata = {**(config.get("metadata") or {}), **(props.pop("metadata", None) or {})}
        tags = [*(config.get("tags") or []), *(props.pop("tags", None) or [])]
        if parent is not None:
            return parent.create_child(name, run_type, metadata=metadata, tags=tags, **props)
        return cls(name, run_type, metadata=metadata, tags=tags, **props)

    # ------------------------------------------------------------------ serialization

    def to_wire(self, op: str = "post") -> dict[str, Any]:
        """The LangSmith ingest dict for ``op`` (``post``: everything; ``patch``: no inputs).

        Called by exporters on their worker thread, never on the request path.
        """
        extra = self.extra
        if self.metadata:
            extra = {**extra, "metadata": self.metadata}
        if self.invocation_params:
            extra = {**extra, "invocation_params": self.invocation_params}
        known = self._id_text
        parent_id = self.parent_run_id
        if (
            known is not None
            and known[0] is self.id
            and known[2] is self.trace_id
            and known[4] is parent_id
        ):
            run_id, trace_id, parent_text = known[1], known[3], known[5]
        else:
            run_id, trace_id, parent_text = self._id_texts()
        wire: dict[str, Any] = {
            "id": run_id,
            "name": self.name,
            "run_type": self.run_type,
            "start_time": ids.format_iso(self.start_time_us),
            "trace_id": trace_id,
            "dotted_order": self.dotted_order,
            "session_name": self.project_name,
            "extra": extra,
            "tags": self.tags if self.tags is not None else [],
            "events": self.events if self.events is not None else [],
        }
        # None values are left out, as the SDK's exclude_none dump does: the exporter can then
        # serialize this dict as it is.
        if parent_text is not None:
            wire["parent_run_id"] = parent_text
        if self.address is not None:
            # Addressed, not filed by project: the SDKs send the address alone, and the
            # backend would prefer a project sent beside it.
            wire["address"] = self.address
            del wire["session_name"]
        if op == "post":
            wire["inputs"] = self.inputs
            if self.serialized is not None:
                wire["serialized"] = self.serialized
        if self.end_time_us is not None:
            wire["end_time"] = ids.format_iso(self.end_time_us)
        if self.outputs is not None:
            wire["outputs"] = self.outputs
        if self.error is not None:
            wire["error"] = self.error
        if self.reference_example_id is not None:
            wire["reference_example_id"] = str(self.reference_example_id)
        return wire

    def _id_texts(self) -> tuple[str, str, str | None]:
        """Id, trace id and parent id as text, for a run made without the cache (keyword
        constructor) or whose ids were reassigned: sliced from the dotted order when it still
        says them (cheaper than str(UUID)), else formatted."""
        # The order ends "{time}{id}" and starts with the trace id; an upstream order may spell
        # its ids in upper case (accepted on parse), hence lower().
        order = self.dotted_order
        run_id = order[-36:]
        if int(run_id.replace("-", ""), 16) != self.id.int:
            run_id = str(self.id)
        trace_id = order[ids.TIMESTAMP_LENGTH : ids.SEGMENT_LENGTH].lower()
        if int(trace_id.replace("-", ""), 16) != self.trace_id.int:
            trace_id = str(self.trace_id)
        parent_id = None
        if self.parent_run_id is not None:
            parent_id = order[-95:-59].lower()
            if len(order) < 117 or int(parent_id.replace("-", ""), 16) != self.parent_run_id.int:
                parent_id = str(self.parent_run_id)
        return run_id.lower(), trace_id, parent_id

    def to_json(self) -> dict[str, Any]:
        """The run as a JSON-ready dict (the ``post`` wire shape)."""
        return self.to_wire("post")

    dict = to_json  # the LangSmith Python SDK's name (pydantic style)

    def to_run(self, *, include_children: bool = False) -> Run:
        """The validated :class:`tracestitch.schemas.Run` for this run."""
        from tracestitch.schemas import Run

        return Run.from_run_tree(self, include_children=include_children)

    def __repr__(self) -> str:
        return (
            f"RunTree(id={self.id}, name={self.name!r}, run_type={self.run_type!r}, "
            f"dotted_order={self.dotted_order!r})"
        )


# ---------------------------------------------------------------------------------------------
# Module functions of the reference API
# ---------------------------------------------------------------------------------------------


def convert_to_dotted_order_format(
    epoch: TimeLike, run_id: uuid.UUID | str, execution_order: int | None = None
) -> str:
    """One dotted-order segment for a run started at ``epoch`` (ms, datetime or ISO text).

    With ``execution_order`` the last three microsecond digits carry it, as the JS SDK does.
    """
    micros = ids.to_micros(epoch)
    if execution_order is not None:
        micros = micros // 1000 * 1000 + min(max(int(execution_order), 0), 999)
    return ids.format_segment(micros, _as_uuid(run_id))


def is_run_tree(x: object) -> bool:
    return isinstance(x, RunTree)


_CONFIG_KEYS = frozenset(("callbacks", "tags", "metadata", "run_name", "configurable"))


def is_runnable_config_like(x: object) -> bool:
    """A LangChain ``RunnableConfig``-shaped mapping (callbacks/tags/metadata/run_name)."""
    if not isinstance(x, Mapping) or not x:
        return False
    if not any(key in x for key in _CONFIG_KEYS):
        return False
    tags = x.get("tags")
    metadata = x.get("metadata")
    return (tags is None or isinstance(tags, (list, tuple))) and (
        metadata is None or isinstance(metadata, Mapping)
    )


def _parent_from_callbacks(callbacks: Any) -> RunTree | None:
    """The run a LangChain callback manager is inside, via its LangChain tracer's order map."""
    if callbacks is None or isinstance(callbacks, (list, tuple)):
        return None
    if isinstance(callbacks, RunTree):
        return callbacks
    try:
        from langchain_core.callbacks.base import (  # type: ignore[import-not-found,unused-ignore]
            BaseCallbackManager,
        )
    except ImportError:
        return None
    if not isinstance(callbacks, BaseCallbackManager) or callbacks.parent_run_id is None:
        return None
    for handler in callbacks.handlers:
        order_map = getattr(handler, "order_map", None)
        if isinstance(order_map, dict) and callbacks.parent_run_id in order_map:
            _trace_id, dotted = order_map[callbacks.parent_run_id]
            parent = RunTree.from_dotted_order(dotted)
            if parent is not None:
                # The LangChain tracer exports that run itself; ours only link to it.
                return parent
    return None

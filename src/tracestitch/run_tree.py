"""``RunTree``: one run of a trace, and the operations the LangSmith SDKs define on it.

A plain ``__slots__`` class rather than a pydantic model: creating, linking and ending runs is on
every request's path, and validation there would cost more than the rest of the hop together
(see bench/). ``to_run()`` gives the validated :class:`tracestitch.schemas.Run` when it is wanted.

Every run is built by one method, ``_fill``, which sets every field (a new field goes there):
the keyword constructor (its arguments in :mod:`tracestitch.run_args`), :func:`new_run` (the
factory integrations use) and :meth:`RunTree.create_child` all call it.

Times are integer microseconds since the epoch (``start_time_us``/``end_time_us``); the
``start_time``/``end_time`` properties give and take datetimes, epoch milliseconds or ISO text.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tracestitch import ids
from tracestitch.exporter import Exporter, dispatch
from tracestitch.propagation import DEFAULT_LIMITS, Limits, RemoteParent, extract
from tracestitch.run_args import RunArgs, keyword_run
from tracestitch.run_compat import (
    convert_to_dotted_order_format,
    is_runnable_config_like,
    run_from_config,
)
from tracestitch.run_context import default_project
from tracestitch.run_fields import RunFields
from tracestitch.run_values import TimeLike, as_dict, format_error
from tracestitch.sampling import continues

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "RunTree",
    "convert_to_dotted_order_format",
    "format_error",
    "is_run_tree",
    "is_runnable_config_like",
    "new_run",
]

_new = object.__new__
_time_ns = time.time_ns


class RunTree(RunFields):
    """A run: ids, timing, inputs and outputs, and its place in a (possibly distributed) trace.

    Example::

        root = RunTree(name="pipeline", inputs={"q": "hi"})
        child = root.create_child("llm-call", run_type="llm")
        child.end(outputs={"answer": "hello"})
        child.post()
        root.end()
        root.post()
    """

    # The public fields are declared on RunFields; these are the ones typed by RunTree.
    parent_run: RunTree | None
    on_end: Callable[[RunTree], None] | None
    exporter: Exporter | None
    _children: dict[int, RunTree] | None
    _remote: bool
    _skew_us: int
    # Each field declared here is a slot (the public ones are RunFields' slots).
    __slots__ = ("__weakref__", *__annotations__)

    def __init__(
        self, name: str = "Unnamed", run_type: str = "chain", **kwargs: Unpack[RunArgs]
    ) -> None:
        """LangSmith's keyword constructor: ``name``, ``run_type`` and the keywords
        :class:`~tracestitch.run_args.RunArgs` lists (``parent_run``, ``inputs``, ``id``,
        ``dotted_order``, ``start_time``, ``exporter`` ...)."""
        parent = kwargs.get("parent_run")
        now = ids.now_micros() + (0 if parent is None else parent._skew_us)
        fill, later = keyword_run(kwargs, now)
        self._fill(name, run_type, *fill)
        for field, value in later.items():
            setattr(self, field, value)
        for child in kwargs.get("child_runs") or ():
            self._adopt(child)

    def _fill(
        self,
        name: str,
        run_type: str,
        parent: RunTree | RemoteParent | None,
        run_id: ids.RunId,
        start: int,
        inputs: Mapping[str, Any] | None,
        metadata: Mapping[str, Any] | None,
        tags: Sequence[str] | None,
        project_name: str | None,
        exporter: Exporter | None,
        execution_order: int,
        order: str | None = None,
        trace_id: uuid.UUID | None = None,
        parent_id: uuid.UUID | None = None,
    ) -> None:
        """The one construction path: sets every field of a new run under ``parent`` (a run
        of this process, the caller's run read from headers, or none: a root; ``order``,
        ``trace_id``, ``parent_id``: a root whose order is known, parsed into those ids)."""
        self.id = run_id
        self.name = name
        self.run_type = run_type
        if parent is None:
            self.parent_run = None
            self._skew_us = 0
            if order is None:
                order = ids.root_order(start, run_id.text)
            if trace_id is None:
                trace_id = run_id
            self.trace_id = trace_id
            self.parent_run_id = parent_id
            self.dotted_order = order
            self.project_name = project_name or default_project()
            self.address = None
            self.metadata = dict(metadata) if metadata else {}
            self.tags = list(tags) if tags else []
            self.tracing_enabled = True
            self.exporter = exporter
            self.replicas = None
            self.tracestate = None
        else:
            # Inherit the trace and its context; a child never starts before its parent
            # (LangSmith rejects that).
            if isinstance(parent, RemoteParent):
                # The caller's run, as read from its headers: no run of ours stands for it.
                # When the caller's clock runs ahead of ours, this subtree is shifted by the
                # difference: its runs start after their parent and keep their durations.
                self.parent_run = None
                lead = parent.start_time_us - start
                skew = lead if lead > 0 else 0
                start += skew
            else:
                self.parent_run = parent
                if start < parent.start_time_us:
                    start = parent.start_time_us
                skew = parent._skew_us  # a remote ancestor's clock correction, kept
            self.parent_run_id = parent.id
            self.project_name = project_name or parent.project_name or default_project()
            self.tracing_enabled = parent.tracing_enabled
            self.exporter = exporter if exporter is not None else parent.exporter
            self._skew_us = skew
            self.trace_id = parent.trace_id
            self.dotted_order = ids.child_order(parent.dotted_order, start, run_id.text)
            # A project named here outranks an inherited address (as in the SDKs).
            self.address = None if project_name else parent.address
            parent_meta = parent.metadata
            if metadata:
                self.metadata = {**parent_meta, **metadata} if parent_meta else dict(metadata)
            else:
                self.metadata = dict(parent_meta) if parent_meta else {}
            parent_tags = parent.tags
            if not tags:
                self.tags = list(parent_tags) if parent_tags else []
            elif parent_tags:
                self.tags = [*parent_tags, *(t for t in tags if t not in parent_tags)]
            else:
                self.tags = list(tags)
            self.replicas = parent.replicas
            self.tracestate = parent.tracestate
        self.start_time_us = start
        self.end_time_us = None
        # as_dict's common case inline: a traced call's inputs are a dict made for it.
        self.inputs = inputs if type(inputs) is dict else as_dict(inputs, "input")
        self.execution_order = self.child_execution_order = execution_order
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

    @classmethod
    def from_remote(cls, remote: RemoteParent, **inherit: Any) -> RunTree:
        """A stand-in for a caller's run in another process, as
        :func:`tracestitch.propagation.extract` read it: children attach to it; it is never
        exported itself (the caller exports the real one). ``inherit``: constructor arguments
        for it. (To start a run under the caller's, pass ``remote`` to :func:`new_run` as it
        is: no stand-in is needed.)"""
        if inherit:
            inherit.setdefault("name", "parent")
            run = cls(
                id=remote.run_id,
                dotted_order=remote.dotted_order,
                trace_id=remote.trace_id,
                parent_run_id=remote.parent_run_id,
                **inherit,
            )
        else:  # every request with a trace header comes here
            run = _new(cls)
            run._fill(
                "parent",
                "chain",
                None,
                remote.run_id,
                remote.start_us,
                None,
                None,
                None,
                remote.project_name,
                None,
                1,
                remote.dotted_order,
                remote.trace_id,
                remote.parent_run_id,
            )
        run.start_time_us = remote.start_us
        now = _time_ns() // 1000
        # The caller's clock runs ahead of ours: shift our subtree by the difference, so the
        # children start after the parent (as LangSmith requires) and keep their real durations.
        run._skew_us = remote.start_us - now if remote.start_us > now else 0
        run._remote = True
        if remote.metadata:
            run.metadata = {**remote.metadata, **run.metadata} if run.metadata else remote.metadata
        if remote.tags:
            tags = run.tags
            run.tags = (
                [*remote.tags, *(t for t in tags if t not in remote.tags)]
                if tags
                else [*remote.tags]
            )
        if remote.project_name and "project_name" not in inherit:
            run.project_name = remote.project_name
        if remote.replicas:
            run.replicas = remote.replicas
        if remote.address is not None and "project_name" not in inherit:
            run.address = remote.address
        run.tracestate = remote.tracestate
        if remote.ancestor_span is not None:
            # Read by the server middleware, which records it on the request's run
            # (extra["w3c_ancestor"]) for the collector; the stand-in is never exported.
            run.extra = {"w3c_ancestor": remote.ancestor_span}
        if not remote.sampled:
            run.tracing_enabled = False  # the caller said -00: record nothing, pass -00 on
        run.distributed_parent_id = remote.run_id
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
        if not kwargs:
            return self._child(name, run_type, inputs, metadata, tags, project_name)
        if "run_id" in kwargs:  # the LangSmith Python SDK's name for it
            kwargs["id"] = kwargs.pop("run_id")
        self.child_execution_order += 1
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
        self._adopt(child)
        return child

    def _child(
        self,
        name: str,
        run_type: str,
        inputs: Mapping[str, Any] | None,
        metadata: Mapping[str, Any] | None,
        tags: Sequence[str] | None,
        project_name: str | None,
    ) -> RunTree:
        # create_child without its keyword dict: the path of every @traceable call and every
        # server and client run (new_run comes here).
        self.child_execution_order = order = self.child_execution_order + 1
        child = _new(RunTree)
        run_id, _, now = ids.new_run_id()
        start = now + self._skew_us
        child._fill(
            name, run_type, self, run_id, start, inputs, metadata, tags, project_name, None, order
        )
        # _adopt inline
        children = self._children
        if children is None:
            self._children = children = {}
        children[id(child)] = child
        return child

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
            self.outputs = outputs if type(outputs) is dict else as_dict(outputs, "output")
        if error is not None:
            self.error = format_error(error)
        end = _time_ns() // 1000 + self._skew_us if end_time is None else ids.to_micros(end_time)
        self.end_time_us = end if end > self.start_time_us else self.start_time_us
        if metadata:
            self.metadata.update(metadata)
        if self.on_end is not None:
            self.on_end(self)

    def now_us(self) -> int:
        """Now on this run's clock, in µs since the epoch: shifted like the run's start when
        its caller's clock runs ahead of this process's (see :func:`new_run`)."""
        return _time_ns() // 1000 + self._skew_us

    # ------------------------------------------------------------------ export

    def post(self, exclude_child_runs: bool = True) -> None:
        """Hand the run to its exporter (O(1); the exporter serializes and sends later)."""
        if self._remote or not self.tracing_enabled:
            return
        dispatch("post", self, self.exporter)
        if self.end_time_us is not None:
            parent = self.parent_run  # _release inline: every traced call comes here
            if parent is not None and parent._children:
                parent._children.pop(id(self), None)
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

    @classmethod
    def from_headers(
        cls,
        headers: Any,
        *,
        trust: bool | Collection[str] = True,
        limits: Limits = DEFAULT_LIMITS,
        sample_rate: float | None = None,
        **inherit: Any,
    ) -> RunTree | None:
        """The caller's run as told by incoming ``headers``, or ``None`` when they carry no
        (valid) trace: a stand-in, never exported (the caller exports the real one). Create
        the service's own run with ``parent.create_child(...)``. ``trust`` and ``limits`` as
        :func:`tracestitch.propagation.extract` takes them; ``inherit``: constructor arguments
        for the stand-in.

        The stand-in is *unsampled* (``tracing_enabled`` false: nothing is recorded under it,
        its headers pass ``traceparent`` ``-00`` on) when :func:`tracestitch.sampling.continues`
        says the trace is not recorded here at ``sample_rate``."""
        remote = extract(headers, trust=trust, limits=limits)
        if remote is None:
            return None
        run = cls.from_remote(remote, **inherit)
        if not continues(remote, sample_rate):
            run.tracing_enabled = False
        return run

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
        return run_from_config(cls, config, props)


def is_run_tree(x: object) -> bool:
    """Whether ``x`` is a :class:`RunTree` (as ``langsmith.run_helpers.is_run_tree``)."""
    return isinstance(x, RunTree)


def new_run(
    name: str,
    run_type: str = "chain",
    parent: RunTree | RemoteParent | None = None,
    inputs: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    tags: Sequence[str] | None = None,
    project_name: str | None = None,
    made: tuple[ids.RunId, str, int] | None = None,
) -> RunTree:
    """A new run, started now: under ``parent`` (a run of this process, or the caller's run
    as :func:`tracestitch.propagation.extract` read it from headers) or, with none, the root of
    a new trace. The factory every integration starts its runs with (it skips the keyword
    constructor's ~30 arguments). ``made``: the root's id, id text and start from
    :func:`tracestitch.ids.new_run_id`, when drawn earlier (to decide sampling by it).

    ``inputs`` is kept as given when it is a dict (not copied); ``metadata`` and ``tags`` are
    merged under the parent's, as :meth:`RunTree.create_child` does.
    """
    if isinstance(parent, RunTree):
        return parent._child(name, run_type, inputs, metadata, tags, project_name)
    run = _new(RunTree)
    run_id, _, start = ids.new_run_id() if made is None else made
    run._fill(name, run_type, parent, run_id, start, inputs, metadata, tags, project_name, None, 1)
    return run

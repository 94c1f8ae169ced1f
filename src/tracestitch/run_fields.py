"""The public fields of a run, and what the LangSmith SDKs do with them alone.

:class:`RunFields` is the base of :class:`tracestitch.run_tree.RunTree`: it declares the
public fields (``RunTree`` makes them slots) and holds the conveniences that read and write
only those: the time properties, tags, metadata, ``set``, the wire dict (``to_wire``), the
headers for a downstream call (``to_headers``).
Building runs, linking them, their clock and export stay in ``run_tree``, with the private
state they need.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from tracestitch import ids
from tracestitch.ids import RunId
from tracestitch.propagation import inject
from tracestitch.run_values import TimeLike, as_dict

if TYPE_CHECKING:
    from tracestitch.schemas import Run

__all__ = ["RunFields"]


class RunFields:
    """The fields every run has, as the LangSmith SDKs name them."""

    id: uuid.UUID
    name: str
    run_type: str
    project_name: str
    #: An agent address (``lrn:agents/<id>/environments/<env>``) the run is sent to instead of
    #: its project, as LangSmith 0.14+ addresses runs; inherited from a caller that named one.
    address: str | None
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
    execution_order: int
    child_execution_order: int
    dotted_order: str
    trace_id: uuid.UUID
    attachments: dict[str, tuple[str, bytes]]
    replicas: list[dict[str, Any]] | None
    distributed_parent_id: uuid.UUID | None
    invocation_params: dict[str, Any] | None
    events: list[dict[str, Any]]
    #: The W3C ``tracestate`` of an OpenTelemetry caller, passed on to the next hop as it came
    #: (``None`` otherwise); inherited by child runs.
    tracestate: str | None
    # Each field declared above is a slot: declared once, stored in one.
    __slots__ = tuple(__annotations__)

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

    def add_tags(self, tags: str | Sequence[str]) -> None:
        for tag in [tags] if isinstance(tags, str) else tags:
            if tag not in self.tags:
                self.tags.append(tag)

    def add_metadata(self, metadata: Mapping[str, Any]) -> None:
        self.metadata.update(metadata)

    def now_us(self) -> int:
        """Now, in µs since the epoch (a :class:`~tracestitch.run_tree.RunTree` reads it on
        its own clock: shifted when its caller's runs ahead)."""
        return ids.now_micros()

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
            micros = self.now_us() if when is None else ids.to_micros(when)
            record: dict[str, Any] = {
                "name": str(item.get("name", "event")),
                "time": ids.micros_to_datetime(micros).isoformat(),
            }
            item_kwargs = item.get("kwargs", kwargs)
            if item_kwargs:
                record["kwargs"] = dict(item_kwargs)
            self.events.append(record)

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
            self.inputs = as_dict(inputs, "input")
        if outputs is not None:
            self.outputs = as_dict(outputs, "output")
        if tags:
            self.add_tags(tags)
        if metadata:
            self.add_metadata(metadata)
        if usage_metadata is not None:
            if self.outputs is None:
                self.outputs = {}
            self.outputs["usage_metadata"] = dict(usage_metadata)

    def to_headers(self, headers: dict[str, str] | None = None) -> dict[str, str]:
        """``langsmith-trace``, ``baggage`` and ``traceparent`` for a downstream call, merged
        into ``headers`` (foreign baggage members kept)."""
        return inject(self, {} if headers is None else headers)  # type: ignore[return-value]

    def to_run(self, *, include_children: bool = False) -> Run:
        """The validated :class:`tracestitch.schemas.Run` for this run."""
        # Imported here, not at the top: pydantic is needed only at the edges, and importing
        # it costs more than the rest of the package (schemas imports nothing of ours).
        from tracestitch.schemas import Run

        return Run.from_run_tree(self, include_children=include_children)  # type: ignore[arg-type]

    def to_wire(self, op: str = "post") -> dict[str, Any]:
        """The LangSmith ingest dict for ``op`` (``post``: everything; ``patch``: no inputs).

        Called by exporters on their worker thread, never on the request path.
        """
        # The ids of runs tracestitch made keep their text (ids.RunId); others are formatted.
        run_id, trace_id, parent = self.id, self.trace_id, self.parent_run_id
        extra = self.extra
        if self.metadata:
            extra = {**extra, "metadata": self.metadata}
        if self.invocation_params:
            extra = {**extra, "invocation_params": self.invocation_params}
        wire: dict[str, Any] = {
            "id": run_id.text if isinstance(run_id, RunId) else str(run_id),
            "name": self.name,
            "run_type": self.run_type,
            "start_time": ids.format_iso(self.start_time_us),
            "trace_id": trace_id.text if isinstance(trace_id, RunId) else str(trace_id),
            "dotted_order": self.dotted_order,
            "session_name": self.project_name,
            "extra": extra,
            "tags": self.tags if self.tags is not None else [],
            "events": self.events if self.events is not None else [],
        }
        # None values are left out, as the SDK's exclude_none dump does: the exporter can then
        # serialize this dict as it is.
        if parent is not None:
            wire["parent_run_id"] = parent.text if isinstance(parent, RunId) else str(parent)
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

    def to_json(self) -> dict[str, Any]:
        """The run as a JSON-ready dict (the ``post`` wire shape)."""
        return self.to_wire("post")

    # Last in the class: below this line ``dict`` would name this method, not the type.
    dict = to_json  # the LangSmith Python SDK's name (pydantic style)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(id={self.id}, name={self.name!r}, "
            f"run_type={self.run_type!r}, dotted_order={self.dotted_order!r})"
        )

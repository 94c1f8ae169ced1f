"""What a codec reads from headers (:class:`RemoteParent`), and the caps on that reading
(:class:`Limits`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tracestitch import ids

__all__ = ["DEFAULT_LIMITS", "Limits", "RemoteParent"]


@dataclass(frozen=True)
class Limits:
    """Caps on what a header may make tracestitch do (all in bytes or counts)."""

    max_dotted_order_depth: int = ids.MAX_DOTTED_ORDER_DEPTH
    max_baggage_bytes: int = 8192  # W3C baggage's own recommended limit
    max_baggage_members: int = 64
    max_metadata_bytes: int = 4096
    max_metadata_keys: int = 64
    #: Nesting of metadata (and replica) JSON, the object itself counting as 1: metadata is a
    #: handful of key/value pairs, and deep nesting only costs every hop that parses it.
    max_metadata_depth: int = 20
    max_tags: int = 32
    max_tag_length: int = 256
    max_project_length: int = 256
    max_replicas: int = 8
    max_tracestate_bytes: int = 512
    #: How far ahead of ours a caller's clock may run. A child must not start before its parent,
    #: so the local subtree is shifted by the caller's lead; a header claiming more lead than this
    #: is not believed (it would date this service's runs years ahead).
    max_clock_skew_s: float = 300.0


DEFAULT_LIMITS = Limits()


@dataclass(slots=True)
class RemoteParent:
    """What the incoming headers say about the caller's run."""

    dotted_order: str
    trace_id: ids.RunId
    run_id: ids.RunId
    parent_run_id: ids.RunId | None
    start_us: int
    metadata: dict[str, Any] | None = None
    tags: list[str] | None = None
    project_name: str | None = None
    #: The caller's destination when it names an agent address instead of a project
    #: (``lrn:agents/<id>/environments/<env>``, from the ``langsmith-address`` member).
    address: str | None = None
    replicas: list[dict[str, Any]] | None = None
    tracestate: str | None = None
    from_w3c: bool = False
    #: From our ``tracestate`` member, when the W3C parent is not a tracestitch run (an OTel
    #: hop sits between): the span id of the last tracestitch run above that hop.
    ancestor_span: str | None = None
    #: The W3C sampled flag of an OpenTelemetry caller: ``False`` (``-00``) means the caller
    #: records nothing of this request, so neither does this service (nor, told by the
    #: ``-00`` it passes on, the next one).
    sampled: bool = True

    # What a run started under this one reads of its parent, under the names a RunTree has
    # (tracestitch.run_tree.new_run takes either as the parent).
    @property
    def id(self) -> ids.RunId:
        return self.run_id

    @property
    def start_time_us(self) -> int:
        return self.start_us

    @property
    def tracing_enabled(self) -> bool:
        return self.sampled

    @property
    def exporter(self) -> None:
        """A caller's run names no exporter here: its children use the process-wide one."""
        return None

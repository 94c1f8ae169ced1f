"""Pydantic models of the run as stored and served: every field of LangSmith's ``Run``/``RunBase``.

These validate at the edges (the collector's ingest and query API, ``RunTree.to_run()``,
``RunCollector``), never on the request path. Token counts, costs and first-token time are
derived from the run's ``usage_metadata`` and ``new_token`` events the way the LangSmith SDK
reports them, so an LLM run's usage shows without extra instrumentation.
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from tracestitch import ids

if TYPE_CHECKING:
    from tracestitch.run_tree import RunTree

__all__ = ["Run", "RunBase", "RunEvent", "Usage", "usage_from_wire"]


class RunEvent(BaseModel):
    """A timestamped event on a run (``add_event``)."""

    model_config = ConfigDict(extra="allow")

    name: str
    time: datetime | str | None = None
    kwargs: dict[str, Any] | None = None


class RunBase(BaseModel):
    """The fields every run has (LangSmith's ``RunBase``)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    id: UUID
    name: str
    start_time: datetime
    run_type: str
    end_time: datetime | None = None
    extra: dict[str, Any] | None = None
    error: str | None = None
    serialized: dict[str, Any] | None = None
    events: list[dict[str, Any]] | None = None
    inputs: dict[str, Any] = Field(default_factory=dict)
    outputs: dict[str, Any] | None = None
    reference_example_id: UUID | None = None
    parent_run_id: UUID | None = None
    tags: list[str] | None = None
    attachments: dict[str, Any] = Field(default_factory=dict)

    @property
    def metadata(self) -> dict[str, Any]:
        return dict((self.extra or {}).get("metadata") or {})

    @property
    def revision_id(self) -> UUID | None:
        value = self.metadata.get("revision_id")
        try:
            return None if value is None else UUID(str(value))
        except ValueError:
            return None

    @property
    def latency(self) -> float | None:
        """Seconds from start to end; ``None`` while the run is open."""
        if self.end_time is None:
            return None
        return (self.end_time - self.start_time).total_seconds()


class Run(RunBase):
    """A run as loaded from a store (LangSmith's ``Run``), plus ``session_name``."""

    session_id: UUID | None = None
    session_name: str | None = None
    child_run_ids: list[UUID] | None = None
    child_runs: list[Run] | None = None
    feedback_stats: dict[str, Any] | None = None
    app_path: str | None = None
    manifest_id: UUID | None = None
    status: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    prompt_token_details: dict[str, int] | None = None
    completion_token_details: dict[str, int] | None = None
    first_token_time: datetime | None = None
    total_cost: Decimal | None = None
    prompt_cost: Decimal | None = None
    completion_cost: Decimal | None = None
    prompt_cost_details: dict[str, Decimal] | None = None
    completion_cost_details: dict[str, Decimal] | None = None
    parent_run_ids: list[UUID] | None = None
    trace_id: UUID
    dotted_order: str
    in_dataset: bool | None = None
    url: str | None = None

    # The aliases LangSmith's Run exposes under the newer token/cost names.
    @property
    def input_tokens(self) -> int | None:
        return self.prompt_tokens

    @property
    def output_tokens(self) -> int | None:
        return self.completion_tokens

    @property
    def input_cost(self) -> Decimal | None:
        return self.prompt_cost

    @property
    def output_cost(self) -> Decimal | None:
        return self.completion_cost

    @property
    def input_token_details(self) -> dict[str, int] | None:
        return self.prompt_token_details

    @property
    def output_token_details(self) -> dict[str, int] | None:
        return self.completion_token_details

    @property
    def input_cost_details(self) -> dict[str, Decimal] | None:
        return self.prompt_cost_details

    @property
    def output_cost_details(self) -> dict[str, Decimal] | None:
        return self.completion_cost_details

    @classmethod
    def from_wire(cls, wire: dict[str, Any], **overrides: Any) -> Run:
        """A ``Run`` from a LangSmith ingest dict, with status, ancestry and usage derived."""
        data = {**wire, **usage_from_wire(wire).as_run_fields()}
        order = wire.get("dotted_order") or ""
        ancestors = ids.order_ids(order)[:-1] if order else []
        if ancestors:
            data.setdefault("parent_run_ids", ancestors)
        if "status" not in wire:
            data["status"] = (
                "error" if wire.get("error") else ("success" if wire.get("end_time") else "pending")
            )
        data.update(overrides)
        return cls.model_validate(data)

    @classmethod
    def from_run_tree(cls, run: RunTree, *, include_children: bool = False) -> Run:
        wire = run.to_wire("post")
        attachments = {
            name: {"mime_type": mime, "data": data}
            for name, (mime, data) in run.attachments.items()
        }
        children = None
        if include_children:
            children = [cls.from_run_tree(c, include_children=True) for c in run.child_runs]
        return cls.from_wire(
            wire,
            attachments=attachments,
            child_runs=children,
            child_run_ids=[c.id for c in run.child_runs] or None,
        )


class Usage(BaseModel):
    """LLM usage of one run (token counts, costs, first-token time)."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    input_token_details: dict[str, int] | None = None
    output_token_details: dict[str, int] | None = None
    input_cost: Decimal | None = None
    output_cost: Decimal | None = None
    total_cost: Decimal | None = None
    input_cost_details: dict[str, Decimal] | None = None
    output_cost_details: dict[str, Decimal] | None = None
    first_token_time: datetime | None = None

    def as_run_fields(self, *, include_none: bool = False) -> dict[str, Any]:
        """The figures under LangSmith ``Run`` field names; ``include_none`` keeps absent ones."""
        fields = {
            "prompt_tokens": self.input_tokens,
            "completion_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
            "prompt_token_details": self.input_token_details,
            "completion_token_details": self.output_token_details,
            "prompt_cost": self.input_cost,
            "completion_cost": self.output_cost,
            "total_cost": self.total_cost,
            "prompt_cost_details": self.input_cost_details,
            "completion_cost_details": self.output_cost_details,
            "first_token_time": self.first_token_time,
        }
        if include_none:
            return fields
        return {k: v for k, v in fields.items() if v is not None}


#: No single run reports a trillion tokens; a larger count is garbage, and capping it keeps the
#: collector's per-trace sums inside SQLite's 64-bit integers.
MAX_TOKEN_COUNT = 2**40


def _int(value: Any) -> int | None:
    # A JSON encoder may write a count as 3.0: keep it; 2.5 tokens (or NaN, or -1) is garbage.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TOKEN_COUNT:
        return value
    return None


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        return None
    try:
        result = Decimal(str(value))
    except InvalidOperation:
        return None
    return result if result.is_finite() else None


def _int_map(value: Any) -> dict[str, int] | None:
    if not isinstance(value, dict):
        return None
    return {str(k): n for k, v in value.items() if (n := _int(v)) is not None} or None


def _decimal_map(value: Any) -> dict[str, Decimal] | None:
    if not isinstance(value, dict):
        return None
    result = {str(k): d for k, v in value.items() if (d := _decimal(v)) is not None}
    return result or None


def usage_from_wire(wire: dict[str, Any]) -> Usage:
    """Usage as the LangSmith SDK reports it: ``outputs.usage_metadata`` (or the same under
    ``extra.metadata``), and the first ``new_token`` event's time. Malformed values are ignored."""
    outputs = wire.get("outputs")
    extra = wire.get("extra")
    meta = extra.get("metadata") if isinstance(extra, dict) else None
    usage: Any = None
    if isinstance(outputs, dict):
        usage = outputs.get("usage_metadata")
    if not isinstance(usage, dict) and isinstance(meta, dict):
        usage = meta.get("usage_metadata")
    result = Usage()
    if isinstance(usage, dict):
        result.input_tokens = _int(usage.get("input_tokens"))
        result.output_tokens = _int(usage.get("output_tokens"))
        result.total_tokens = _int(usage.get("total_tokens"))
        # "is not None", not truthiness: 0 in + 0 out is a total of 0, not an unknown total.
        if result.total_tokens is None and (
            result.input_tokens is not None or result.output_tokens is not None
        ):
            result.total_tokens = (result.input_tokens or 0) + (result.output_tokens or 0)
        result.input_token_details = _int_map(usage.get("input_token_details"))
        result.output_token_details = _int_map(usage.get("output_token_details"))
        result.input_cost = _decimal(usage.get("input_cost"))
        result.output_cost = _decimal(usage.get("output_cost"))
        result.total_cost = _decimal(usage.get("total_cost"))
        if result.total_cost is None and (
            result.input_cost is not None or result.output_cost is not None
        ):
            result.total_cost = (result.input_cost or Decimal(0)) + (
                result.output_cost or Decimal(0)
            )
        result.input_cost_details = _decimal_map(usage.get("input_cost_details"))
        result.output_cost_details = _decimal_map(usage.get("output_cost_details"))
    for event in wire.get("events") or ():
        if isinstance(event, dict) and event.get("name") == "new_token" and event.get("time"):
            try:
                when = datetime.fromisoformat(str(event["time"]).replace("Z", "+00:00"))
            except ValueError:
                continue
            result.first_token_time = when if when.tzinfo else when.replace(tzinfo=timezone.utc)
            break
    return result

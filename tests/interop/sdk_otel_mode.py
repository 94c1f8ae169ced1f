"""Run by test_otel_ingest.py in a fresh interpreter: the LangSmith SDK in OTel-only mode (set
by the environment) tracing a few runs, then flushing its OTel exporter."""

import contextlib

from langsmith import traceable
from langsmith.run_trees import get_cached_client
from opentelemetry import trace


@traceable(run_type="llm", name="otel-llm")
def llm(p: str) -> dict[str, object]:
    usage = {"input_tokens": 9, "output_tokens": 9, "total_tokens": 18}
    return {"text": p, "usage_metadata": usage}


@traceable(run_type="tool", name="otel-tool")
def tool(x: int) -> int:
    if x < 0:
        raise ValueError("otel tool failed")
    return x


@traceable(name="otel-root", tags=["otel-tag"], metadata={"tenant": "acme"})
def root() -> None:
    llm("hi")
    tool(1)
    with contextlib.suppress(ValueError):
        tool(-1)


root()
get_cached_client().flush()  # the runs reach the SDK's OTel exporter...
assert trace.get_tracer_provider().force_flush(10_000)  # ...which sends them now

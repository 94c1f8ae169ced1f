"""Today's wire (langsmith 0.14+ Python, 0.12 JS): ``langsmith-address``, no more
``langsmith-replicas`` out, ``reroot`` in replica updates, plus-as-space in baggage read back
through OpenTelemetry, and this service's own facts never leaving it. Each checked against the
real LangSmith SDK where it writes or reads the same header."""

from __future__ import annotations

import json
from urllib.parse import quote, quote_plus

import pytest
from langsmith.run_trees import RunTree as SdkRunTree

from tracestitch import RunTree
from tracestitch.propagation import extract, inject, stats
from tracestitch.testing import capture_runs

ORDER = RunTree("caller").dotted_order
LRN = "lrn:agents/support-agent/environments/production"


def test_baggage_reencoded_by_opentelemetry_reads_spaces_back() -> None:
    # OTel Python's W3CBaggagePropagator unquotes each value and re-encodes it with
    # quote_plus: a space comes back as '+'.
    meta = json.dumps({"customer": "acme corp", "plus": "1+1"})
    baggage = (
        f"langsmith-metadata={quote_plus(meta)},langsmith-tags={quote_plus('beta run,x')},"
        f"langsmith-project={quote_plus('my project')}"
    )
    remote = extract({"langsmith-trace": ORDER, "baggage": baggage})
    assert remote is not None
    assert remote.metadata == {"customer": "acme corp", "plus": "1+1"}
    assert remote.tags == ["beta run", "x"]
    assert remote.project_name == "my project"


def test_what_we_write_never_holds_a_bare_plus() -> None:
    run = RunTree("c", metadata={"k": "1+1 a"}, tags=["x+y"], project_name="p+q")
    headers = inject(run)
    values = [m.partition("=")[2] for m in headers["baggage"].split(",")]
    assert values and all("+" not in v for v in values)
    remote = extract(headers)
    assert remote is not None
    assert (remote.metadata, remote.tags, remote.project_name) == ({"k": "1+1 a"}, ["x+y"], "p+q")


def test_address_is_read_carried_and_set_on_the_runs() -> None:
    sdk_parent = SdkRunTree(
        name="upstream",
        address={"kind": "AGENT", "id": "support-agent", "environment": "PRODUCTION"},
    )
    headers = sdk_parent.to_headers()
    assert f"langsmith-address={quote(LRN)}" in headers["baggage"]
    with capture_runs() as runs:
        parent = RunTree.from_headers(headers)
        assert parent is not None
        child = parent.create_child("handler")
        grandchild = child.create_child("call")
        out = inject(grandchild)
        grandchild.end()
        grandchild.post()
        child.end()
        child.post()
    assert child.address == grandchild.address == LRN
    wire = child.to_wire()
    assert wire["address"] == LRN and "session_name" not in wire
    assert f"langsmith-address={quote(LRN)}" in out["baggage"]
    assert "langsmith-project" not in out["baggage"]
    # The SDK downstream reads the address back.
    downstream = SdkRunTree.from_headers(out)
    assert downstream is not None and downstream.address is not None
    assert downstream.address["id"] == "support-agent"
    assert {r.name for r in runs} == {"handler", "call"}


def test_a_project_named_here_outranks_an_inherited_address() -> None:
    parent = RunTree.from_headers({"langsmith-trace": ORDER, "baggage": f"langsmith-address={LRN}"})
    assert parent is not None
    child = parent.create_child("mine", project_name="local-project")
    assert child.address is None and child.to_wire()["session_name"] == "local-project"


def test_a_parent_naming_both_project_and_address_is_ignored_as_the_sdks_do() -> None:
    headers = {"langsmith-trace": ORDER, "baggage": f"langsmith-project=p,langsmith-address={LRN}"}
    assert SdkRunTree.from_headers(headers) is None  # what the SDK does
    assert extract(headers) is None
    assert stats() == {"baggage_project_and_address": 1}


@pytest.mark.parametrize(
    "value",
    [
        "lrn:agents/Support/environments/production",  # upper-case id
        "lrn:agents/support/environments/qa",  # no such environment
        "lrn:agents/support",
        "https://evil.example",
    ],
)
def test_an_unusable_address_is_dropped_and_counted(value: str) -> None:
    remote = extract({"langsmith-trace": ORDER, "baggage": f"langsmith-address={quote(value)}"})
    assert remote is not None and remote.address is None
    assert stats() == {"address_invalid": 1}


def test_replicas_are_read_but_no_longer_written() -> None:
    replicas = [{"project_name": "audit", "updates": {"reroot": True, "api_url": "x"}}]
    headers = {
        "langsmith-trace": ORDER,
        "baggage": f"langsmith-replicas={quote(json.dumps(replicas))}",
    }
    remote = extract(headers)
    assert remote is not None
    assert remote.replicas == [{"project_name": "audit", "updates": {"reroot": True}}]
    parent = RunTree.from_headers(headers)  # trusts everything, replicas included
    assert parent is not None and parent.replicas
    out = inject(parent.create_child("c"))
    assert "langsmith-replicas" not in out["baggage"]


def test_this_services_facts_do_not_ride_in_baggage() -> None:
    run = RunTree(
        "GET /x",
        metadata={"tenant": "acme", "service": "checkout", "server.address": "10.0.0.7:8000"},
    )
    out = inject(run.create_child("call"))
    remote = extract(out)
    assert remote is not None and remote.metadata == {"tenant": "acme"}
    run_only_facts = RunTree("GET /y", metadata={"service": "checkout"})
    assert "langsmith-metadata" not in inject(run_only_facts).get("baggage", "")

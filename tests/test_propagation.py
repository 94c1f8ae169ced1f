from __future__ import annotations

import json
import time
import uuid
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracestitch import RunTree, propagation
from tracestitch.propagation import extract, inject, stats
from tracestitch.run_tree import new_run

PARENT = RunTree("caller", metadata={"tenant": "acme"}, tags=["beta"], project_name="shop")
ORDER = PARENT.dotted_order
BAGGAGE = "langsmith-metadata={}, langsmith-tags=beta,langsmith-project=shop".format(
    quote(json.dumps({"tenant": "acme"}))
)


def _header_shapes() -> list[tuple[str, Any]]:
    from aiohttp import hdrs  # noqa: F401  (aiohttp installs multidict)
    from httpx import Headers as HttpxHeaders
    from multidict import CIMultiDict
    from requests.structures import CaseInsensitiveDict
    from starlette.datastructures import Headers as StarletteHeaders

    plain = {"langsmith-trace": ORDER, "baggage": BAGGAGE}
    return [
        ("dict", plain),
        ("dict-titlecase", {"Langsmith-Trace": ORDER, "Baggage": BAGGAGE}),
        ("dict-bytes", {b"langsmith-trace": ORDER.encode(), b"baggage": BAGGAGE.encode()}),
        ("asgi", [(b"langsmith-trace", ORDER.encode()), (b"baggage", BAGGAGE.encode())]),
        (
            "wsgi-environ",
            {"REQUEST_METHOD": "GET", "HTTP_LANGSMITH_TRACE": ORDER, "HTTP_BAGGAGE": BAGGAGE},
        ),
        ("starlette", StarletteHeaders(headers=plain)),
        ("httpx", HttpxHeaders(plain)),
        ("multidict", CIMultiDict({"LangSmith-Trace": ORDER, "baggage": BAGGAGE})),
        ("requests", CaseInsensitiveDict(plain)),
    ]


@pytest.mark.parametrize(("shape", "headers"), _header_shapes(), ids=lambda v: str(v)[:20])
def test_extract_reads_every_header_shape(shape: str, headers: Any) -> None:
    remote = extract(headers)
    assert remote is not None, shape
    assert remote.run_id == PARENT.id
    assert remote.trace_id == PARENT.trace_id
    assert remote.metadata == {"tenant": "acme"}
    assert remote.tags == ["beta"]
    assert remote.project_name == "shop"
    assert stats() == {}


def test_from_headers_parent_links_children_and_is_never_exported() -> None:
    parent = RunTree.from_headers({"langsmith-trace": ORDER, "baggage": BAGGAGE})
    assert parent is not None
    child = parent.create_child("server")
    assert child.parent_run_id == PARENT.id
    assert child.trace_id == PARENT.trace_id
    assert child.dotted_order.startswith(ORDER + ".")
    assert child.project_name == "shop"
    assert child.metadata == {"tenant": "acme"}
    assert child.tags == ["beta"]
    seen: list[str] = []

    class Recorder:
        def submit(self, op: str, run: RunTree) -> None:
            seen.append(run.name)

        def flush(self, timeout: float | None = None) -> bool:
            return True

        def shutdown(self, timeout: float | None = None) -> bool:
            return True

    parent.exporter = Recorder()
    parent.end()
    parent.post()
    parent.patch()
    assert seen == []  # the caller exports its own run


@pytest.mark.parametrize(
    ("trust", "fields"),
    [
        (True, {"metadata", "tags", "project"}),
        (False, set()),
        ({"tags"}, {"tags"}),
        ({"metadata", "project"}, {"metadata", "project"}),
    ],
)
def test_trust_decides_what_baggage_may_set(trust: Any, fields: set[str]) -> None:
    remote = extract({"langsmith-trace": ORDER, "baggage": BAGGAGE}, trust=trust)
    assert remote is not None
    assert (remote.metadata is not None) == ("metadata" in fields)
    assert (remote.tags is not None) == ("tags" in fields)
    assert (remote.project_name is not None) == ("project" in fields)


def test_replicas_keep_project_and_safe_updates_only() -> None:
    replicas = [
        ["proj-a", {"metadata": {"k": 1}, "reroot": True, "api_key": "x"}],
        {"project_name": "proj-b", "api_url": "https://evil.example", "api_key": "sk-stolen"},
        {"api_url": "https://evil.example"},
        "nonsense",
    ]
    baggage = f"langsmith-replicas={quote(json.dumps(replicas))}"
    remote = extract({"langsmith-trace": ORDER, "baggage": baggage})
    assert remote is not None
    assert remote.replicas == [
        {"project_name": "proj-a", "updates": {"metadata": {"k": 1}, "reroot": True}},
        {"project_name": "proj-b"},
    ]


@pytest.mark.parametrize(
    ("headers", "kind"),
    [
        ({"langsmith-trace": "garbage"}, "dotted_order_malformed"),
        ({"langsmith-trace": "x" * 100_000}, "langsmith-trace_too_large"),
        ([(b"langsmith-trace", b"\xff\xfe" * 30)], "non_utf8"),
        ([(b"langsmith-trace", ORDER.encode()), (b"langsmith-trace", b"other")], None),
        ({"traceparent": "00-" + "0" * 32 + "-00f067aa0ba902b7-01"}, "traceparent_invalid"),
        ({"traceparent": "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}, None),
        ({"traceparent": "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"}, None),
        ({"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-" + "0" * 16 + "-01"}, None),
    ],
)
def test_bad_headers_are_absent_and_counted(headers: Any, kind: str | None) -> None:
    assert extract(headers) is None
    counted = stats()
    assert sum(counted.values()) >= 1
    if kind is not None:
        assert counted.get(kind) == 1, counted


def test_bad_baggage_keeps_the_parent_but_drops_the_member() -> None:
    bad = {
        "langsmith-trace": ORDER,
        "baggage": "langsmith-metadata=%5B1%2C2%5D,langsmith-tags=ok,langsmith-project=%00",
    }
    remote = extract(bad)
    assert remote is not None and remote.run_id == PARENT.id
    assert remote.metadata is None
    assert remote.tags == ["ok"]
    assert remote.project_name is None
    assert stats() == {"metadata_not_object": 1, "project_invalid": 1}


def test_oversized_baggage_is_rejected_before_it_is_parsed() -> None:
    huge = "k=" + "v" * 200_000
    remote = extract({"langsmith-trace": ORDER, "baggage": huge})
    assert remote is not None and remote.metadata is None
    # Counted as too large, not as a parse failure: the size cap ran first.
    assert stats() == {"baggage_too_large": 1}


def test_w3c_traceparent_parent_and_tracestate_pass_through() -> None:
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    parent = RunTree.from_headers({"traceparent": tp, "tracestate": "vendor=abc"})
    assert parent is not None
    child = parent.create_child("server")
    assert child.trace_id.hex == "4bf92f3577b34da6a3ce929d0e0e4736"
    out = child.to_headers()
    assert out["traceparent"].startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-")
    # Ours in front (naming the child, for a tracestitch service past an OTel hop), theirs kept.
    assert out["tracestate"] == f"tracestitch={child.id.hex[16:]},vendor=abc"
    # The downstream parent is the child; its parent's span id is the upstream span.
    assert f"{child.parent_run_id.int & (2**64 - 1):016x}" == "00f067aa0ba902b7"  # type: ignore[union-attr]


def test_langsmith_trace_wins_over_traceparent() -> None:
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    remote = extract({"langsmith-trace": ORDER, "traceparent": tp})
    assert remote is not None and remote.run_id == PARENT.id and not remote.from_w3c


def test_inject_keeps_foreign_baggage_and_replaces_ours() -> None:
    run = RunTree("client", metadata={"a": 1}, tags=["t"])
    headers = {"Baggage": "userId=42, langsmith-tags=stale, sessionId=abc;prop=1"}
    inject(run, headers)
    members = [m.strip() for m in headers["Baggage"].split(",")]
    assert "userId=42" in members and "sessionId=abc;prop=1" in members
    assert "langsmith-tags=stale" not in members
    assert "langsmith-tags=t" in members
    assert headers["langsmith-trace"] == run.dotted_order
    assert headers["traceparent"] == f"00-{run.trace_id.hex}-{run.id.hex[16:]}-01"
    assert "baggage" not in headers  # merged into the caller's own key


def test_inject_into_header_objects() -> None:
    import httpx

    run = RunTree("client", metadata={"a": 1})
    headers = httpx.Headers({"baggage": "foreign=1"})
    inject(run, headers)  # type: ignore[arg-type]
    assert headers["langsmith-trace"] == run.dotted_order
    assert headers["baggage"].startswith("foreign=1,langsmith-metadata=")


def test_outgoing_metadata_over_the_cap_is_left_out_and_counted() -> None:
    run = RunTree("client", metadata={"blob": "x" * 10_000})
    headers = run.to_headers()
    assert "langsmith-metadata" not in headers.get("baggage", "")
    assert stats() == {"outgoing_metadata_too_large": 1}


# ------------------------------------------------------------------------------- fuzzing
_names = st.sampled_from(
    ["langsmith-trace", "Langsmith-Trace", "baggage", "BAGGAGE", "traceparent", "tracestate", "x"]
)
_texts = st.one_of(
    st.text(max_size=300),
    st.just(ORDER),
    st.just(ORDER + "." + ORDER),
    st.builds(lambda s: ORDER[: len(ORDER) - len(s)] + s, st.text(max_size=10)),
    st.just(BAGGAGE),
    st.builds(lambda s: "langsmith-metadata=" + quote(s), st.text(max_size=100)),
    st.builds(lambda n: "x" * n, st.integers(0, 120_000)),
    st.builds(lambda s: f"00-{s}-00f067aa0ba902b7-01", st.text("0123456789abcdef", max_size=33)),
)
_values = st.one_of(_texts, _texts.map(lambda s: s.encode("utf-8", "surrogatepass")), st.binary())


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(_names, _values), max_size=6),
    st.sampled_from(["pairs", "bytes-pairs", "dict"]),
)
def test_fuzz_extract_never_raises_and_results_are_consistent(
    pairs: list[tuple[str, Any]], shape: str
) -> None:
    if shape == "bytes-pairs":
        headers: Any = [
            (k.lower().encode(), v if isinstance(v, bytes) else v.encode("utf-8", "surrogatepass"))
            for k, v in pairs
        ]
    elif shape == "dict":
        headers = dict(pairs)
    else:
        headers = pairs
    remote = propagation.extract(headers)
    if remote is not None:
        # Whatever got through is well formed and linkable.
        child = new_run("c", "chain", remote)
        assert child.parent_run_id == remote.run_id
        assert isinstance(remote.trace_id, uuid.UUID)
        assert remote.metadata is None or isinstance(remote.metadata, dict)
        assert len(json.dumps(remote.metadata or {}, default=str)) <= 4096 * 2
        assert child.start_time_us >= remote.start_us
        # Whatever it holds goes out as printable ASCII (http.client refuses non-latin-1).
        out = propagation.inject(child, {})
        assert all(v.isascii() and v.isprintable() for v in out.values()), out


def test_a_parent_dated_far_ahead_is_not_believed() -> None:
    far = "20990101T000000000000Z0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
    latest = "99991231T235959999999Z0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
    assert extract({"langsmith-trace": far}) is None
    assert extract({"langsmith-trace": latest}) is None
    assert stats() == {"dotted_order_in_future": 2}
    # Within the allowed lead the parent is kept and the subtree shifted (see test_run_tree).
    near = RunTree("caller", start_time=ids_now_ms() + 60_000)
    assert extract(near.to_headers()) is not None


def test_deeply_nested_metadata_is_a_bad_header_not_an_internal_error() -> None:
    deep = "[" * 2000 + "]" * 2000  # inside the 4 KB cap, deeper than the parser recursion limit
    remote = extract({"langsmith-trace": ORDER, "baggage": f"langsmith-metadata={deep}"})
    assert remote is not None and remote.run_id == PARENT.id  # the parent survives
    assert remote.metadata is None
    assert stats() == {"metadata_invalid_json": 1}


def ids_now_ms() -> float:
    return time.time() * 1000


# --------------------------------------------------------------------- hostile but plausible

TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _printable_ascii(headers: dict[str, Any]) -> bool:
    return all(isinstance(v, str) and v.isascii() and v.isprintable() for v in headers.values())


@pytest.mark.parametrize(
    "state",
    [
        "中=1",  # isprintable(), but no header can carry it
        "k=é",
        "vendor=a\x00b",
        "Vendor=1",  # keys are lower case
        "k=v=w",  # '=' is not a value character
        "a=1,a=2",  # duplicate key
        ",".join(f"k{i}=v" for i in range(33)),  # more than 32 members
        "k=" + "v" * 257,  # a value longer than 256
        "k=a\tb",  # a tab is only allowed around the commas
    ],
)
def test_tracestate_outside_the_w3c_grammar_is_dropped_and_counted(state: str) -> None:
    remote = extract({"traceparent": TP, "tracestate": state})
    assert remote is not None and remote.tracestate is None  # the parent itself is kept
    assert stats() == {"tracestate_invalid": 1}
    child = new_run("c", "chain", remote)
    assert child.to_headers()["tracestate"] == f"tracestitch={child.id.hex[16:]}"  # ours only


def test_our_tracestate_member_names_the_last_tracestitch_run_above_an_otel_hop() -> None:
    above = RunTree("front")
    ours = above.to_headers()["tracestate"]
    # An OTel service passed the tracestate on, with its own span as the traceparent parent
    # and a member of its own in front.
    state = f"otel=1,{ours}"
    remote = extract({"traceparent": TP, "tracestate": state})
    assert remote is not None
    assert remote.ancestor_span == above.id.hex[16:]
    assert remote.tracestate == "otel=1"  # ours is rewritten on the way out, theirs kept
    # Straight from a tracestitch caller (no hop between), there is no ancestor to record.
    direct = above.to_headers()
    remote = extract({"traceparent": direct["traceparent"], "tracestate": direct["tracestate"]})
    assert remote is not None and remote.ancestor_span is None
    # At most 32 members: the rightmost foreign one makes room for ours.
    full = ",".join(f"k{i}=v" for i in range(32))
    remote = extract({"traceparent": TP, "tracestate": full})
    assert remote is not None
    out = new_run("c", "chain", remote).to_headers()["tracestate"]
    assert out.count(",") == 31 and out.startswith("tracestitch=") and "k31=v" not in out


def test_tracestate_passes_through_without_its_optional_whitespace() -> None:
    state = "rojo=00f067aa0ba902b7 , congo=t61rcWkgMzE,,\ttenant@sys=x y"
    remote = extract({"traceparent": TP, "tracestate": state})
    assert remote is not None
    assert remote.tracestate == "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE,tenant@sys=x y"
    assert stats() == {}


@pytest.mark.parametrize(
    ("member", "kind"),
    [
        # Valid JSON, but a lone surrogate is no text: such metadata cannot be exported.
        ("langsmith-metadata=%7B%22a%22%3A%22%5Cud800%22%7D", "metadata_invalid_json"),
        ("langsmith-metadata=%7B%22%5CuDFFF%22%3A1%7D", "metadata_invalid_json"),
        # A baggage value is percent-encoded ASCII: raw quotes, non-ASCII, controls are not.
        ('langsmith-metadata={"a":1}', "baggage_member_invalid"),
        ("langsmith-tags=中", "baggage_member_invalid"),
        # What aiohttp hands over for bytes that are not UTF-8 (surrogateescape).
        ("langsmith-project=caf\udcc3\udca9", "baggage_member_invalid"),
        ("langsmith-project=a\x7fb", "baggage_member_invalid"),
        # Percent-encoded bytes that are not UTF-8.
        ("langsmith-project=caf%E9", "baggage_member_invalid"),
        ("langsmith-tags=%ED%A0%80", "baggage_member_invalid"),
        # Nested deeper than anything a run's metadata needs (or the collector keeps).
        ("langsmith-metadata=" + quote('{"a":' * 40 + "1" + "}" * 40), "metadata_too_deep"),
        ("langsmith-metadata=" + quote("[" * 30 + "]" * 30), "metadata_too_deep"),
        ("langsmith-replicas=" + quote('[{"project_name": "a\\nb"}]'), "replicas_project_invalid"),
        ("langsmith-replicas=" + quote('[["a\\ud800", {}]]'), "replicas_invalid_json"),
    ],
)
def test_hostile_baggage_members_are_absent_and_counted(member: str, kind: str) -> None:
    remote = extract({"langsmith-trace": ORDER, "baggage": f"{member},langsmith-tags=ok"})
    assert remote is not None and remote.run_id == PARENT.id
    assert (remote.metadata, remote.project_name, remote.replicas) == (None, None, None)
    assert remote.tags == ["ok"]  # the later, valid member
    assert stats() == {kind: 1}
    child = new_run("c", "chain", remote)
    assert _printable_ascii(child.to_headers())


def test_plausible_baggage_still_passes() -> None:
    metadata = {"tenant": "中文 ✓", "emoji": "\U0001f4a5", "n": 2**70, "deep": [[[[1]]]]}
    members = [
        f"langsmith-metadata={quote(json.dumps(metadata))}",  # \ud83d\udca5: a valid pair
        f"langsmith-tags={quote('beta,中')}",
        "langsmith-project=my%20shop",
        "foreign=%F0%9F%92%A5;prop=1",
    ]
    remote = extract({"langsmith-trace": ORDER, "baggage": " , ".join(members)})
    assert remote is not None
    assert remote.metadata == {**metadata, "n": float(2**70)}
    assert (remote.tags, remote.project_name) == (["beta", "中"], "my shop")
    assert stats() == {}
    child = new_run("c", "chain", remote)
    assert _printable_ascii(child.to_headers())


def test_outgoing_headers_are_printable_ascii_whatever_the_run_holds() -> None:
    run = RunTree(
        "caller",
        metadata={"bad": "\ud800", "ok": "中"},  # a lone surrogate, set by the app itself
        tags=["t\udcff", "中"],
        project_name="p\ud800",
    )
    headers = run.to_headers()
    assert _printable_ascii(headers)
    assert extract(headers) is not None


def test_header_values_repeated_as_bytes_are_parsed_once_but_counted_every_time() -> None:
    good = [
        (b"langsmith-trace", ORDER.encode()),
        (b"baggage", BAGGAGE.encode()),
        (b"tracestate", b"rojo=1,congo=2"),
    ]
    first, second = extract(good), extract(good)
    assert first is not None and second is not None
    assert first.metadata == second.metadata == {"tenant": "acme"}
    assert first.tracestate == second.tracestate == "rojo=1,congo=2"
    second.metadata["tenant"] = "changed"  # a cached parse is handed out as a copy
    third = extract(good)
    assert third is not None and third.metadata == {"tenant": "acme"}
    bad = [
        (b"langsmith-trace", ORDER.encode()),
        (b"baggage", b"langsmith-metadata=%7B%22a%22%3A%22%5Cud800%22%7D"),
        (b"tracestate", "中=1".encode()),
    ]
    for _ in range(3):
        remote = extract(bad)
        assert remote is not None and remote.metadata is None and remote.tracestate is None
    assert stats() == {"metadata_invalid_json": 3, "tracestate_invalid": 3}


def test_the_w3c_sampled_flag_is_followed_and_passed_on() -> None:
    trace, span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    unsampled = RunTree.from_headers({"traceparent": f"00-{trace}-{span}-00", "tracestate": "v=1"})
    assert unsampled is not None and not unsampled.tracing_enabled
    # Nothing to record, so only the W3C headers go on, as the caller sent them (an OTel
    # service that records nothing passes its parent's context on unchanged).
    assert unsampled.to_headers() == {"traceparent": f"00-{trace}-{span}-00", "tracestate": "v=1"}
    sampled = RunTree.from_headers({"traceparent": f"00-{trace}-{span}-01"})
    assert sampled is not None and sampled.tracing_enabled
    # Other flag bits are not ours to read: only bit 0 says "sampled".
    other = RunTree.from_headers({"traceparent": f"00-{trace}-{span}-02"})
    assert other is not None and not other.tracing_enabled

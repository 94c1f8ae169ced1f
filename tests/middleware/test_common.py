from __future__ import annotations

import re

import pytest

from tracestitch.carriers import ENVIRON
from tracestitch.middleware import MiddlewareOptions, PathMatcher
from tracestitch.middleware._common import REDACTED, ServerTracer, default_service_name


@pytest.mark.parametrize(
    ("patterns", "path", "excluded"),
    [
        (["/health"], "/health", True),
        (["/health"], "/healthcheck", False),
        (["/health"], "/health/", False),
        (["/health*"], "/healthcheck", True),
        (["/static/*"], "/static/app.js", True),
        (["/static/*"], "/static", False),
        ([r"^/v\d+/internal/.*"], "/v2/internal/x", True),
        ([r"^/v\d+/internal/.*"], "/api/v2/internal/x", False),
        ([re.compile(r"/metrics")], "/metrics", True),
        ([re.compile(r"/metrics")], "/metrics/extra", False),  # fullmatch: anchored both ends
        ([], "/anything", False),
    ],
)
def test_path_matcher(patterns: list[str | re.Pattern[str]], path: str, excluded: bool) -> None:
    assert PathMatcher(patterns)(path) is excluded


@pytest.mark.parametrize("bad", ["", 42, None])
def test_path_matcher_rejects_bad_patterns(bad: object) -> None:
    with pytest.raises(TypeError):
        PathMatcher([bad])  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ""),
        ("q=1", "q=1"),
        ("q=1&token=abc", f"q=1&token={REDACTED}"),
        ("API_KEY=abc", f"API_KEY={REDACTED}"),
        ("%74oken=abc&x=2", f"%74oken={REDACTED}&x=2"),
        ("x=1;password=p", f"x=1;password={REDACTED}"),
        ("tokens=1&q=token", "tokens=1&q=token"),  # keys compared exactly; values never keys
        ("access_token", "access_token"),  # no value to hide
        ("a=1&&sig=", f"a=1&&sig={REDACTED}"),
    ],
)
def test_query_redaction(query: str, expected: str) -> None:
    assert ServerTracer(MiddlewareOptions()).recorder.redact_query(query) == expected


def test_query_is_capped() -> None:
    tracer = ServerTracer(MiddlewareOptions())
    assert len(tracer.recorder.redact_query("q=" + "x" * 100_000)) <= 2048


def test_recorded_headers_allow_list_and_redaction() -> None:
    tracer = ServerTracer(
        MiddlewareOptions(record_headers=["user-agent", "authorization", "X-Api-Key", "cookie"])
    )
    found, has_trace = tracer.recorder.scan_pairs(
        [
            (b"user-agent", b"ua"),
            (b"authorization", b"Bearer secret"),
            (b"x-api-key", b"k"),
            (b"cookie", b"a=b"),
            (b"cookie", b"c=d"),
            (b"x-other", b"no"),
            (b"langsmith-trace", b"whatever"),
        ]
    )
    assert found == {
        "user-agent": "ua",
        "authorization": REDACTED,
        "x-api-key": REDACTED,
        "cookie": f"{REDACTED}, {REDACTED}",
    }
    assert has_trace
    environ = {"HTTP_AUTHORIZATION": "Bearer s", "HTTP_USER_AGENT": "ua", "CONTENT_TYPE": "x/y"}
    assert tracer.recorder.record(environ, ENVIRON) == {
        "authorization": REDACTED,
        "user-agent": "ua",
    }


def test_header_values_are_capped() -> None:
    tracer = ServerTracer(MiddlewareOptions())
    found, _ = tracer.recorder.scan_pairs([(b"user-agent", b"x" * 100_000)])
    assert found is not None
    assert len(found["user-agent"]) <= 1024


@pytest.mark.parametrize(
    "kwargs",
    [{"sample_rate": 1.5}, {"sample_rate": -0.1}, {"trace_id_header": "bad header"}],
)
def test_options_are_validated_up_front(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"."):
        MiddlewareOptions(**kwargs)  # type: ignore[arg-type]


def test_exclude_must_be_a_list() -> None:
    with pytest.raises(TypeError):
        MiddlewareOptions(exclude="/health")


def test_default_service_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRACESTITCH_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)

    class Named:
        title = "orders"

    class Default:
        title = "FastAPI"

    assert default_service_name(Named()) == "orders"
    assert default_service_name(Default()) not in ("FastAPI", "")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    assert default_service_name(Named()) == "from-env"


def test_capture_runs_leaves_no_listener_behind() -> None:
    # Regression: remove_listener compared bound methods by identity, so every capture_runs()
    # stayed subscribed and later runs were converted once per stale collector.
    from tracestitch import exporter
    from tracestitch.testing import capture_runs

    before = len(exporter._listeners)
    with capture_runs():
        assert len(exporter._listeners) == before + 1
    assert len(exporter._listeners) == before


@pytest.mark.parametrize(
    "pairs",
    [
        [(b"langsmith-trace", b"20240315T120000000000Z0190a4f3-7f2b-7c3d-8e4f-0123456789ab")],
        [
            (b"traceparent", b"00-0190a4f37f2b7c3d8e4f0123456789ab-8e4f0123456789ac-01"),
            (b"tracestate", b"vendor=opaque-value"),
            (b"baggage", b"langsmith-tags=a%2Cb"),
        ],
        [  # two different parents: ambiguous, so none, whichever way the headers are read
            (b"langsmith-trace", b"20240315T120000000000Z0190a4f3-7f2b-7c3d-8e4f-0123456789ab"),
            (b"langsmith-trace", b"20240315T120000000000Z0190a4f3-7f2b-7c3d-8e4f-0123456789ac"),
        ],
        [(b"baggage", b"langsmith-tags=a"), (b"user-agent", b"ua")],  # no parent header
    ],
)
def test_the_trace_headers_scanned_once_read_as_the_list_itself(pairs: list) -> None:
    from tracestitch.propagation import extract

    tracer = ServerTracer(MiddlewareOptions(record_headers=["user-agent", "baggage"]))
    recorded, trace = tracer.recorder.scan_pairs([(b"host", b"h"), *pairs])
    has_parent = any(k in (b"langsmith-trace", b"traceparent") for k, _ in pairs)
    assert (trace is not None) == has_parent
    if trace is not None:
        a, b = extract(trace), extract(pairs)
        if a is None or b is None:
            assert a is b is None
        else:  # a W3C parent's order is made at "now": its ids and context must match
            a.dotted_order, a.start_us = b.dotted_order, b.start_us
            assert a == b
    # A trace header on the allow-list is recorded too.
    assert recorded is None or "host" not in recorded
    if any(k == b"baggage" for k, _ in pairs):
        assert recorded is not None and "baggage" in recorded

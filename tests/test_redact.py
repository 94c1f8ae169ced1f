from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracestitch.redact import (
    REDACTED,
    SENSITIVE_FRAGMENTS,
    SENSITIVE_QUERY_KEYS,
    QueryRedactor,
    redact_query,
)

R = REDACTED


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ""),
        ("q=cats&page=2", "q=cats&page=2"),
        ("q=cats&api_key=sk-123", f"q=cats&api_key={R}"),
        ("token=abc", f"token={R}"),
        ("my_access_token=abc", f"my_access_token={R}"),  # a fragment, not just exact names
        ("%54oken=abc", f"%54oken={R}"),  # percent-encoded name
        ("Client+Secret=x", f"Client+Secret={R}"),  # plus-encoded space, any case
        ("x=1;token=abc", f"x=1;token={R}"),  # ";" separates too
        ("token=", f"token={R}"),  # an empty value is marked as well
        ("code=4/0AX&state=s", f"code={R}&state=s"),  # OAuth code: exact name
        ("zipcode=90210", "zipcode=90210"),  # exact names are not fragments
        ("max_tokens=256&tokens=5", "max_tokens=256&tokens=5"),  # LLM parameters stay visible
        ("X-Amz-Signature=abc&X-Amz-Credential=k", f"X-Amz-Signature={R}&X-Amz-Credential={R}"),
        ("flag&token", "flag&token"),  # no value at all: nothing to hide
        ("a=1&&b=2;;c=3", "a=1&&b=2;;c=3"),  # rebuilt exactly when unchanged
    ],
)
def test_redact_query_table(query: str, expected: str) -> None:
    assert redact_query(query) == expected


def test_custom_names_add_to_nothing_by_default() -> None:
    only_tenant = QueryRedactor(keys=["tenant"], fragments=())
    assert only_tenant("tenant=acme&token=t") == f"tenant={R}&token=t"
    assert QueryRedactor(keys=(), fragments=())("token=t") == "token=t"


_QUERY_TEXT = st.text(
    alphabet=st.sampled_from(list("aeiknoprstwyKTAS_-=&;%+.0123456789İ")), max_size=60
)


@settings(max_examples=500, deadline=None)
@given(
    parts=st.lists(
        st.one_of(
            _QUERY_TEXT,
            st.sampled_from(sorted(SENSITIVE_QUERY_KEYS) + list(SENSITIVE_FRAGMENTS)).map(
                lambda w: f"x{w.upper()}y=1"
            ),
        ),
        max_size=4,
    )
)
def test_the_fast_probe_never_skips_what_the_full_check_would_redact(parts: list[str]) -> None:
    # The probe only decides whether to parse the query at all: with a probe that always
    # says "maybe", every query takes the full path, and the answers must be the same.
    query = "&".join(parts)
    fast, full = QueryRedactor(), QueryRedactor()
    full._probe = re.compile("")
    assert fast(query) == full(query)

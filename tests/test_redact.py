from __future__ import annotations

import pytest

from tracestitch.redact import REDACTED, QueryRedactor, redact_query

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

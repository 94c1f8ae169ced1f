"""One getter and one setter per header shape, and extract/inject through each of them."""

from __future__ import annotations

from typing import Any

import pytest
from multidict import CIMultiDict

from tracestitch import RunTree
from tracestitch.carriers import (
    ENVIRON,
    MAPPING,
    MULTIDICT,
    PAIRS,
    get_header,
    set_header,
    shape_of,
)
from tracestitch.propagation import extract, inject


def _shapes() -> list[tuple[Any, Any]]:
    return [
        ([(b"host", b"x"), (b"Baggage", b"vendor=1")], PAIRS),
        ({"REQUEST_METHOD": "GET", "HTTP_BAGGAGE": "vendor=1"}, ENVIRON),
        (CIMultiDict({"Baggage": "vendor=1"}), MULTIDICT),
        ({"Baggage": "vendor=1"}, MAPPING),
    ]


def _lower_case_shapes() -> list[tuple[Any, Any]]:
    # A dict is read by its exact lower-case keys first, the other cases only when none of
    # the trace headers is there under its own (the common case costs no scan).
    return [*_shapes()[:3], ({"baggage": "vendor=1"}, MAPPING)]


@pytest.mark.parametrize(("headers", "shape"), _shapes(), ids=lambda v: getattr(v, "name", ""))
def test_each_shape_reads_and_replaces_a_header_in_any_case(headers: Any, shape: Any) -> None:
    assert shape_of(headers) is shape
    assert [v if isinstance(v, str) else v.decode() for v in get_header(headers, "baggage")] == [
        "vendor=1"
    ]
    set_header(headers, "baggage", "vendor=2")
    values = get_header(headers, "BAGGAGE")
    assert [v if isinstance(v, str) else v.decode() for v in values] == ["vendor=2"]


@pytest.mark.parametrize(
    ("headers", "shape"), _lower_case_shapes(), ids=lambda v: getattr(v, "name", "")
)
def test_what_inject_writes_into_a_shape_extract_reads_back(headers: Any, shape: Any) -> None:
    run = RunTree("caller", metadata={"tenant": "acme"})
    inject(run, headers)
    parent = extract(headers)
    assert parent is not None
    assert (parent.run_id, parent.trace_id) == (run.id, run.trace_id)
    assert parent.metadata == {"tenant": "acme"}
    baggage = [v if isinstance(v, str) else v.decode() for v in get_header(headers, "baggage")]
    assert len(baggage) == 1 and baggage[0].startswith("vendor=1,")  # foreign members kept

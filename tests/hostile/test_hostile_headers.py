"""Hostile request headers through the three real middlewares, each next to the same app
untraced (see ``hostile_harness``): the answer never changes, nothing escapes, every trace
header tracestitch writes on the app's outgoing calls is printable ASCII and well formed, and
every run reaches the collector's ingest validation as a JSON object it accepts.

``bench/fuzz_headers.py`` runs the same harness on 100,000 sets per middleware; here a few
dozen per middleware keep the suite quick (``TRACESTITCH_FUZZ_EXAMPLES`` raises it).
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator

import pytest
from hostile_harness import MIDDLEWARES, Harness
from hostile_headers import hostile_set
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("TRACESTITCH_FUZZ_EXAMPLES", "60"))


@pytest.fixture(scope="module")
def module_harness() -> Iterator[Harness]:
    h = Harness()
    yield h
    h.close()


@pytest.fixture
def hostile(module_harness: Harness) -> Harness:
    module_harness.install()
    module_harness.settle()  # nothing left over from an earlier test
    return module_harness


@pytest.mark.parametrize("middleware", MIDDLEWARES)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(rng=st.randoms(use_true_random=False))
def test_hostile_headers_change_nothing_and_lose_nothing(
    hostile: Harness, middleware: str, rng: random.Random
) -> None:
    pairs = hostile_set(rng)
    result = hostile.run_set(middleware, pairs)
    lost, non_objects, problems = hostile.settle()
    assert result.changed is None, (pairs, result.changed)
    assert result.escaped is None, (pairs, result.escaped)
    assert result.refused == [], (pairs, result.refused)
    assert result.made == result.expected, (pairs, result.made)
    assert (lost, non_objects, problems) == (set(), 0, []), pairs

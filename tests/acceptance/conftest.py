"""The product run the way users run it: subprocesses configured only through the environment,
the real ``tracestitch serve``, exits and kills at awkward moments."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from acceptance_helpers import Collector


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Collector]:
    c = Collector(tmp_path / "collector.db").start()
    yield c
    c.stop()

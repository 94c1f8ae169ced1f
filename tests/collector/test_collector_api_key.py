"""Which API key `tracestitch serve` requires, and how it keeps a generated one."""

from __future__ import annotations

import io
import stat
from pathlib import Path

import pytest

from tracestitch.collector.server import resolve_api_key


def test_loopback_may_run_open_and_says_so(tmp_path: Path) -> None:
    out = io.StringIO()
    assert resolve_api_key("127.0.0.1", None, tmp_path / "t.db", out) is None
    assert "WARNING: no API key" in out.getvalue()


def test_off_loopback_generates_a_private_key_once(tmp_path: Path) -> None:
    out = io.StringIO()
    key = resolve_api_key("0.0.0.0", None, tmp_path / "t.db", out)
    assert key is not None and len(key) >= 32 and key in out.getvalue()
    key_file = tmp_path / "api_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert resolve_api_key("0.0.0.0", None, tmp_path / "t.db", io.StringIO()) == key
    assert [p.name for p in tmp_path.iterdir()] == ["api_key"]  # no temporary left behind


@pytest.mark.parametrize("content", ["", "\n", "short"])
def test_a_damaged_key_file_never_means_open(tmp_path: Path, content: str) -> None:
    (tmp_path / "api_key").write_text(content)
    with pytest.raises(SystemExit, match="holds no usable API key"):
        resolve_api_key("0.0.0.0", None, tmp_path / "t.db", io.StringIO())

"""Configuration mistakes found at once and said plainly, never a crash or silent nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from acceptance_helpers import Collector, clean_env, run_script
from test_short_lived import TRACES

STATS = """
    import json
    from tracestitch.exporter import get_exporter, shutdown_all
    shutdown_all()
    print(json.dumps(get_exporter().stats()))
"""


@pytest.mark.parametrize("endpoint", ["not-a-url", "127.0.0.1:8700", "ftp://x"])
def test_a_bad_endpoint_is_one_warning_line_and_the_app_runs(endpoint: str) -> None:
    env = clean_env(TRACESTITCH_ENDPOINT=endpoint, TRACESTITCH_SPOOL_DIR="off")
    result = run_script(TRACES + "\n    print('app ran')\n", env, "10")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "app ran"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "TRACESTITCH_ENDPOINT" in lines[0] and "http://" in lines[0]
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr


def test_bad_values_fall_back_one_by_one_and_good_ones_are_taken(collector: Collector) -> None:
    env = clean_env(
        TRACESTITCH_ENDPOINT=collector.url,
        TRACESTITCH_SPOOL_DIR="off",
        TRACESTITCH_TRACING="maybe",
        TRACESTITCH_MAX_QUEUE_BYTES="-5",
        TRACESTITCH_COMPRESSION="brotli",
        TRACESTITCH_SPOOL_MAX_BYTES="10MB",
    )
    result = run_script(TRACES + STATS, env, "100")
    assert result.returncode == 0, result.stderr
    warnings = result.stderr.strip().splitlines()
    assert len(warnings) == 3, result.stderr
    for name in ("TRACESTITCH_TRACING", "TRACESTITCH_MAX_QUEUE_BYTES", "TRACESTITCH_COMPRESSION"):
        assert sum(name in line for line in warnings) == 1
    stats = json.loads(result.stdout)
    assert stats["sent"] == 200 and stats["dropped"] == 0
    assert len(collector.runs()) == 200


def test_runs_refused_for_a_wrong_key_are_counted_with_their_reason(tmp_path: Path) -> None:
    collector = Collector(tmp_path / "keyed.db", api_key="right-key").start()
    try:
        env = clean_env(
            TRACESTITCH_ENDPOINT=collector.url,
            TRACESTITCH_API_KEY="wrong-key",
            TRACESTITCH_SPOOL_DIR="off",
        )
        result = run_script(TRACES + STATS, env, "50")
    finally:
        collector.stop()
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert stats["dropped"] == 100 and stats["pending"] == 0
    assert stats["drop_reasons"] == {"refused by the endpoint: HTTP 401": 100}
    assert "401" in result.stderr and "wrong-key" not in result.stderr

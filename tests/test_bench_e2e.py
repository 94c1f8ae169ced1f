"""The end-to-end bench (``bench/bench_e2e.py``) measures what it says: under each server
shape (ASGI, WSGI, aiohttp), its tracestitch pair records the request in both services and the
call between them (three runs a request), and its untraced pair records nothing. A smoke run:
a few requests, one round; the figures themselves are the bench's, not the test's.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import bench_e2e
from e2e_services import SERVERS


def test_each_server_shape_traces_both_services_and_the_call() -> None:
    requests = 40
    rows = bench_e2e.rows(bench_e2e.measure(requests, 1, list(SERVERS), ["tracestitch"]), requests)
    records = {(r["server"], r["mode"]): r["records_per_req"] for r in rows}
    assert set(records) == {(s, m) for s in SERVERS for m in ("untraced", "tracestitch")}
    for server in SERVERS:
        assert records[(server, "untraced")] == 0
        # Each request: A's server run, A's client run, B's server run (an exporter may split
        # a run into a create and an update, never fewer than one record a run).
        assert 3 <= records[(server, "tracestitch")] <= 6, (server, records)
    assert all(r["rps"] > 0 and r["cpu_us_per_req"] >= 0 for r in rows)

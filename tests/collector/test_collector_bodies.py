"""Request bodies: Content-Encoding edge cases, and one memory budget shared by all requests
(a decompression bomb is bounded across concurrent requests, not only within one)."""

from __future__ import annotations

import gzip
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import zstandard
from collector_helpers import API_KEY, MP_HEADERS, ServerThread, make_run, wire
from test_collector_reliability import start_collector

from tracestitch.collector import Store, create_app
from tracestitch.collector.bodies import BodyBudget

JSON = {"content-type": "application/json"}


@pytest.fixture
def http(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"x-api-key": API_KEY}) as client:
        yield client


def test_encodings_truncated_concatenated_and_trailing_junk(http: httpx.Client) -> None:
    good = orjson.dumps({"post": [wire(make_run("enc"))]})
    cases = [
        ("gzip", gzip.compress(good)[:-12], 422, "truncated"),
        ("gzip", gzip.compress(good) + b"junk-after-the-member", 422, "not valid gzip"),
        ("zstd", zstandard.compress(good) + b"junk", 422, "not valid zstd"),
        ("zstd", b"", 422, "not valid zstd"),
        ("br", good, 415, "Content-Encoding"),
        # A gzip body may be several members, a zstd body several frames: all of it counts.
        ("gzip", gzip.compress(good[:20]) + gzip.compress(good[20:]), 200, None),
        ("zstd", zstandard.compress(good[:20]) + zstandard.compress(good[20:]), 200, None),
    ]
    for encoding, body, status, message in cases:
        resp = http.post(
            "/runs/batch", content=body, headers={**JSON, "content-encoding": encoding}
        )
        assert resp.status_code == status, (encoding, resp.text)
        if message:
            assert message in resp.json()["detail"]
    resp = http.post(
        "/runs/multipart", content=b"x", headers={**MP_HEADERS, "content-encoding": "gzip"}
    )
    assert resp.status_code == 422


@pytest.fixture
def small_budget(store: Store) -> Iterator[tuple[str, BodyBudget]]:
    """A collector whose bodies may hold 1 MiB in all (64 KiB sent, 512 KiB decompressed)."""
    app = create_app(
        store,
        max_body_bytes=64 * 1024,
        max_decompressed_bytes=512 * 1024,
        max_body_memory_bytes=1024 * 1024,
    )
    server = ServerThread(app).start()
    yield server.url, app.state.body_budget
    server.stop()


def test_budget_held_by_others_is_503_with_retry_after(
    small_budget: tuple[str, BodyBudget], store: Store
) -> None:
    url, budget = small_budget
    body = zstandard.compress(orjson.dumps({"post": [wire(make_run("waits its turn"))]}))
    headers = {**JSON, "content-encoding": "zstd"}
    # Another request (stood in for by this lease) holds nearly all of the shared budget.
    with budget.lease() as other:
        other.take(budget.capacity - 100)
        resp = httpx.post(url + "/runs/batch", content=body, headers=headers)
        assert resp.status_code == 503
        assert resp.headers["retry-after"] == "1"
        assert "retry" in resp.json()["detail"]
        assert store.count_runs() == 0
        # The refused request gave back what it had taken.
        assert budget.in_use == budget.capacity - 100
    resp = httpx.post(url + "/runs/batch", content=body, headers=headers)
    assert resp.status_code == 200, resp.text
    assert store.count_runs() == 1
    assert budget.in_use == 0
    assert budget.peak > 0


def test_a_request_needing_more_than_the_whole_budget_is_413(
    small_budget: tuple[str, BodyBudget], store: Store
) -> None:
    url, budget = small_budget
    # Under the 512 KiB decompression cap, but it and its parse copy and zstd window need more
    # than the 1 MiB budget all to itself: no retry would help, so not a 503.
    payload = b'{"post": [' + b" " * (400 * 1024) + b"]}"
    resp = httpx.post(
        url + "/runs/batch",
        content=zstandard.compress(payload),
        headers={**JSON, "content-encoding": "zstd"},
    )
    assert resp.status_code == 413
    assert "budget" in resp.json()["detail"]
    assert budget.in_use == 0
    # The same body gzipped needs no decoder window: it fits.
    resp = httpx.post(
        url + "/runs/batch",
        content=gzip.compress(payload),
        headers={**JSON, "content-encoding": "gzip"},
    )
    assert resp.status_code == 200, resp.text


def _peak_rss_mib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"VmHWM:\s+(\d+) kB", status)
    assert found is not None
    return int(found.group(1)) // 1024


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_concurrent_bombs_are_bounded_by_one_budget(tmp_path: Path) -> None:
    # `tracestitch serve --max-body-mb 2`: 10 MiB decompressed per request, and a budget of
    # 2 + 3 x 10 = 32 MiB for all bodies at once. 32 concurrent bombs, each expanding to just
    # under the per-request cap, cost 32 x (10 MiB + its decoder window + its parse copy) when
    # only the per-request cap holds (about 400 MiB of peak RSS, measured); with the shared
    # budget, one or two run at a time and the rest are told to retry.
    proc, url = start_collector(tmp_path / "bombs.db", "--max-body-mb", "2")
    try:
        headers = {"x-api-key": API_KEY, **JSON, "content-encoding": "zstd"}
        with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
            # Warm up: the first zstd request imports and allocates what every later one reuses.
            assert client.post("/runs/batch", content=zstandard.compress(b"{}")).status_code == 200
            before = _peak_rss_mib(proc.pid)
            bomb = zstandard.compress(b'{"post": [' + b" " * (10 * 1024 * 1024 - 100) + b"]}")
            assert len(bomb) < 1024
            statuses: list[httpx.Response] = []
            start = threading.Barrier(32)

            def send() -> None:
                with httpx.Client(base_url=url, headers=headers, timeout=60) as own:
                    start.wait(30)
                    statuses.append(own.post("/runs/batch", content=bomb))

            threads = [threading.Thread(target=send) for _ in range(32)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(120)
            growth = _peak_rss_mib(proc.pid) - before
            codes = sorted(r.status_code for r in statuses)
            assert len(codes) == 32
            assert set(codes) <= {200, 503}, codes
            assert 200 in codes  # one request may wait for the budget: there is progress
            assert all(r.headers["retry-after"] == "1" for r in statuses if r.status_code == 503)
            # The budget (32 MiB) plus the allocator's and the server's own slack.
            assert growth < 32 + 96, f"peak RSS grew {growth} MiB; codes {codes}"
            assert client.get("/info").status_code == 200
    finally:
        proc.kill()
        proc.wait(10)

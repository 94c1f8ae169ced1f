"""The ``tracestitch`` command line: serve, traces, show, tail, help and errors."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from tracestitch.cli import main
from tracestitch.collector import Store
from tracestitch.collector.ingest import validate_op
from tracestitch.collector.query import TraceFilter

sys.path.insert(0, str(Path(__file__).parent / "collector"))
from collector_helpers import make_run, three_service_trace, wire


def ingest(store: Store, runs: list[dict[str, object]]) -> None:
    store.ingest([validate_op("post", wire(r), "run") for r in runs])


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "cli.db"
    store = Store(path)
    ingest(store, three_service_trace())
    ingest(store, [make_run("lonely", start_ms=5000, end_ms=5003, service="solo")])
    store.close()
    return path


def test_traces_lists_newest_first(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["traces", "--db", str(db)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert "lonely" in lines[0]
    assert "[solo]" in lines[0]
    assert "GET /checkout" in lines[1]
    assert "[gateway,orders,payments]" in lines[1]
    assert "\x1b[" not in lines[0]  # not a TTY: no colour
    assert main(["traces", "--db", str(db), "--service", "payments"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1


def test_show_prints_tree(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = Store(db)
    trace_id = store.list_traces(TraceFilter(name="checkout"))["traces"][0]["trace_id"]
    store.close()
    assert main(["show", trace_id, "--db", str(db)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith(f"trace {trace_id}")
    assert "└─ GET /checkout [chain] gateway 120.0 ms success" in lines[1]
    assert "├─ POST /orders [chain] orders 80.0 ms success" in lines[2]
    assert "summarise [llm] orders 50.0 ms success 150 tok" in out
    assert "! ValueError: card declined" in out
    assert main(["show", trace_id, "--db", str(db), "--color", "always"]) == 0
    assert "\x1b[" in capsys.readouterr().out


def test_errors_say_what_to_do(
    tmp_path: Path, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["show", "nope", "--db", str(db)]) == 2
    assert "tracestitch traces" in capsys.readouterr().err
    assert main(["show", str(uuid.uuid4()), "--db", str(db)]) == 1
    assert "tracestitch traces" in capsys.readouterr().err
    assert main(["traces", "--db", str(tmp_path / "missing.db")]) == 2
    assert "tracestitch serve" in capsys.readouterr().err
    assert main(["traces", "--url", "http://127.0.0.1:9"]) == 2
    assert "cannot reach" in capsys.readouterr().err


@pytest.mark.parametrize(
    "cmd", [[], ["serve"], ["traces"], ["show"], ["tail"], ["export"], ["import"]]
)
def test_help_everywhere(cmd: list[str]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tracestitch.cli", *cmd, "--help"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0
    assert "usage: tracestitch" in out.stdout


def test_tail_follows_new_traces(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result: list[int] = []
    tail = threading.Thread(
        target=lambda: result.append(
            main(["tail", "--db", str(db), "--interval", "0.02", "--max", "1", "--timeout", "10"])
        )
    )
    tail.start()
    store = Store(db)
    sent = []
    # Keep sending until tail reports one (it ignores what was stored before it started).
    deadline = time.monotonic() + 10
    while tail.is_alive() and time.monotonic() < deadline:
        run = make_run(f"fresh-{len(sent)}", start_ms=10_000 + len(sent), end_ms=10_010 + len(sent))
        ingest(store, [run])
        sent.append(run["id"])
        tail.join(0.05)
    store.close()
    assert result == [0]
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1
    assert out[0].split()[2] in sent
    # Nothing new: --timeout ends it.
    assert main(["tail", "--db", str(db), "--interval", "0.02", "--timeout", "0.1"]) == 0


def test_serve_loopback_open_and_remote_key(tmp_path: Path) -> None:
    env = {**os.environ, "TRACESTITCH_API_KEY": ""}
    for host, expect in (("127.0.0.1", "WARNING: no API key"), ("0.0.0.0", "Generated one")):
        db = tmp_path / host / "t.db"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tracestitch.cli",
                "serve",
                "--host",
                host,
                "--port",
                "0",
                "--db",
                str(db),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        try:
            assert proc.stdout is not None
            banner = []
            for _ in range(30):
                line = proc.stdout.readline()
                banner.append(line)
                if line.startswith("listening on") or not line:
                    break
            text = "".join(banner)
            assert expect in text, text
            assert "listening on http://" in text
            if host == "0.0.0.0":
                key_file = db.parent / "api_key"
                assert key_file.read_text().strip() in text
                assert (key_file.stat().st_mode & 0o777) == 0o600
        finally:
            proc.kill()
            proc.wait(10)


def test_demo_receives_its_own_options(capsys: pytest.CaptureFixture[str]) -> None:
    # `tracestitch demo --keep` must reach the demo, not trip the top-level parser.
    with pytest.raises(SystemExit) as exited:
        main(["demo", "--help"])
    assert exited.value.code == 0
    assert "--keep" in capsys.readouterr().out

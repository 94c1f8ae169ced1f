"""The CLI people reach for every day: --version, --json, trace-id prefixes, --since,
``show --detail``, export and import, a rejected key, ``| head``, and ``serve``'s own checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tracestitch import __version__
from tracestitch.cli import main
from tracestitch.collector import Store
from tracestitch.collector.ingest import validate_op
from tracestitch.testing import CollectorProcess

sys.path.insert(0, str(Path(__file__).parent / "collector"))
from collector_helpers import BOUNDARY, make_run, multipart_body, three_service_trace, wire

CLI = [sys.executable, "-m", "tracestitch.cli"]
# What the LangSmith SDK records for an exception raised in async code: repr, then a
# "traceback" that formats no exception at all.
SDK_ASYNC_ERROR = "ValueError('quota exceeded for model gpt-4o')\n\nNoneType: None\n"


def ingest(db: Path, runs: list[dict[str, object]]) -> None:
    store = Store(db)
    store.ingest([validate_op("post", wire(r), "run") for r in runs])
    store.close()


@pytest.fixture
def trace_db(tmp_path: Path) -> tuple[Path, list[dict[str, object]]]:
    runs = three_service_trace()
    runs.append(
        make_run("agent step", parent=runs[0], start_ms=116, end_ms=118, error=SDK_ASYNC_ERROR)
    )
    db = tmp_path / "cli.db"
    ingest(db, runs)
    return db, runs


def test_version_json_prefix_and_detail(
    trace_db: tuple[Path, list[dict[str, object]]], capsys: pytest.CaptureFixture[str]
) -> None:
    db, runs = trace_db
    trace_id = str(runs[0]["id"])
    version = subprocess.run([*CLI, "--version"], capture_output=True, text=True, timeout=30)
    assert version.returncode == 0
    assert version.stdout.strip() == f"tracestitch {__version__}"

    assert main(["traces", "--db", str(db), "--json"]) == 0
    page = json.loads(capsys.readouterr().out)
    assert [t["trace_id"] for t in page["traces"]] == [trace_id]
    assert page["traces"][0]["error_count"] == 2

    # 8 characters of the id are enough; the summary line of an SDK error is its first line.
    assert main(["show", trace_id[:8], "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"trace {trace_id}")
    assert "! ValueError('quota exceeded for model gpt-4o')" in out
    assert "NoneType" not in out
    assert "! ValueError: card declined" in out  # a Python traceback: its last line

    assert main(["show", trace_id[:8].upper(), "--db", str(db), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["trace_id"] == trace_id
    assert len(doc["runs"]) == 6

    assert main(["show", trace_id, "--db", str(db), "--detail"]) == 0
    out = capsys.readouterr().out
    assert 'File "pay.py", line 3' in out  # the whole error, not its last line
    assert '"prompt": "<script>' in out  # inputs
    assert '"a": "GET /CHECKOUT"' in out  # outputs
    assert '"service": "payments"' in out  # metadata

    assert main(["show", trace_id[:7], "--db", str(db)]) == 2
    assert "8 or more" in capsys.readouterr().err
    assert main(["show", "0000000000", "--db", str(db)]) == 1
    assert "tracestitch traces" in capsys.readouterr().err


def test_since_and_status_words(
    trace_db: tuple[Path, list[dict[str, object]]], capsys: pytest.CaptureFixture[str]
) -> None:
    from datetime import datetime, timezone

    db, _ = trace_db
    # The fixture's trace started in 2025: not within the last 15 minutes.
    assert main(["traces", "--db", str(db), "--since", "15m"]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "no traces match" in captured.err
    now = datetime.now(timezone.utc).isoformat()
    fresh = make_run("fresh", start_time=now, end_time=now)
    ingest(db, [fresh])
    assert main(["traces", "--db", str(db), "--since", "15m"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    assert fresh["id"] in lines[0]
    assert " success " in lines[0]  # the API's word, which --status takes too
    assert main(["traces", "--db", str(db), "--status", "pending", "--since", "1000w"]) == 0
    assert capsys.readouterr().out == ""
    with pytest.raises(SystemExit):
        main(["traces", "--db", str(db), "--since", "soon"])
    assert "not a duration" in capsys.readouterr().err


def test_export_import_and_a_rejected_key(
    tmp_path: Path,
    trace_db: tuple[Path, list[dict[str, object]]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    db, runs = trace_db
    trace_id = str(runs[0]["id"])
    exported = tmp_path / "trace.json"
    assert main(["export", trace_id[:10], "--db", str(db), "-o", str(exported)]) == 0
    doc = json.loads(exported.read_text())
    assert doc["trace_id"] == trace_id
    assert {r["id"] for r in doc["runs"]} == {r["id"] for r in runs}
    capsys.readouterr()

    # Into another database directly...
    other = tmp_path / "other.db"
    Store(other).close()
    assert main(["import", str(exported), "--db", str(other)]) == 0
    assert "imported 6 runs" in capsys.readouterr().err
    assert main(["show", trace_id, "--db", str(other)]) == 0
    copied = capsys.readouterr().out
    assert main(["show", trace_id, "--db", str(db)]) == 0
    assert capsys.readouterr().out == copied

    # ...and into a running collector that requires a key.
    key = "s3cret-key-for-the-cli-test"
    with CollectorProcess(tmp_path / "served.db", api_key=key) as collector:
        assert collector.proc is not None and collector.proc.stdout is not None
        assert collector.proc.stdout.readline().strip() == f"viewer: {collector.url}/#key={key}"
        url = ["--url", collector.url]
        for sent, word in (({"x-api-key": "wrong"}, "rejected"), ({}, "missing")):
            answer = httpx.get(collector.url + "/api/traces", headers=sent)
            assert answer.status_code == 401
            assert word in answer.json()["detail"]
        assert main(["import", str(exported), *url, "--api-key", "wrong"]) == 2
        err = capsys.readouterr().err
        assert "rejected the API key" in err
        env_key = os.environ.pop("TRACESTITCH_API_KEY", None)
        try:
            assert main(["traces", *url]) == 2
            assert "requires an API key" in capsys.readouterr().err
        finally:
            if env_key is not None:
                os.environ["TRACESTITCH_API_KEY"] = env_key
        assert main(["import", str(exported), *url, "--api-key", key]) == 0
        assert main(["show", trace_id[:8], *url, "--api-key", key]) == 0
        assert capsys.readouterr().out == copied


def test_export_and_import_carry_attachments_and_feedback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Through real `tracestitch serve` processes: out of one with `export --url`, into another
    # with `import --url` (one /runs/multipart request), and into a database file directly.
    runs = three_service_trace()
    root, llm = runs[0], runs[3]
    png = bytes(range(256)) * 4  # not text: every byte value survives
    note = '\u00e9t\u00e9 "quoted"\n'.encode()
    key = "export-key"
    source_db, served_db = tmp_path / "source.db", tmp_path / "served.db"
    with CollectorProcess(source_db, api_key=key) as source:
        headers = {"x-api-key": key}
        body = multipart_body(
            [(f"post.{r['id']}", json.dumps(wire(r)).encode(), "application/json") for r in runs]
            + [
                (f"attachment.{llm['id']}.screenshot.png", png, "image/png"),
                (f"attachment.{llm['id']}.notes", note, "text/plain"),
            ]
        )
        sent = httpx.post(
            source.url + "/runs/multipart",
            content=body,
            headers={**headers, "content-type": f"multipart/form-data; boundary={BOUNDARY}"},
        )
        assert sent.status_code in (200, 202), sent.text
        for target, score in ((root, 1), (llm, 0.25)):
            answer = httpx.post(
                source.url + "/feedback",
                json={"run_id": target["id"], "key": "helpful", "score": score, "comment": "ok"},
                headers=headers,
            )
            assert answer.status_code == 200, answer.text
        exported = tmp_path / "trace.json"
        url = ["--url", source.url, "--api-key", key]
        assert main(["export", str(root["id"])[:8], *url, "-o", str(exported)]) == 0
        assert "5 runs, 2 attachments and 2 feedback" in capsys.readouterr().err
    doc = json.loads(exported.read_text())
    assert {(a["run_id"], a["name"]) for a in doc["attachments"]} == {
        (llm["id"], "screenshot.png"),
        (llm["id"], "notes"),
    }
    assert sorted(f["score"] for f in doc["feedback"]) == [0.25, 1]

    with CollectorProcess(served_db, api_key=key) as served:
        url = ["--url", served.url, "--api-key", key]
        assert main(["import", str(exported), *url]) == 0
        trace = httpx.get(f"{served.url}/api/traces/{root['id']}", headers=headers).json()
        by_id = {r["id"]: r for r in trace["runs"]}
        assert set(by_id) == {r["id"] for r in runs}
        attachments = by_id[llm["id"]]["attachments"]
        assert set(attachments) == {"screenshot.png", "notes"}
        for name, data in (("screenshot.png", png), ("notes", note)):
            got = httpx.get(served.url + attachments[name]["presigned_url"], headers=headers)
            assert got.status_code == 200 and got.content == data
        assert got.headers["x-original-content-type"] == "text/plain"
        assert [f["score"] for f in by_id[llm["id"]]["feedback"]] == [0.25]
        assert [f["key"] for f in by_id[root["id"]]["feedback"]] == ["helpful"]
        # Exported again from where it was imported: the same document.
        assert main(["export", str(root["id"]), *url]) == 0
        assert json.loads(capsys.readouterr().out) == doc

    # Into a database file, and out of it: the same document again.
    other = tmp_path / "other.db"
    Store(other).close()
    assert main(["import", str(exported), "--db", str(other)]) == 0
    assert main(["export", str(root["id"]), "--db", str(other)]) == 0
    assert json.loads(capsys.readouterr().out) == doc
    doc["attachments"][0]["data_base64"] = "not base64!"
    exported.write_text(json.dumps(doc))
    assert main(["import", str(exported), "--db", str(other)]) == 2
    assert "attachments[0].data_base64: not base64" in capsys.readouterr().err


def test_piped_to_head_ends_quietly(tmp_path: Path) -> None:
    db = tmp_path / "many.db"
    ingest(db, [make_run(f"request {i}", start_ms=i) for i in range(600)])
    proc = subprocess.Popen(
        [*CLI, "traces", "--db", str(db), "-n", "600"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert "request" in proc.stdout.readline()
    proc.stdout.close()  # what `head -1` does once it has its line
    err = proc.stderr.read()
    assert proc.wait(30) == 141
    assert "Traceback" not in err
    assert "BrokenPipeError" not in err


def test_serve_checks_port_and_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--port", "80000"])
    assert exited.value.code == 2
    assert "'80000' is not a port: 0 to 65535" in capsys.readouterr().err
    not_a_db = tmp_path / "notes.txt"
    not_a_db.write_text("shopping list\n" * 200)
    assert main(["serve", "--port", "0", "--db", str(not_a_db)]) == 2
    err = capsys.readouterr().err
    assert f"{not_a_db} is not a tracestitch database" in err
    assert not (tmp_path / "api_key").exists()
    assert main(["serve", "--port", "0", "--db", str(tmp_path)]) == 2
    assert "is not a tracestitch database" in capsys.readouterr().err

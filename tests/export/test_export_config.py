"""configure() and the environment; FileSink and ConsoleSink; wire serialization edge cases."""

from __future__ import annotations

import datetime
import decimal
import io
from pathlib import Path

import orjson
import pytest

from tracestitch import RunTree, exporter
from tracestitch.export import config
from tracestitch.export.console import ConsoleSink
from tracestitch.export.deferred import DeferredExporter
from tracestitch.export.file import FileSink
from tracestitch.export.langsmith import LangSmithSink
from tracestitch.export.wire import dumps, serialize_run
from tracestitch.export.worker import BatchExporter, FanoutExporter
from tracestitch.settings import LANGSMITH_DEFAULT_ENDPOINT, read_env


def test_env_names_a_destination_and_keys_stay_private(tmp_path: Path) -> None:
    env = {
        "LANGSMITH_ENDPOINT": "http://127.0.0.1:9",
        "LANGSMITH_API_KEY": "sk-secret-1",
        "TRACESTITCH_SPOOL_DIR": str(tmp_path),
        "TRACESTITCH_SHUTDOWN_TIMEOUT": "0.5",
    }
    assert config.install_from_env(env)
    stand_in = exporter.get_exporter()
    assert isinstance(stand_in, DeferredExporter)  # built on a thread, not on this path
    built = stand_in.wait(10)
    assert exporter.get_exporter() is built  # it took the stand-in's place in the slot
    assert isinstance(built, BatchExporter) and isinstance(built.sink, LangSmithSink)
    assert built.shutdown_timeout == 0.5 and built.spool is not None
    assert "sk-secret" not in repr(built)
    built.shutdown(0.1)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"LANGSMITH_TRACING": "false", "LANGSMITH_ENDPOINT": "http://x"}, None),
        (
            {"LANGSMITH_TRACING": "true", "LANGSMITH_API_KEY": "k"},
            LANGSMITH_DEFAULT_ENDPOINT,
        ),
        ({"TRACESTITCH_ENDPOINT": "http://a", "LANGSMITH_ENDPOINT": "http://b"}, "http://a"),
    ],
)
def test_endpoint_resolution(env: dict[str, str], expected: str | None) -> None:
    settings = read_env(env)
    assert (settings.endpoint if settings.enabled else None) == expected


def test_configure_fans_out_and_installs(tmp_path: Path) -> None:
    out = configure_result = config.configure(
        endpoint="http://127.0.0.1:9",
        file=tmp_path / "runs.jsonl",
        spool_dir=None,
        project="proj",
    )
    assert isinstance(out, FanoutExporter) and exporter.get_exporter() is configure_result
    assert RunTree(name="r").project_name == "proj"
    out.shutdown(0.1)
    from tracestitch.context import set_defaults

    set_defaults(project_name="default")


def test_file_sink_rotates(tmp_path: Path) -> None:
    path = tmp_path / "runs.jsonl"
    exp = BatchExporter(FileSink(path, max_bytes=2000, backups=2), flush_interval=5)
    for i in range(30):
        run = RunTree(name=f"r{i}", inputs={"i": i}, exporter=exp)
        run.end()
        run.post()
        exp.flush(5)
    exp.shutdown()
    lines = [orjson.loads(line) for line in path.read_text().splitlines()]
    assert lines and all(line["op"] == "post" for line in lines)
    assert (tmp_path / "runs.jsonl.1").exists() and not (tmp_path / "runs.jsonl.3").exists()


def test_console_sink_prints_a_tree() -> None:
    stream = io.StringIO()
    exp = BatchExporter(ConsoleSink(stream), flush_interval=5)
    root = RunTree(name="GET /checkout", exporter=exp)
    root.post()
    child = root.create_child("summarise", "llm")
    child.end(error='Traceback (most recent call last):\n  File "x.py", line 1\nValueError: boom')
    child.post()
    root.end()
    root.patch()
    exp.flush(5)
    exp.shutdown()
    text = stream.getvalue()
    assert "GET /checkout  chain" in text
    # A traceback summed up by its exception, as the CLI and the viewer's list do.
    assert "└── summarise  llm" in text and "  error  ValueError: boom" in text
    assert "Traceback" not in text
    # The status words of the collector, its viewer and the CLI (one definition: status.py).
    lines = text.splitlines()
    assert lines[1].endswith("  success") and "ERROR" not in text


def test_dumps_never_raises() -> None:
    class Weird:
        def __repr__(self) -> str:
            raise RuntimeError("no")

    cyclic: dict[str, object] = {}
    cyclic["self"] = cyclic
    data = {
        "d": datetime.date(2024, 1, 1),
        "dec": decimal.Decimal("1.5"),
        "set": {1},
        "bytes": b"\xff\x00",
        "big": 2**70,
        "weird": Weird(),
        "exc": ValueError("x"),
    }
    out = orjson.loads(dumps(data))
    assert out["dec"] == 1.5 and out["set"] == [1] and out["big"] == str(2**70)
    assert out["weird"].startswith("<unrepresentable")
    assert isinstance(orjson.loads(dumps(cyclic)), dict)


def test_serialize_run_shapes() -> None:
    run = RunTree(name="r", inputs={"q": 1})
    [op] = serialize_run("post", run)
    main, fields = op.split()
    assert op.kind == "post" and list(fields) == ["inputs", "events", "extra"]
    assert b"parent_run_id" not in op.body  # None values left out, as the SDK's dump does
    [patch] = serialize_run("patch", run)
    assert "inputs" not in patch.split()[1] and b'"id"' in main


def test_numeric_env_options_reach_the_exporter_and_zero_switches_the_sweep_off() -> None:
    env = {
        "TRACESTITCH_ENDPOINT": "http://127.0.0.1:9",
        "TRACESTITCH_POST_OPEN_AFTER": "0",
        "TRACESTITCH_FLUSH_INTERVAL": "0.5",
        "TRACESTITCH_MAX_QUEUE_BYTES": "not-a-number",  # ignored, with a warning
    }
    settings = read_env(env)
    assert settings.post_open_after == 0.0 and settings.flush_interval == 0.5
    assert settings.max_queue_bytes == 64 << 20  # the default
    assert [name for name, _ in settings.problems] == ["TRACESTITCH_MAX_QUEUE_BYTES"]
    exp = BatchExporter(FileSink(Path("/dev/null")), post_open_after=0.0)
    assert exp._batcher.post_open_after is None  # 0: runs are shipped only at their end
    exp.shutdown(0.1)

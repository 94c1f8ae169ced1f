"""The one settings reader: every form a setting takes, and a clear message for every other."""

from __future__ import annotations

import pytest

from tracestitch.export.config import configure
from tracestitch.settings import (
    LANGSMITH_DEFAULT_ENDPOINT,
    SettingError,
    parse_bool,
    parse_compression,
    parse_seconds,
    parse_size,
    parse_url,
    read_env,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1048576", 1048576),
        ("10MB", 10_000_000),
        ("10mb", 10_000_000),
        ("256MiB", 256 << 20),
        ("64 KiB", 64 << 10),
        ("1.5GiB", int(1.5 * (1 << 30))),
        ("2k", 2000),
        ("512B", 512),
        (4096, 4096),
    ],
)
def test_sizes_in_the_forms_the_docs_write(text: object, expected: int) -> None:
    assert parse_size("X", text) == expected


@pytest.mark.parametrize(
    "text", ["-5", "0", "lots", "5 parsecs", "", "1e9", "\u0661\u0660MB", True]
)
def test_bad_sizes_name_the_setting_and_the_forms(text: object) -> None:
    with pytest.raises(SettingError, match=r"^X=.*(10MB or 256MiB|at least 1)"):
        parse_size("X", text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("1", True), ("YES", True), ("on", True), ("false", False), ("0", False),
     ("No", False), ("off", False), (True, True)],
)  # fmt: skip
def test_booleans(text: object, expected: bool) -> None:
    assert parse_bool("X", text) is expected


def test_a_boolean_that_is_neither_says_so() -> None:
    with pytest.raises(SettingError, match=r"X='maybe': expected true or false"):
        parse_bool("X", "maybe")


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("not-a-url", "did you mean http://not-a-url"),
        ("127.0.0.1:8700", "did you mean http://127.0.0.1:8700"),
        ("ftp://x", "http:// or https://"),
        ("http://", "http:// or https://"),
        ("http://host:99999", "http:// or https://"),
        ("http://ho st", "http:// or https://"),
        ("http://héllo", "http:// or https://"),
    ],
)
def test_bad_urls(text: str, hint: str) -> None:
    with pytest.raises(SettingError, match="expected an http") as info:
        parse_url("TRACESTITCH_ENDPOINT", text)
    assert hint in str(info.value)
    assert str(info.value).startswith("TRACESTITCH_ENDPOINT=")


def test_urls_lose_a_trailing_slash() -> None:
    assert parse_url("X", " https://api.example.com/ ") == "https://api.example.com"


def test_seconds_and_compression() -> None:
    assert parse_seconds("X", "0.5") == 0.5
    for bad in ("-1", "soon", "inf", "nan"):
        with pytest.raises(SettingError, match="number of seconds"):
            parse_seconds("X", bad)
    with pytest.raises(SettingError, match="more than 0"):
        parse_seconds("X", "0", allow_zero=False)
    assert parse_compression("X", "ZSTD") == "zstd"
    with pytest.raises(SettingError, match="X='brotli': expected one of auto, gzip, zstd, none"):
        parse_compression("X", "brotli")


def test_the_environment_falls_back_per_setting_and_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = {
        "TRACESTITCH_ENDPOINT": "127.0.0.1:8700",
        "TRACESTITCH_TRACING": "maybe",
        "TRACESTITCH_MAX_QUEUE_BYTES": "-5",
        "TRACESTITCH_SPOOL_MAX_BYTES": "10MB",
        "TRACESTITCH_COMPRESSION": "brotli",
        "TRACESTITCH_SHUTDOWN_TIMEOUT": "3",
    }
    with caplog.at_level("WARNING", logger="tracestitch"):
        settings = read_env(env)
    assert settings.endpoint is None and settings.enabled is True
    assert settings.max_queue_bytes == 64 << 20 and settings.compression == "auto"
    assert settings.spool_max_bytes == 10_000_000 and settings.shutdown_timeout == 3.0
    bad = {name for name, _ in settings.problems}
    assert bad == {
        "TRACESTITCH_ENDPOINT",
        "TRACESTITCH_TRACING",
        "TRACESTITCH_MAX_QUEUE_BYTES",
        "TRACESTITCH_COMPRESSION",
    }
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4
    for name in bad:
        assert sum(name in line for line in lines) == 1


def test_every_langsmith_switch_is_honoured() -> None:
    for name in ("LANGSMITH_TRACING", "LANGSMITH_TRACING_V2", "LANGCHAIN_TRACING_V2"):
        assert read_env({name: "false"}).enabled is False
    # The tracestitch name wins over the LangSmith ones.
    assert read_env({"TRACESTITCH_TRACING": "1", "LANGSMITH_TRACING": "false"}).enabled
    settings = read_env({"LANGSMITH_TRACING": "true", "LANGSMITH_API_KEY": "k"})
    assert settings.endpoint == LANGSMITH_DEFAULT_ENDPOINT


def test_an_api_key_is_never_echoed_in_a_problem() -> None:
    settings = read_env({"TRACESTITCH_API_KEY": "sk-secret\nX-Injected: 1"}, warn=False)
    assert settings.api_key is None
    assert "sk-secret" not in repr(settings.problems)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"endpoint": "127.0.0.1:8700"}, "endpoint='127.0.0.1:8700': expected an http"),
        ({"otlp_endpoint": "ftp://x"}, "otlp_endpoint='ftp://x'"),
        ({"compression": "brotli"}, "compression='brotli'"),
        ({"max_queue_bytes": -5}, "max_queue_bytes=-5: must be at least 1 bytes"),
        ({"spool_max_bytes": "lots"}, "spool_max_bytes='lots': expected a size"),
        ({"shutdown_timeout": -1}, "shutdown_timeout=-1: expected a number of seconds"),
        ({"flush_interval": 0}, "flush_interval=0: expected a number of seconds, more than 0"),
        ({"enabled": "maybe"}, "enabled='maybe': expected True or False"),
        ({"api_key": "k\r\nX: y"}, "api_key: must be printable ASCII"),
    ],
)
def test_configure_raises_a_value_error_naming_the_setting(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(")):
        configure(install=False, spool_dir=None, **kwargs)  # type: ignore[arg-type]


def test_configure_takes_sizes_as_text() -> None:
    exporter = configure(
        endpoint="http://127.0.0.1:9", spool_dir=None, install=False, max_queue_bytes="8MiB"
    )
    assert exporter.max_queue_bytes == 8 << 20  # type: ignore[attr-defined]
    exporter.shutdown(0.1)

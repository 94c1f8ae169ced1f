"""otlp_settings_from_env: the OTel exporter and resource variables, read as the spec says."""

from __future__ import annotations

import pytest

from tracestitch.export.otel_env import (
    NO_LIMIT_TIMEOUT_S,
    OTLPConfigError,
    otlp_settings_from_env,
)


@pytest.mark.parametrize(
    ("env", "url"),
    [
        ({}, None),
        ({"OTEL_SERVICE_NAME": "x", "OTEL_EXPORTER_OTLP_HEADERS": "a=b"}, None),
        # The base variable: /v1/traces appended to the base, with or without its slash.
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, "http://c:4318/v1/traces"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/"}, "http://c:4318/v1/traces"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "https://h/otel"}, "https://h/otel/v1/traces"),
        # The traces variable: as is (only an empty path becomes "/"), and it wins.
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318"}, "http://c:4318/"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c/x/traces"}, "http://c/x/traces"),
        (
            {
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t/v1/traces",
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://base",
            },
            "http://t/v1/traces",
        ),
        # Ours wins over both, and is a base URL that may already name /v1/traces.
        (
            {
                "TRACESTITCH_OTLP_ENDPOINT": "http://ours:4318",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t/v1/traces",
            },
            "http://ours:4318/v1/traces",
        ),
        ({"TRACESTITCH_OTLP_ENDPOINT": "http://ours/v1/traces"}, "http://ours/v1/traces"),
        # OTEL_TRACES_EXPORTER without otlp: the OTEL_* endpoints serve other signals.
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, None),
        (
            {"OTEL_TRACES_EXPORTER": "console, otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"},
            "http://c/v1/traces",
        ),
        (
            {"OTEL_TRACES_EXPORTER": "none", "TRACESTITCH_OTLP_ENDPOINT": "http://c"},
            "http://c/v1/traces",
        ),
    ],
)
def test_endpoint(env: dict[str, str], url: str | None) -> None:
    settings = otlp_settings_from_env(env)
    assert (settings.traces_endpoint if settings else None) == url


@pytest.mark.parametrize(
    ("raw", "expected", "problems"),
    [
        ("Authorization=Basic%20YWxhZGRpbg%3D%3D", {"Authorization": "Basic YWxhZGRpbg=="}, 0),
        (" a = 1 , b=x%2Cy ,, ", {"a": "1", "b": "x,y"}, 0),
        ("k=a+b", {"k": "a+b"}, 0),  # baggage is not form encoding: a plus stays a plus
        ("k=caf%C3%A9", {"k": "café"}, 0),
        ("X-Key=1,x-key=2", {"x-key": "2"}, 0),  # one header per case-insensitive name
        ("bad header=1,ok=2", {"ok": "2"}, 1),
        ("k=%zz,novalue,ok=2", {"ok": "2"}, 1),  # malformed members, one problem line
        ("k=a%0D%0AInjected:%201,ok=2", {"ok": "2"}, 1),  # no header injection
    ],
)
def test_headers_are_percent_decoded(raw: str, expected: dict[str, str], problems: int) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c", "OTEL_EXPORTER_OTLP_HEADERS": raw}
    settings = otlp_settings_from_env(env)
    assert settings is not None
    assert dict(settings.headers) == expected
    assert len(settings.problems) == problems
    for problem in settings.problems:  # names the variable, never a secret value
        assert "%" not in problem and "OTEL_EXPORTER_OTLP_HEADERS" in problem


def test_traces_options_replace_the_general_ones() -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c",
        "OTEL_EXPORTER_OTLP_HEADERS": "a=1,b=2",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "c=s3cr3t",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "5000",
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "2500",
        "OTEL_EXPORTER_OTLP_COMPRESSION": "none",
        "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "GZIP",
    }
    settings = otlp_settings_from_env(env)
    assert settings is not None
    assert dict(settings.headers) == {"c": "s3cr3t"}
    assert settings.timeout == 2.5 and settings.compression == "gzip"
    assert "s3cr3t" not in repr(settings)  # headers may be credentials: not in the repr


@pytest.mark.parametrize(
    ("timeout", "compression", "expected", "problems"),
    [
        (None, None, (10.0, "gzip"), 0),
        ("0", "none", (NO_LIMIT_TIMEOUT_S, "none"), 0),
        ("-5", "brotli", (10.0, "gzip"), 2),
        ("1.5", None, (10.0, "gzip"), 1),
    ],
)
def test_timeout_and_compression(
    timeout: str | None, compression: str | None, expected: tuple[float, str], problems: int
) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}
    if timeout is not None:
        env["OTEL_EXPORTER_OTLP_TIMEOUT"] = timeout
    if compression is not None:
        env["OTEL_EXPORTER_OTLP_COMPRESSION"] = compression
    settings = otlp_settings_from_env(env)
    assert settings is not None
    assert (settings.timeout, settings.compression) == expected
    assert len(settings.problems) == problems


@pytest.mark.parametrize(
    ("env", "service", "resource", "discarded"),
    [
        (
            {"OTEL_RESOURCE_ATTRIBUTES": "service.name=res,service.version=2%2E0,k%3D1=v%2C2"},
            "res",
            {"service.version": "2.0", "k=1": "v,2"},
            False,
        ),
        (  # OTEL_SERVICE_NAME wins over the resource attribute
            {"OTEL_SERVICE_NAME": "env", "OTEL_RESOURCE_ATTRIBUTES": "service.name=res,a=1"},
            "env",
            {"a": "1"},
            False,
        ),
        (  # and ours wins over OTEL_SERVICE_NAME, as in the middleware
            {"TRACESTITCH_SERVICE_NAME": "ours", "OTEL_SERVICE_NAME": "env"},
            "ours",
            {},
            False,
        ),
        (  # one malformed member discards the whole variable (the spec's SHOULD)
            {"OTEL_RESOURCE_ATTRIBUTES": "a=1,oops,service.name=res"},
            None,
            {},
            True,
        ),
        ({"OTEL_RESOURCE_ATTRIBUTES": "a=%E9"}, None, {}, True),  # not UTF-8
    ],
)
def test_service_and_resource(
    env: dict[str, str], service: str | None, resource: dict[str, str], discarded: bool
) -> None:
    settings = otlp_settings_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c", **env})
    assert settings is not None
    assert settings.service_name == service
    assert dict(settings.resource_attributes) == resource
    assert any("OTEL_RESOURCE_ATTRIBUTES" in p for p in settings.problems) == discarded


@pytest.mark.parametrize(
    "env",
    [
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"},
        {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "ftp://c/v1/traces"},
        {"TRACESTITCH_OTLP_ENDPOINT": "http://c:port"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
    ],
)
def test_unusable_configuration_is_a_clear_error(env: dict[str, str]) -> None:
    with pytest.raises(OTLPConfigError) as info:
        otlp_settings_from_env(env)
    assert next(iter(env)) in str(info.value) or "PROTOCOL" in str(info.value)


def test_protocols_we_cannot_speak_are_noted() -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",  # the traces one replaces it
    }
    settings = otlp_settings_from_env(env)
    assert settings is not None and "http/json" in settings.problems[0]
    # Our own variable is OTLP/HTTP whatever the OTel protocol variables say.
    ours = otlp_settings_from_env(
        {"TRACESTITCH_OTLP_ENDPOINT": "http://c", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    )
    assert ours is not None and ours.traces_endpoint == "http://c/v1/traces"

"""The shared client logic: the propagate_to policy, URL redaction, run naming, header stripping."""

from __future__ import annotations

import importlib
import re
import sys
from typing import Any

import pytest

from tracestitch.clients._common import (
    ClientOptions,
    ClientTracer,
    PropagationPolicy,
    default_run_name,
    is_internal_host,
    redact_query,
    strip_trace_headers,
    template_path,
)


def _allows(policy: PropagationPolicy, url: str) -> bool:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return policy.allows(parts.scheme, parts.hostname or "", parts.port, parts.path, parts.query)


@pytest.mark.parametrize(
    ("host", "internal"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("10.1.2.3", True),
        ("172.16.0.9", True),
        ("172.32.0.1", False),
        ("192.168.1.1", True),
        ("169.254.169.254", True),
        ("fe80::1%eth0", True),
        ("fd12:3456::1", True),
        ("::ffff:10.0.0.1", True),
        ("::ffff:8.8.8.8", False),
        ("8.8.8.8", False),
        ("2001:4860:4860::8888", False),
        ("2130706433", True),  # 127.0.0.1 as the resolver reads a bare number
        ("134744072", False),  # 8.8.8.8 the same way: not a single-label name
        ("127.1", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("service-b", True),
        ("service-b.", True),
        ("payments.prod.svc.cluster.local", True),
        ("printer.local", True),
        ("metadata.google.internal", True),
        ("app.localhost", True),
        ("api.openai.com", False),
        ("api.openai.com.", False),
        ("example.com", False),
        ("internal.example.com", False),
        ("local.example.com", False),
        ("evil.com.local.attacker.net", False),
        ("", False),
    ],
)
def test_internal_preset(host: str, internal: bool) -> None:
    assert is_internal_host(host) is internal
    assert PropagationPolicy("internal").allows("http", host, None, "/", "") is internal


@pytest.mark.parametrize(
    ("propagate_to", "url", "allowed"),
    [
        ("all", "https://api.openai.com/v1/chat", True),
        ("none", "http://127.0.0.1/", False),
        ([], "http://service-b/", False),
        (["api.partner.com"], "https://api.partner.com/x", True),
        (["api.partner.com"], "https://API.Partner.com/x", True),
        (["api.partner.com"], "https://www.partner.com/x", False),
        (["api.partner.com"], "http://service-b/", False),
        (["*.partner.com"], "https://a.b.partner.com/", True),
        (["*.partner.com"], "https://partner.com/", False),
        (["*.partner.com"], "https://evilpartner.com/", False),
        (["10.0.0.0/8"], "http://10.9.8.7/", True),
        (["10.0.0.0/8"], "http://11.0.0.1/", False),
        (["10.0.0.0/8"], "http://[::1]/", False),
        (["https://api.partner.com/v2/"], "https://api.partner.com/v2/items", True),
        (["https://api.partner.com/v2/"], "https://api.partner.com/v1/items", False),
        (["https://api.partner.com/v2/"], "http://api.partner.com/v2/items", False),
        (["https://api.partner.com/v2/"], "https://api.partner.com:8443/v2/items", False),
        (["https://api.partner.com"], "https://api.partner.com:443/any", True),
        (["https://api.partner.com"], "https://api.partner.com.evil.net/", False),
        ([re.compile(r"https://[a-z]+\.corp\.example/")], "https://db.corp.example/q", True),
        (
            [re.compile(r"https://[a-z]+\.corp\.example/")],
            "https://x.com/?https://a.corp.example/",
            False,
        ),
        (["internal", "api.partner.com"], "http://service-b/", True),
        (["internal", "api.partner.com"], "https://api.partner.com/", True),
        (["internal", "api.partner.com"], "https://api.openai.com/", False),
    ],
)
def test_explicit_policies(propagate_to: Any, url: str, allowed: bool) -> None:
    policy = PropagationPolicy(propagate_to)
    assert _allows(policy, url) is allowed
    assert _allows(policy, url) is allowed  # the cached answer is the same


@pytest.mark.parametrize("bad", [42, "", "ftp://"])
def test_policy_rejects_bad_entries(bad: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        PropagationPolicy([bad])


def test_policy_cache_is_bounded() -> None:
    policy = PropagationPolicy("internal")
    for i in range(3000):  # a stream of distinct hosts: recomputed, never held
        assert policy.allows("http", f"svc-{i}", None, "/", "")
        assert len(policy._cache) <= 1024


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ""),
        ("q=cats&page=2", "q=cats&page=2"),
        ("q=cats&api_key=sk-123", "q=cats&api_key=[REDACTED]"),
        (
            "access_token=abc&X-Amz-Signature=ff&sig=1",
            "access_token=[REDACTED]&X-Amz-Signature=[REDACTED]&sig=[REDACTED]",
        ),
        ("password=&key=v", "password=[REDACTED]&key=[REDACTED]"),
        ("flag&token", "flag&token"),
        ("client%5Fsecret=s3", "client%5Fsecret=[REDACTED]"),
    ],
)
def test_redact_query(query: str, expected: str) -> None:
    assert redact_query(query) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/", "/"),
        ("/items", "/items"),
        ("/items/42", "/items/{id}"),
        ("/items/42/parts/7/", "/items/{id}/parts/{id}/"),
        ("/u/3f2c9a1e-8d4b-4c1a-9e7f-0a1b2c3d4e5f", "/u/{id}"),
        ("/u/3f2c9a1e8d4b4c1a9e7f0a1b2c3d4e5f", "/u/{id}"),
        ("/obj/507f1f77bcf86cd799439011", "/obj/{id}"),
        ("/v1/models", "/v1/models"),
        ("/facadefacadefacade", "/facadefacadefacade"),
        ("/2024-01-01", "/2024-01-01"),
    ],
)
def test_template_path(path: str, expected: str) -> None:
    assert template_path(path) == expected


@pytest.mark.parametrize(
    ("args", "name"),
    [
        (("GET", "http", "service-b", None, "/items/42"), "GET service-b/items/{id}"),
        (("POST", "https", "api.example.com", 443, "/v1/chat"), "POST api.example.com/v1/chat"),
        (("GET", "http", "127.0.0.1", 8080, ""), "GET 127.0.0.1:8080/"),
        (("GET", "http", "::1", 9000, "/x"), "GET [::1]:9000/x"),
    ],
)
def test_default_run_name(args: tuple[Any, ...], name: str) -> None:
    assert default_run_name(*args) == name


def test_strip_removes_only_our_headers() -> None:
    headers = {
        "langsmith-trace": "x",
        "traceparent": "00-aa-bb-01",
        "baggage": "langsmith-project=p, vendor=1,langsmith-tags=a",
        "authorization": "Bearer t",
    }
    strip_trace_headers(headers)
    assert headers == {"baggage": "vendor=1", "authorization": "Bearer t"}


def test_strip_leaves_foreign_traceparent_alone() -> None:
    headers = {"traceparent": "00-aa-bb-01", "baggage": "vendor=1"}
    strip_trace_headers(headers)
    assert headers == {"traceparent": "00-aa-bb-01", "baggage": "vendor=1"}


def test_options_are_validated_early() -> None:
    with pytest.raises(TypeError):
        ClientTracer(not_an_option=True)
    with pytest.raises(TypeError):
        ClientTracer(ClientOptions(), propagate_to="all")
    assert "propagate_to" in ClientOptions.names()
    # The policy's cache is internal (its size is fixed by a bench figure), not an option.
    assert "policy_cache_size" not in ClientOptions.names()
    with pytest.raises(TypeError):
        ClientTracer(policy_cache_size=8)


@pytest.mark.parametrize(
    ("module", "framework", "extra"),
    [
        ("tracestitch.clients.httpx", "httpx", "httpx"),
        ("tracestitch.clients.aiohttp", "aiohttp", "aiohttp"),
        ("tracestitch.clients.requests", "requests", "requests"),
        ("tracestitch.clients.websockets", "websockets", "websockets"),
    ],
)
def test_missing_framework_names_the_extra(
    module: str, framework: str, extra: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, framework, None)  # makes `import framework` fail
    for name in [m for m in sys.modules if m.startswith(f"{framework}.")]:
        monkeypatch.setitem(sys.modules, name, None)  # and `from framework.sub import ...`
    monkeypatch.delitem(sys.modules, module, raising=False)
    with pytest.raises(ImportError, match=re.escape(f"pip install 'tracestitch[{extra}]'")):
        importlib.import_module(module)


def test_package_import_is_light() -> None:
    import subprocess

    code = (
        "import sys, tracestitch.clients; "
        "print(sorted(m for m in ('httpx','aiohttp','requests','websockets') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"

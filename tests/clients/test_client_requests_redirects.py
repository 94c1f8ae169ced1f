"""requests: trace headers never follow a redirect to a hop that may not have them.

Real servers on 127.0.0.1: two "internal" ones (http and https) that ``propagate_to`` allows and
that redirect, two "public" ones (http and https, other ports) that it does not. The https
servers use a certificate from a throwaway CA, so the stock https adapter really verifies and
sends. Every adapter combination a user may mount is driven through 302 and 307 redirects, and
every hop each server saw is checked: trace headers iff the hop was sent by a tracing adapter
to an allowed destination.
"""

from __future__ import annotations

import re
import select
import socket
import socketserver
import ssl
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import requests
import trustme
from requests.adapters import HTTPAdapter

from servers import run_wsgi
from tracestitch import trace
from tracestitch.clients.requests import TracingAdapter, instrument_session
from tracestitch.testing import capture_runs

ROOT = Path(__file__).resolve().parents[2]
PUBLIC_NAME = "public.example"


@dataclass(frozen=True)
class Hop:
    server: str
    method: str
    path: str
    headers: dict[str, str]


def recorder(name: str, hops: list[Hop]) -> Callable[..., Iterable[bytes]]:
    """WSGI: records every request; ``/redirect?to=URL&status=N`` redirects, else 200."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        headers = {
            key[5:].replace("_", "-").lower(): value
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        length = int(environ.get("CONTENT_LENGTH") or 0)
        if length:
            environ["wsgi.input"].read(length)
        hops.append(Hop(name, environ["REQUEST_METHOD"], environ["PATH_INFO"], headers))
        if environ["PATH_INFO"] == "/redirect":
            query = parse_qs(environ["QUERY_STRING"])
            status = query.get("status", ["302"])[0]
            start_response(
                f"{status} Redirect", [("Location", query["to"][0]), ("Content-Length", "0")]
            )
            return [b""]
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    return app


def carries_trace_headers(hop: Hop) -> bool:
    baggage = hop.headers.get("baggage", "")
    ours = any(m.strip().startswith("langsmith-") for m in baggage.split(","))
    return ours or any(h in hop.headers for h in ("langsmith-trace", "traceparent", "tracestate"))


@dataclass
class Servers:
    urls: dict[str, str]
    hops: list[Hop]
    ca_bundle: str
    tls_port: int


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost", PUBLIC_NAME)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    bundle = tmp_path_factory.mktemp("tls") / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    hops: list[Hop] = []
    with (
        run_wsgi(recorder("internal-http", hops)) as internal_http,
        run_wsgi(recorder("internal-https", hops), context) as internal_https,
        run_wsgi(recorder("public-http", hops)) as public_http,
        run_wsgi(recorder("public-https", hops), context) as public_https,
    ):
        urls = {
            "internal-http": internal_http,
            "internal-https": internal_https,
            "public-http": public_http,
            "public-https": public_https,
        }
        port = urlsplit(public_https).port
        assert port is not None
        yield Servers(urls, hops, str(bundle), port)


class CustomAdapter(HTTPAdapter):
    """What a user may have mounted already: any adapter that does not trace."""


Setup = Callable[[list[str]], tuple[requests.Session, set[str]]]


def _mounted(http: bool, https: bool) -> Setup:
    def setup(policy: list[str]) -> tuple[requests.Session, set[str]]:
        session = requests.Session()
        if http:
            session.mount("http://", TracingAdapter(propagate_to=policy))
        if https:
            session.mount("https://", TracingAdapter(propagate_to=policy))
        return session, {s for s, on in (("http", http), ("https", https)) if on}

    return setup


def _instrumented(policy: list[str]) -> tuple[requests.Session, set[str]]:
    return instrument_session(requests.Session(), propagate_to=policy), {"http", "https"}


def _wrapping_custom(policy: list[str]) -> tuple[requests.Session, set[str]]:
    session = requests.Session()
    session.mount("http://", TracingAdapter(wrapped=CustomAdapter(), propagate_to=policy))
    session.mount("https://", CustomAdapter())
    return session, {"http"}


SETUPS: dict[str, Setup] = {
    "http traced, https stock": _mounted(http=True, https=False),
    "https traced, http stock": _mounted(http=False, https=True),
    "both traced": _mounted(http=True, https=True),
    "instrument_session": _instrumented,
    "http traced over a custom adapter, https custom": _wrapping_custom,
}


def _redirect(url: str, to: str, status: int) -> str:
    return f"{url}/redirect?status={status}&to={quote(to, safe='')}"


@pytest.mark.parametrize("setup", list(SETUPS))
def test_no_trace_headers_on_any_hop_that_may_not_have_them(servers: Servers, setup: str) -> None:
    urls = servers.urls
    # Only the two internal servers may receive trace headers (by URL, so ports count).
    policy = [urls["internal-http"] + "/", urls["internal-https"] + "/"]
    session, traced_schemes = SETUPS[setup](policy)
    checked = 0
    for start, other in (("internal-http", "internal-https"), ("internal-https", "internal-http")):
        for target in ("public-http", "public-https"):
            for status in (302, 307):
                for via_other in (False, True):
                    landing = urls[target] + "/landing"
                    first = _redirect(urls[other], landing, status) if via_other else landing
                    url = _redirect(urls[start], first, status)
                    servers.hops.clear()
                    with capture_runs() as runs, trace("handler"):
                        response = session.post(
                            url, data=b"payload", verify=servers.ca_bundle, timeout=10
                        )
                    assert response.status_code == 200
                    assert [h.server for h in servers.hops] == [
                        start,
                        *([other] if via_other else []),
                        target,
                    ]
                    for hop in servers.hops:
                        scheme = hop.server.rsplit("-", 1)[1]
                        allowed = hop.server.startswith("internal-")
                        expected = scheme in traced_schemes and allowed
                        assert carries_trace_headers(hop) == expected, (setup, url, hop)
                    # One client run per hop its adapter traced, public ones included.
                    traced_hops = [
                        h for h in servers.hops if h.server.rsplit("-", 1)[1] in traced_schemes
                    ]
                    assert len(runs) == 1 + len(traced_hops)
                    checked += 1
    session.close()
    assert checked == 16


@dataclass
class Tunnel:
    url: str
    connects: list[str]


class _ConnectHandler(socketserver.BaseRequestHandler):
    """An HTTP CONNECT proxy that tunnels every destination to one local TLS server, so a public
    host name is dialled without DNS (the client still speaks TLS to that name)."""

    server: _ConnectProxy

    def handle(self) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.request.recv(4096)
            if not chunk:
                return
            head += chunk
        self.server.connects.append(head.split(b"\r\n", 1)[0].decode("latin-1"))
        with socket.create_connection(("127.0.0.1", self.server.target_port), timeout=10) as up:
            self.request.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            ends = [self.request, up]
            while True:
                readable, _, _ = select.select(ends, [], [], 10)
                if not readable:
                    return
                for end in readable:
                    data = end.recv(65536)
                    if not data:
                        return
                    (up if end is self.request else self.request).sendall(data)


class _ConnectProxy(socketserver.ThreadingTCPServer):
    daemon_threads = True
    block_on_close = False  # a tunnel a client keeps alive must not hold up the teardown

    def __init__(self, target_port: int) -> None:
        super().__init__(("127.0.0.1", 0), _ConnectHandler)
        self.target_port = target_port
        self.connects: list[str] = []


@pytest.fixture
def tunnel(servers: Servers) -> Iterator[Tunnel]:
    proxy = _ConnectProxy(servers.tls_port)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield Tunnel(f"http://127.0.0.1:{proxy.server_address[1]}", proxy.connects)
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join(10)


def readme_requests_block() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"### requests\n\n```python\n(.*?)```", text, re.DOTALL)
    assert found is not None, "README has no requests recipe"
    return found.group(1)


@pytest.mark.parametrize("name", ["session", "other"])
def test_readme_recipe_keeps_trace_headers_from_a_public_https_host(
    servers: Servers, tunnel: Tunnel, name: str
) -> None:
    # The recipe as written, default policy and all; the public host is a real public-looking
    # name, reached through a CONNECT proxy so the https adapter does its ordinary TLS to it.
    namespace: dict[str, Any] = {"__name__": "readme"}
    exec(compile(readme_requests_block(), "README.md", "exec"), namespace)
    session: requests.Session = namespace[name]
    landing = f"https://{PUBLIC_NAME}/landing"
    for status in (301, 302, 303, 307, 308):
        servers.hops.clear()
        with capture_runs(), trace("handler"):
            response = session.get(
                _redirect(servers.urls["internal-http"], landing, status),
                headers={"baggage": "vendor=x"},
                proxies={"https": tunnel.url},
                verify=servers.ca_bundle,
                timeout=10,
            )
        assert response.status_code == 200
        first, public = servers.hops
        assert first.server == "internal-http"
        assert "langsmith-trace" in first.headers  # traced: the test is not vacuous
        assert public.server == "public-https"
        assert not carries_trace_headers(public), (name, status, public.headers)
        assert public.headers.get("baggage") == "vendor=x"  # the caller's own header stays
    session.close()
    assert tunnel.connects[-1].startswith(f"CONNECT {PUBLIC_NAME}:443 ")

"""A short script exporting over OTLP configured only by OpenTelemetry's own variables."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from acceptance_helpers import clean_env, run_script
from test_short_lived import TRACES

from tracestitch.export.otlp import decode_request


@dataclass
class Received:
    requests: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextmanager
def otlp_receiver() -> Iterator[tuple[str, Received]]:
    received = Received()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            if self.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            with received.lock:
                received.requests.append((self.path, dict(self.headers.items()), body))
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", received
    finally:
        server.shutdown()
        server.server_close()


def _resources(received: Received) -> list[tuple[dict[str, Any], int]]:
    out = []
    for _, _, body in received.requests:
        for rs in decode_request(body).resource_spans:
            attrs = {a.key: a.value.string_value for a in rs.resource.attributes}
            out.append((attrs, sum(len(ss.spans) for ss in rs.scope_spans)))
    return out


def test_otel_variables_alone_export_every_span_with_the_service_and_headers() -> None:
    with otlp_receiver() as (url, received):
        env = clean_env(
            OTEL_EXPORTER_OTLP_ENDPOINT=url + "/base",
            OTEL_EXPORTER_OTLP_HEADERS="Authorization=Basic%20abc,x-tenant=acme%2Ceu",
            OTEL_SERVICE_NAME="billing",
            OTEL_RESOURCE_ATTRIBUTES="service.version=1.4.2,deployment.environment=prod",
            TRACESTITCH_SPOOL_DIR="off",
        )
        result = run_script(TRACES, env, "300")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert received.requests, "nothing was exported"
    for path, headers, _ in received.requests:
        assert path == "/base/v1/traces"
        assert headers["Authorization"] == "Basic abc"  # percent-decoded, as the spec says
        assert headers["x-tenant"] == "acme,eu"
    resources = _resources(received)
    assert sum(n for _, n in resources) == 600
    for attrs, _ in resources:
        assert attrs["service.name"] == "billing"
        assert attrs["service.version"] == "1.4.2"


def test_a_traces_endpoint_is_used_as_it_is() -> None:
    with otlp_receiver() as (url, received):
        env = clean_env(
            OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=url + "/custom/path",
            OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9",  # the traces one wins
            TRACESTITCH_SPOOL_DIR="off",
        )
        result = run_script(TRACES, env, "5")
    assert result.returncode == 0, result.stderr
    assert {path for path, _, _ in received.requests} == {"/custom/path"}
    assert sum(n for _, n in _resources(received)) == 10

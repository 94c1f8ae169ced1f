"""A scripted LangSmith/OTLP-compatible ingest server on 127.0.0.1, and run builders.

The server validates every run the way the issue asks: each post (and each post merged with its
patches) must pass the core's ``tracestitch.schemas.Run`` model. Responses can be scripted
(``server.script(503, 429, ...)`` answers the next requests with those statuses, optionally with
``Retry-After``), and the server can be stopped and restarted on the same port to simulate
downtime. It waits on its own readiness, never on sleeps.
"""

from __future__ import annotations

import contextlib
import gzip
import re
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from tracestitch.schemas import Run


class Capture:
    """What the server received, shared across restarts."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.posts: Counter[str] = Counter()
        self.patches: Counter[str] = Counter()
        self.runs: dict[str, dict[str, Any]] = {}
        self.attachments: dict[tuple[str, str], tuple[str, bytes]] = {}
        self.otlp: list[bytes] = []
        self.errors: list[str] = []
        self.script: list[tuple[int, dict[str, str]]] = []
        self.status_log: list[int] = []
        self.delay = 0.0
        self.event = threading.Event()

    def add(self, kind: str, run: dict[str, Any]) -> None:
        rid = str(run["id"])
        (self.posts if kind == "post" else self.patches)[rid] += 1
        merged = {**self.runs.get(rid, {}), **{k: v for k, v in run.items() if v is not None}}
        self.runs[rid] = merged
        if "name" in merged:  # a patch alone has no name yet; validated once its post is in
            try:
                Run.model_validate(merged)
            except Exception as exc:
                self.errors.append(f"{rid}: {exc}")

    def received_ids(self) -> set[str]:
        return set(self.runs)


def _parse_multipart(body: bytes, ctype: str) -> list[tuple[str, str, bytes]]:
    boundary = re.search(r"boundary=([^;]+)", ctype)
    assert boundary, ctype
    sep = b"--" + boundary.group(1).encode()
    parts = []
    for chunk in body.split(sep)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, data = chunk[2:].partition(b"\r\n\r\n")
        name = re.search(rb'name="([^"]+)"', head)
        ptype = re.search(rb"Content-Type: ([^\r\n]+)", head)
        assert name and ptype
        parts.append((name.group(1).decode(), ptype.group(1).decode(), data[:-2]))
    return parts


class _Handler(BaseHTTPRequestHandler):
    capture: Capture
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        # Headers and body are two writes: without this, each reply waits ~40 ms for the
        # client's delayed ACK.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.connections.add(self.connection)  # type: ignore[attr-defined]

    def _reply(
        self, status: int, body: bytes = b"{}", headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.endswith("/info"):
            self._reply(
                200,
                orjson.dumps(
                    {
                        "version": "0.0.0-test",
                        "batch_ingest_config": {
                            "use_multipart_endpoint": getattr(self.server, "multipart", False),
                            "size_limit_bytes": 20_000_000,
                            "size_limit": 100,
                            "scale_up_qsize_trigger": 1000,
                            "scale_up_nthreads_limit": 1,
                            "scale_down_nempty_trigger": 4,
                        },
                    }
                ),
            )
        else:
            self._reply(404)

    def do_POST(self) -> None:
        cap = self.capture
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        elif self.headers.get("Content-Encoding") == "zstd":
            import zstandard  # type: ignore[import-not-found]

            body = zstandard.ZstdDecompressor().decompressobj().decompress(body)
        if cap.delay:
            cap.event.wait(cap.delay)
        with cap.lock:
            cap.requests.append((self.path, dict(self.headers.items()), body))
            if cap.script:
                status, headers = cap.script.pop(0)
                cap.status_log.append(status)
                self._reply(status, b'{"detail":"scripted"}', headers)
                return
            try:
                self._ingest(body)
            except Exception as exc:  # a malformed body is a test failure: record it
                cap.errors.append(f"{self.path}: {exc!r}")
                cap.status_log.append(422)
                self._reply(422, b'{"detail":"bad body"}')
                return
            cap.status_log.append(202)
        self._reply(202, b'{"accepted":true}')

    def _ingest(self, body: bytes) -> None:
        cap = self.capture
        if self.path.endswith("/runs/batch"):
            doc = orjson.loads(body)
            for kind in ("post", "patch"):
                for run in doc.get(kind) or []:
                    cap.add(kind, run)
        elif self.path.endswith("/runs/multipart"):
            parts = _parse_multipart(body, self.headers["Content-Type"])
            mains: dict[tuple[str, str], dict[str, Any]] = {}
            for name, ptype, data in parts:
                pieces = name.split(".")
                if pieces[0] == "attachment":
                    cap.attachments[(pieces[1], pieces[2])] = (ptype, data)
                elif len(pieces) == 2:
                    mains.setdefault((pieces[0], pieces[1]), {}).update(orjson.loads(data))
                else:
                    mains.setdefault((pieces[0], pieces[1]), {})[pieces[2]] = orjson.loads(data)
            for (kind, _rid), run in mains.items():
                cap.add(kind, run)
        elif self.path.endswith("/v1/traces"):
            cap.otlp.append(body)
        else:
            raise ValueError(f"unexpected path {self.path}")


class IngestServer:
    """Start/stop-able; keeps its port across restarts so an exporter sees downtime."""

    def __init__(self, multipart: bool = False) -> None:
        self.capture = Capture()
        self.port = 0
        self.multipart = multipart
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        handler = type("Handler", (_Handler,), {"capture": self.capture})
        server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        server.daemon_threads = True
        server.multipart = self.multipart  # type: ignore[attr-defined]
        server.connections = set()  # type: ignore[attr-defined]
        self.port = server.server_address[1]
        self._server = server
        # serve_forever is ready once the socket listens, which the constructor already did.
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            # Kept-alive connections outlive the listener: cut them, as a crash would.
            for conn in list(self._server.connections):  # type: ignore[attr-defined]
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            assert self._thread is not None
            self._thread.join(5)
            self._server = None

    def script(self, *statuses: int | tuple[int, dict[str, str]]) -> None:
        with self.capture.lock:
            for item in statuses:
                self.capture.script.append(item if isinstance(item, tuple) else (item, {}))


@contextmanager
def ingest_server(multipart: bool = False) -> Iterator[IngestServer]:
    server = IngestServer(multipart=multipart)
    server.start()
    try:
        yield server
    finally:
        server.capture.event.set()
        server.stop()


def wait_for(predicate: Callable[[], object], timeout: float = 10.0) -> bool:
    """Poll a condition a worker thread makes true (bounded; not a sleep standing in for one)."""
    event = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return True
        event.wait(0.01)
    return False

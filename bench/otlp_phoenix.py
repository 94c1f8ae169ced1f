"""Export a small realistic trace over OTLP to a real Arize Phoenix, then show what Phoenix
recorded (projects, span kinds, tokens, models, status). Not part of ``make test``: Phoenix is a
large install, kept in its own virtualenv.

    python -m venv /tmp/phoenix-venv && /tmp/phoenix-venv/bin/pip install arize-phoenix
    .venv/bin/python bench/otlp_phoenix.py --phoenix /tmp/phoenix-venv/bin/phoenix
    .venv/bin/python bench/otlp_phoenix.py --url http://127.0.0.1:6006   # one already running

The trace: a ``gateway`` FastAPI service (tracestitch middleware) calls an ``assistant`` service
over httpx (client hooks); the assistant runs a ``lookup`` tool that raises, and an ``llm`` run
(OpenAI-shaped, 11 + 7 tokens, streamed). Both services run under real uvicorn servers on
127.0.0.1 and export through ``OTLPSink`` configured from OTel environment variables. For
comparison the same ``llm`` run is also exported by the LangSmith SDK's own OTel mode (into its
own Phoenix project). Phoenix is started on free loopback ports, in a temporary working
directory, with its telemetry and external resources off.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # servers.py: uvicorn on an ephemeral port

PROJECT = "tracestitch-otlp-demo"
LANGSMITH_PROJECT = "langsmith-sdk-otel"
LLM_OUTPUT = {
    "choices": [{"message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}],
    "model": "gpt-4o-mini-2024-07-18",
    "usage_metadata": {"input_tokens": 11, "output_tokens": 7, "total_tokens": 18},
}
LLM_META = {"ls_provider": "openai", "ls_model_name": "gpt-4o-mini"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        body = resp.read()
    return json.loads(body) if body[:1] in (b"{", b"[") else body.decode()


def _post_json(url: str, doc: Any) -> Any:
    req = urllib.request.Request(
        url, json.dumps(doc).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def _wait(predicate: Any, timeout: float, what: str) -> None:
    done = threading.Event()
    for _ in range(int(timeout / 0.25)):
        if predicate():
            return
        done.wait(0.25)
    raise TimeoutError(what)


@contextlib.contextmanager
def phoenix_server(executable: str) -> Iterator[str]:
    port, grpc_port = _free_port(), _free_port()
    with tempfile.TemporaryDirectory(prefix="phoenix-") as workdir:
        env = {
            **os.environ,
            "PHOENIX_HOST": "127.0.0.1",
            "PHOENIX_PORT": str(port),
            "PHOENIX_GRPC_PORT": str(grpc_port),
            "PHOENIX_WORKING_DIR": workdir,
            "PHOENIX_TELEMETRY_ENABLED": "false",
            "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false",
        }
        log = open(Path(workdir) / "phoenix.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen([executable, "serve"], env=env, stdout=log, stderr=log)
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"phoenix exited: {(Path(workdir) / 'phoenix.log').read_text()}")
            try:
                return bool(_get(f"{url}/healthz", 1.0))
            except (urllib.error.URLError, OSError):
                return False

        try:
            _wait(up, 180, "phoenix did not come up")
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            log.close()


def assistant_app() -> Any:
    from fastapi import FastAPI

    from tracestitch import get_current_run_tree, traceable
    from tracestitch.middleware.asgi import TracingMiddleware

    app = FastAPI(title="assistant")

    @traceable(run_type="llm", name="ChatOpenAI", metadata=LLM_META)
    async def chat(messages: list[dict[str, str]]) -> dict[str, Any]:
        run = get_current_run_tree()
        assert run is not None
        for token in ("Hel", "lo"):
            run.add_event("new_token", kwargs={"token": token})
        return LLM_OUTPUT

    @traceable(run_type="tool", name="lookup")
    async def lookup(q: str) -> str:
        raise KeyError(q)

    @app.get("/chat/{user}")
    async def chat_route(user: str, q: str) -> Any:
        with contextlib.suppress(KeyError):
            await lookup(q)
        return await chat([{"role": "user", "content": q}])

    app.add_middleware(TracingMiddleware, service="assistant", project_name=PROJECT)
    return app


def gateway_app(downstream: str) -> Any:
    import httpx
    from fastapi import FastAPI

    from tracestitch.clients.httpx import AsyncTracingTransport
    from tracestitch.middleware.asgi import TracingMiddleware

    app = FastAPI(title="gateway")

    @app.get("/ask/{user}")
    async def ask(user: str) -> Any:
        async with httpx.AsyncClient(transport=AsyncTracingTransport()) as client:
            return (await client.get(f"{downstream}/chat/{user}?q=hi&api_key=sk-1")).json()

    app.add_middleware(TracingMiddleware, service="gateway", project_name=PROJECT)
    return app


def export_tracestitch_trace(phoenix: str) -> None:
    import httpx

    from servers import run_uvicorn
    from tracestitch.export.otel_env import otlp_settings_from_env
    from tracestitch.export.otlp import OTLPSink
    from tracestitch.export.worker import BatchExporter
    from tracestitch.exporter import set_exporter

    settings = otlp_settings_from_env(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": phoenix,
            "OTEL_RESOURCE_ATTRIBUTES": "service.version=0.1.0,deployment.environment=bench",
        }
    )
    assert settings is not None, "no endpoint"
    exporter = BatchExporter(OTLPSink.from_settings(settings), flush_interval=0.1)
    previous = set_exporter(exporter)
    try:
        with (
            run_uvicorn(assistant_app()) as assistant,
            run_uvicorn(gateway_app(assistant)) as gateway,
        ):
            response = httpx.get(f"{gateway}/ask/ada", timeout=15)
            assert response.status_code == 200, response.text
        assert exporter.flush(10), "spans not delivered to Phoenix"
        stats = exporter.stats()
    finally:
        exporter.shutdown(5)
        set_exporter(previous)
    print(f"tracestitch export: sent {stats['sent']} runs in {stats['batches']} batch(es)")


def export_langsmith_sdk_llm_run(phoenix: str) -> None:
    """The same llm run through the LangSmith SDK's own OTel export (for comparison)."""
    import langsmith
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": "langsmith-sdk", "openinference.project.name": LANGSMITH_PROJECT}
        )
    )
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(f"{phoenix}/v1/traces")))
    client = langsmith.Client(
        api_url="http://127.0.0.1:9",
        api_key="unused",
        tracing_mode="otel",
        otel_tracer_provider=provider,
    )

    @langsmith.traceable(client=client, run_type="llm", name="ChatOpenAI", metadata=LLM_META)
    def chat(messages: list[dict[str, str]]) -> dict[str, Any]:
        return LLM_OUTPUT

    with langsmith.tracing_context(enabled=True, client=client):
        chat([{"role": "user", "content": "hi"}])
    client.flush()
    provider.force_flush()
    provider.shutdown()


def _spans(phoenix: str, project: str) -> list[dict[str, Any]]:
    doc = _get(f"{phoenix}/v1/projects/{project}/spans?limit=100")
    return list(doc.get("data") or [])


def show(phoenix: str) -> dict[str, Any]:
    projects = [p["name"] for p in _get(f"{phoenix}/v1/projects")["data"]]
    print(f"\nPhoenix projects: {projects}")
    report: dict[str, Any] = {"projects": projects, "spans": {}}
    query = "{ projects { edges { node { name traceCount tokenCountTotal } } } }"
    try:
        gql = _post_json(f"{phoenix}/graphql", {"query": query})
        for edge in gql["data"]["projects"]["edges"]:
            node = edge["node"]
            print(
                f"  {node['name']}: traces={node['traceCount']} "
                f"tokenCountTotal={node['tokenCountTotal']}"
            )
        report["graphql"] = gql["data"]
    except (urllib.error.URLError, KeyError, TypeError) as exc:
        print(f"  (GraphQL summary unavailable: {exc})")
    for project in projects:
        spans = _spans(phoenix, project)
        report["spans"][project] = spans
        if not spans:
            continue
        print(f"\n[{project}] {len(spans)} spans")
        for span in sorted(spans, key=lambda s: s["start_time"]):
            attrs = span.get("attributes") or {}
            flat = _flatten(attrs)
            tokens = (
                flat.get("llm.token_count.prompt"),
                flat.get("llm.token_count.completion"),
                flat.get("llm.token_count.total"),
            )
            line = (
                f"  {span['name']:<22} kind={span['span_kind']:<8} status={span['status_code']:<6}"
                f" parent={span.get('parent_id') or '-':<16}"
            )
            if any(t is not None for t in tokens):
                line += f" tokens(p/c/t)={tokens} model={flat.get('llm.model_name')}"
            for key in ("http.route", "url.full", "http.response.status_code", "error.type"):
                if key in flat:
                    line += f" {key}={flat[key]}"
            events = [e["name"] for e in span.get("events") or []]
            if events:
                line += f" events={events}"
            print(line)
    kept = {
        key
        for spans in report["spans"].values()
        for span in spans
        for key in _flatten(span.get("attributes") or {})
        if key.startswith(("service.", "telemetry.", "deployment."))
    }
    print(f"\nresource attributes Phoenix returns on spans: {sorted(kept) or 'none'}")
    return report


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Phoenix returns attributes nested by their dotted names: flatten them back."""
    if not isinstance(value, dict):
        return {prefix: value}
    flat: dict[str, Any] = {}
    for key, item in value.items():
        flat.update(_flatten(item, f"{prefix}.{key}" if prefix else key))
    return flat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--phoenix", help="the phoenix executable (started here)")
    group.add_argument("--url", help="a Phoenix already running")
    parser.add_argument("--json", help="also write what Phoenix returned to this file")
    args = parser.parse_args()

    def run(url: str) -> None:
        print(f"Phoenix at {url} (version {_get(f'{url}/arize_phoenix_version')})")
        export_tracestitch_trace(url)
        export_langsmith_sdk_llm_run(url)

        def landed() -> bool:
            try:
                return len(_spans(url, PROJECT)) >= 5 and len(_spans(url, LANGSMITH_PROJECT)) >= 1
            except urllib.error.HTTPError:
                return False

        _wait(landed, 60, "spans did not show up in Phoenix")
        report = show(url)
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2, default=str))

    if args.url:
        run(args.url.rstrip("/"))
    else:
        with phoenix_server(args.phoenix) as url:
            run(url)


if __name__ == "__main__":
    main()

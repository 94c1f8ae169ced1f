"""Instructions per outgoing call through the httpx hook, counted by callgrind.

One traced ``httpx.Client.get`` through ``TracingTransport`` over ``MockTransport`` (so the
figure is the hook's own cost plus httpx's), inside a current run, with a no-op exporter,
``N`` times. Run it twice under callgrind with two call counts; the difference of the totals
divided by the difference of the counts is the per-call cost, start-up cancelled out::

    python bench/callgrind_clients.py --measure        # runs valgrind itself, prints the table

Cases: the destination host (``service-b``: allowed by the default ``"internal"`` preset, so
headers go out; ``api.example.com``: not allowed), ``bare:<host>`` (the same call without the
hook) and ``policy:<host>``, the ``propagate_to`` decision alone (``PropagationPolicy.allows``).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import callgrind_instructions  # noqa: E402 (bench/ on the path first)

HOSTS = ("service-b", "api.example.com")


def _drive_call(host: str, n: int, *, hooked: bool = True) -> None:
    import httpx

    from tracestitch import RunTree
    from tracestitch.clients.httpx import TracingTransport
    from tracestitch.context import tracing_context
    from tracestitch.exporter import NoopExporter, set_exporter

    set_exporter(NoopExporter())

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b'{"ok":true}')

    transport = httpx.MockTransport(handler)
    client = httpx.Client(transport=TracingTransport(transport) if hooked else transport)
    url = f"http://{host}/items/42"
    with tracing_context(parent=RunTree("request")):
        for _ in range(n):
            client.get(url)


def _drive_policy(host: str, n: int) -> None:
    from tracestitch.clients import PropagationPolicy

    allows = PropagationPolicy("internal").allows
    for _ in range(n):
        allows("http", host, None, "/items/42", "")


def _per_call(case: str, low: int, high: int) -> float:
    return (
        callgrind_instructions(__file__, case, str(high))
        - callgrind_instructions(__file__, case, str(low))
    ) / (high - low)


def measure(low: int = 200, high: int = 1000) -> None:
    print(f"{'case':<24}{'instructions/call':>20}")
    for host in HOSTS:
        print(f"{host:<24}{_per_call(host, low, high):>20,.0f}")
    for host in HOSTS:
        name = f"bare:{host}"
        print(f"{name:<24}{_per_call(name, low, high):>20,.0f}")
    for host in HOSTS:
        name = f"policy:{host}"
        print(f"{name:<24}{_per_call(name, low * 10, high * 10):>20,.0f}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--measure"]:
        measure()
    elif sys.argv[1].startswith("bare:"):
        _drive_call(sys.argv[1].partition(":")[2], int(sys.argv[2]), hooked=False)
    elif sys.argv[1].startswith("policy:"):
        _drive_policy(sys.argv[1].partition(":")[2], int(sys.argv[2]))
    else:
        _drive_call(sys.argv[1], int(sys.argv[2]))

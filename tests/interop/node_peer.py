"""The LangSmith JS SDK under node, for the interop tests; also run by ``.ci/run`` to install it.

The SDK is installed with npm, once per pinned version (``peers.json``), into
``~/.cache/tracestitch-tests/npm/langsmith-<version>`` (``$TRACESTITCH_TEST_CACHE`` moves the
cache) and reused by later runs. Without node and npm the tests skip on a developer's machine,
but fail in CI (``CI`` set): there the JS peer is part of the check.

    python tests/interop/node_peer.py   # install the pinned SDK now (what .ci/run does)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEERS = json.loads((HERE / "peers.json").read_text())
JS_SDK_VERSION: str = PEERS["npm"]["langsmith"]
SCRIPTS = HERE / "js"


def cache_root() -> Path:
    base = os.environ.get("TRACESTITCH_TEST_CACHE") or str(
        Path.home() / ".cache" / "tracestitch-tests"
    )
    return Path(base) / "npm"


def missing_node() -> str | None:
    """Why node cannot run here, or None."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian: apt-get install nodejs npm)"
    return None


def install_js_sdk() -> Path:
    """The ``node_modules`` directory holding the pinned JS SDK, installed on first use."""
    prefix = cache_root() / f"langsmith-{JS_SDK_VERSION}"
    modules = prefix / "node_modules"
    marker = prefix / ".installed"
    if marker.exists() and (modules / "langsmith" / "package.json").exists():
        return modules
    prefix.mkdir(parents=True, exist_ok=True)
    # The marker is written last: an interrupted install is redone, never taken for done.
    subprocess.run(
        [
            "npm",
            "install",
            "--no-audit",
            "--no-fund",
            "--no-save",
            "--loglevel=error",
            "--prefix",
            str(prefix),
            f"langsmith@{JS_SDK_VERSION}",
        ],
        check=True,
        timeout=300,
        stdout=subprocess.DEVNULL,
    )
    installed = json.loads((modules / "langsmith" / "package.json").read_text())["version"]
    if installed != JS_SDK_VERSION:
        raise RuntimeError(f"npm installed langsmith {installed}, not {JS_SDK_VERSION}")
    marker.write_text(JS_SDK_VERSION + "\n")
    return modules


def node_env(modules: Path, **settings: str) -> dict[str, str]:
    """An environment for node: the cached SDK on NODE_PATH, no inherited tracing settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LANGSMITH_", "LANGCHAIN_", "OTEL_", "TRACESTITCH_"))
    }
    env["NODE_PATH"] = str(modules)
    env.update(settings)
    return env


if __name__ == "__main__":
    problem = missing_node()
    if problem:
        sys.exit(f"node_peer: {problem}")
    print(f"langsmith {JS_SDK_VERSION} (npm) in {install_js_sdk()}")

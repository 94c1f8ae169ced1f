"""The dependency direction of DESIGN.md, enforced on the source."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "tracestitch"
CORE = {
    "run_tree",
    "run_fields",
    "run_values",
    "run_compat",
    "schemas",
    "ids",
    "context",
    "tracing",
    "propagation",
    "headers",
    "baggage",
    "w3c",
    "header_stats",
    "_guard",
    "exporter",
    "open_runs",
    "settings",
    "instrument",
    "carriers",
}
FRAMEWORKS = {
    "starlette",
    "fastapi",
    "httpx",
    "aiohttp",
    "requests",
    "flask",
    "werkzeug",
    "uvicorn",
    "celery",
    "kombu",
    "grpc",
}
STDLIB = set(sys.stdlib_module_names)


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _module(path: Path) -> str:
    return ".".join(path.relative_to(SRC.parent).with_suffix("").parts)


def test_core_imports_only_stdlib_its_two_dependencies_and_core() -> None:
    for name in CORE:
        for imported in _imports(SRC / f"{name}.py"):
            top = imported.split(".")[0]
            # run_tree reaches langchain_core lazily, only when the caller uses LangChain.
            if top in STDLIB or top in ("pydantic", "orjson", "langchain_core"):
                continue
            assert top == "tracestitch", f"{name}.py imports {imported}"
            sub = imported.split(".")[1] if "." in imported else ""
            assert sub in CORE or sub == "", f"core module {name}.py imports {imported}"


def test_integrations_import_one_framework_and_never_each_other() -> None:
    for package in ("middleware", "clients"):
        folder = SRC / package
        paths = list(folder.glob("*.py"))
        assert len(paths) > 2, f"{folder} moved: this test would check nothing"
        for path in paths:
            imports = _imports(path)
            frameworks = {i.split(".")[0] for i in imports} & FRAMEWORKS
            assert len(frameworks) <= 1 or path.stem in frameworks, (path, frameworks)
            for imported in imports:
                assert imported != "tracestitch.cli", path
                assert not imported.startswith("tracestitch.collector"), path
                other = "clients" if package == "middleware" else "middleware"
                assert not imported.startswith(f"tracestitch.{other}"), (path, imported)


def test_integrations_import_one_framework_and_only_the_public_core() -> None:
    folder = SRC / "integrations"
    paths = [p for p in folder.glob("*.py") if p.stem != "__init__"]
    assert len(paths) >= 1, f"{folder} moved: this test would check nothing"
    for path in paths:
        imports = _imports(path)
        frameworks = {i.split(".")[0] for i in imports} & FRAMEWORKS
        assert len(frameworks) <= 1, (path, frameworks)
        for imported in imports:
            if not imported.startswith("tracestitch"):
                continue
            parts = imported.split(".")
            # The public core only (instrument and the package), and within integrations/
            # only a sibling of the same framework (grpc_aio on grpc's shared part).
            if len(parts) > 2 and parts[1] == "integrations":
                assert parts[2].lstrip("_").split("_")[0] == path.stem.lstrip("_").split("_")[0], (
                    path
                )
                continue
            assert imported in ("tracestitch", "tracestitch.instrument", "tracestitch.carriers"), (
                path,
                imported,
            )


def test_collector_does_not_import_middleware_or_clients() -> None:
    paths = list((SRC / "collector").glob("*.py"))
    assert len(paths) > 2, "collector/ moved: this test would check nothing"
    for path in paths:
        for imported in _imports(path):
            assert not imported.startswith(("tracestitch.middleware", "tracestitch.clients"))


def test_import_tracestitch_imports_no_framework_or_collector() -> None:
    code = (
        "import sys, tracestitch, tracestitch.testing;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        f"{sorted(FRAMEWORKS | {'opentelemetry', 'orjson_never'})!r}"
        " or m.startswith('tracestitch.collector') or m.startswith('tracestitch.middleware'));"
        "import threading; assert threading.active_count() == 1, threading.enumerate();"
        "print(bad)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]", result.stdout


def _private_imports(path: Path) -> list[str]:
    """What ``path`` imports that is private to another package (a ``_name``, or any name
    from a ``_module``) or, in the top package, to another module."""
    module = _module(path)
    own = module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.ImportFrom) and node.module and node.level == 0):
            continue
        target = node.module
        if target.split(".")[0] != "tracestitch":
            continue
        package = (
            target.rpartition(".")[0]
            if (SRC.parent / f"{target.replace('.', '/')}.py").exists()
            else target
        )
        private_module = any(p.startswith("_") for p in target.split(".")[1:])
        for alias in node.names:
            private_name = alias.name.startswith("_")
            if (private_module and package != own) or (
                private_name and (package != own or own == "tracestitch")
            ):
                found.append(f"{module} imports {target}.{alias.name}")
    return found


def test_integrations_and_tracing_use_only_public_names_of_other_packages() -> None:
    """Integrations go through the public instrumentation API (tracestitch.instrument), never
    through another package's private names (issue 13)."""
    paths = [*(SRC / "middleware").glob("*.py"), *(SRC / "clients").glob("*.py")]
    paths.append(SRC / "tracing.py")
    assert len(paths) > 10, "middleware/ or clients/ moved: this test would check nothing"
    found = [line for path in paths for line in _private_imports(path)]
    assert found == []

"""The dependency direction of DESIGN.md, enforced on the source."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "tracestitch"
#: Modules at the package root that are not the core: the facade and the testing helpers
#: (which build exporters). The CLI and the demo are packages of their own (cli/, demo/).
NOT_CORE = {"__init__", "testing"}
#: The core: the root modules but those, and the propagation package.
CORE = {path.stem for path in SRC.glob("*.py") if path.stem not in NOT_CORE} | {
    f"propagation.{path.stem}" for path in (SRC / "propagation").glob("*.py")
}
FRAMEWORKS = {
    "starlette",
    "fastapi",
    "httpx",
    "aiohttp",
    "requests",
    "websockets",
    "flask",
    "werkzeug",
    "uvicorn",
    "celery",
    "kombu",
    "grpc",
    "django",
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
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(path): path for path in SRC.rglob("*.py")}


def _type_checking_blocks(tree: ast.AST) -> set[int]:
    """Ids of the nodes inside ``if TYPE_CHECKING:``: annotations, never imported at run time."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                inside.update(id(n) for n in ast.walk(child))
    return inside


def _run_time_imports(module: str) -> set[str]:
    """The tracestitch modules ``module`` imports when it runs, at the top or inside a
    function (a deferred import is still an import), ``if TYPE_CHECKING`` left out."""
    tree = ast.parse(MODULES[module].read_text())
    skip = _type_checking_blocks(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # "from package import module" imports the module (the package is its parent:
            # see _cycles), "from module import name" the module.
            names = [
                f"{node.module}.{alias.name}"
                if f"{node.module}.{alias.name}" in MODULES
                else node.module
                for alias in node.names
            ]
        else:
            continue
        found.update(name for name in names if name in MODULES and name != module)
    return found


def _cycles() -> list[set[str]]:
    """The import cycles among tracestitch's modules: strongly connected components of the
    import graph with more than one module (Tarjan). A package is not counted as importing
    its parent: that is how Python runs a package, not a design choice."""
    graph = {module: _run_time_imports(module) for module in MODULES}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph[node]:
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_no_module_is_in_an_import_cycle_deferred_imports_included() -> None:
    assert len(MODULES) > 50, "src/ moved: this test would check nothing"
    assert _cycles() == []


def test_the_cycle_check_sees_deferred_imports() -> None:
    # The check itself, on a cycle held together by an import inside a function.
    assert "tracestitch.run_tree" in _run_time_imports("tracestitch.context")
    assert "tracestitch.schemas" in _run_time_imports("tracestitch.run_fields")  # deferred
    assert "tracestitch.run_tree" not in _run_time_imports("tracestitch.schemas")  # annotations


def _private_names_of_run_tree() -> set[str]:
    from tracestitch.run_tree import RunTree

    names = {n for cls in RunTree.__mro__ for n in vars(cls) if n.startswith("_")}
    return {n for n in names if not n.startswith("__")}


def test_no_module_reaches_into_run_tree_privates() -> None:
    private = _private_names_of_run_tree()
    assert {"_fill", "_skew_us", "_remote"} <= private, "RunTree moved: check the names"
    reaches = [
        f"{module}: .{node.attr}"
        for module, path in MODULES.items()
        if module != "tracestitch.run_tree"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute) and node.attr in private
    ]
    assert reaches == []


def _package(module: str) -> str:
    path = MODULES[module]
    name = _module(path)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _private_imports_across_packages() -> set[str]:
    found: set[str] = set()
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
                continue
            if node.module not in MODULES or _package(node.module) == _package(module):
                continue
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.add(f"{module}: {node.module}.{alias.name}")
    return found


#: Private names still imported across packages, being removed: the list only shrinks (remove
#: an entry once fixed). Empty since the middleware and the clients went through
#: tracestitch.instrument.
PRIVATE_IMPORTS_ALLOWED: set[str] = set()


def test_private_names_are_not_imported_across_packages() -> None:
    found = _private_imports_across_packages()
    assert found - PRIVATE_IMPORTS_ALLOWED == set(), "new private imports across packages"
    assert PRIVATE_IMPORTS_ALLOWED - found == set(), "fixed: remove them from the allow-list"


def test_core_imports_only_stdlib_its_two_dependencies_and_core() -> None:
    assert {"run_tree", "ids", "propagation.codec"} <= CORE, "the core moved"
    for name in CORE:
        path = SRC / f"{name.replace('.', '/')}.py"
        for imported in _imports(path):
            top = imported.split(".")[0]
            # run_tree reaches langchain_core lazily, only when the caller uses LangChain;
            # sampling hashes trace ids with xxhash, as the LangSmith SDKs do; run_tree names
            # typing_extensions' Unpack for type checkers only (pydantic's dependency anyway).
            allowed = ("pydantic", "orjson", "xxhash", "langchain_core", "typing_extensions")
            if top in STDLIB or top in allowed:
                continue
            assert top == "tracestitch", f"{name}.py imports {imported}"
            sub = imported.partition(".")[2]
            assert sub in CORE or sub.partition(".")[0] in CORE | {"propagation", ""}, (
                f"core module {name}.py imports {imported}"
            )


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
                assert imported.split(".")[:2] != ["tracestitch", "cli"], path
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
    module = ".".join(path.relative_to(SRC.parent).with_suffix("").parts)
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


#: The longest a module in src/ may be: small modules named for what they hold (issue 13).
MAX_MODULE_LINES = 450
#: Modules still over it: the list only shrinks (remove an entry once it is split). Empty since
#: run_tree.py was split (the keyword arguments into run_args.py, the public-only methods
#: into run_fields.py).
LONG_MODULES_ALLOWED: set[str] = set()


def _long_modules() -> dict[str, int]:
    found = {}
    for path in SRC.rglob("*.py"):
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_MODULE_LINES:
            found[path.relative_to(SRC).as_posix()] = lines
    return found


def test_no_module_is_over_450_lines() -> None:
    long = _long_modules()
    assert {k: v for k, v in long.items() if k not in LONG_MODULES_ALLOWED} == {}
    assert LONG_MODULES_ALLOWED - long.keys() == set(), "split: remove it from the allow-list"


#: The longest a server adapter may be: it only translates its framework's request and response
#: (the shared parts live in the middleware package's private modules; issue 13).
MAX_ADAPTER_LINES = 200


def test_each_server_adapter_is_200_lines_or_fewer() -> None:
    adapters = [p for p in (SRC / "middleware").glob("*.py") if not p.stem.startswith("_")]
    assert {p.stem for p in adapters} >= {"asgi", "wsgi", "aiohttp", "django"}, "adapters moved"
    long = {
        p.name: lines
        for p in adapters
        if (lines := len(p.read_text(encoding="utf-8").splitlines())) > MAX_ADAPTER_LINES
    }
    assert long == {}

"""The public surface: every public module says what it exports in ``__all__``, each name there
exists, is public and documented, and no public docstring sends a reader to a private name."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from types import ModuleType

import pytest

import tracestitch

PRIVATE_PATH = re.compile(r"tracestitch(?:\.\w+)*\._\w+")
# Loaded on first use by the top package's __getattr__ (pydantic is slow to import).
LAZY = {"Run", "RunEvent"}


def _public_modules() -> list[ModuleType]:
    modules = [tracestitch]
    for info in pkgutil.walk_packages(tracestitch.__path__, "tracestitch."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        try:
            modules.append(importlib.import_module(info.name))
        except ImportError as exc:  # an integration whose extra is not installed
            if "pip install 'tracestitch[" not in str(exc):
                raise
    return modules


MODULES = _public_modules()


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_a_public_module_exports_public_documented_names(module: ModuleType) -> None:
    names = getattr(module, "__all__", None)
    assert names is not None, f"{module.__name__} has no __all__"
    problems = []
    for name in names:
        if name.startswith("_") and name != "__version__":
            problems.append(f"{name}: private")
            continue
        if name in LAZY:
            continue
        if not hasattr(module, name):
            problems.append(f"{name}: missing")
            continue
        obj = getattr(module, name)
        ours = (getattr(obj, "__module__", None) or "").startswith("tracestitch")
        if ours and (inspect.isclass(obj) or inspect.isfunction(obj)):
            doc = inspect.getdoc(obj) or ""
            if not doc:
                problems.append(f"{name}: no docstring")
            problems.extend(f"{name}: points at {hit}" for hit in PRIVATE_PATH.findall(doc))
    problems.extend(
        f"module docstring points at {hit}" for hit in PRIVATE_PATH.findall(module.__doc__ or "")
    )
    assert problems == []


def test_the_check_finds_a_private_path() -> None:
    assert PRIVATE_PATH.findall("see tracestitch.clients._common.ClientOptions") == [
        "tracestitch.clients._common"
    ]

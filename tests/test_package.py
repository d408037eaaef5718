"""Packaging guards: the right onnxslim is imported, layering holds, public names are declared."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("onnxslim", "passes", "calibration")


def _modules() -> list[str]:
    names = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            rel = path.relative_to(REPO).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts.pop()
            names.append(".".join(parts))
    return names


def test_onnxslim_is_this_repository() -> None:
    # The PyPI package "OnnxSlim" uses the same import name; it must not shadow ours.
    import onnxslim

    assert REPO in Path(onnxslim.__file__).resolve().parents


@pytest.mark.parametrize("package", ["passes", "calibration"])
def test_libraries_never_import_the_app(package: str) -> None:
    for path in (REPO / package).rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] != "onnxslim", f"{path.relative_to(REPO)} imports {name}"


@pytest.mark.parametrize("module_name", _modules())
def test_public_names_are_declared(module_name: str) -> None:
    module = importlib.import_module(module_name)
    declared = getattr(module, "__all__", None)
    assert declared is not None, f"{module_name} has no __all__"
    for name in declared:
        assert hasattr(module, name), f"{module_name}.__all__ lists missing name {name!r}"

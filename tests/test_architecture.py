"""The house rules of docs/architecture.md, checked: layers and forbidden imports (import-linter), no dead code
(vulture), no module over 400 lines and no function over 60."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.hydra import REPO

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
BIN = Path(sys.executable).parent


def _sources() -> list[Path]:
    return sorted((REPO / "pokedex").rglob("*.py"))


def _functions(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        (f"{path.relative_to(REPO)}:{node.lineno} {node.name}", node.end_lineno - node.lineno + 1)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    ]


def test_no_module_over_the_limit() -> None:
    sizes = {p.relative_to(REPO).as_posix(): len(p.read_text(encoding="utf-8").splitlines()) for p in _sources()}
    assert {p: n for p, n in sizes.items() if n > MAX_MODULE_LINES} == {}


def test_no_function_over_the_limit() -> None:
    long = {name: n for p in _sources() for name, n in _functions(p) if n > MAX_FUNCTION_LINES}
    assert long == {}


def _tool(name: str) -> str:
    path = shutil.which(name, path=str(BIN)) or shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed (it comes with the dev extra)")
    return path


def test_import_contracts_hold() -> None:
    """Layers, the torch-free serving path, data ∌ model, no cycles: pyproject.toml [tool.importlinter]."""
    result = subprocess.run([_tool("lint-imports")], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_no_dead_code() -> None:
    result = subprocess.run([_tool("vulture")], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_contracts_can_fail(tmp_path: Path) -> None:
    """A serving module that imports torch must break the contract (so the check above is not vacuous)."""
    copy = tmp_path / "repo"
    shutil.copytree(REPO / "pokedex", copy / "pokedex", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", copy)
    (copy / "pokedex" / "serve" / "leak.py").write_text("import torch\n")
    result = subprocess.run(
        [_tool("lint-imports")], cwd=copy, capture_output=True, text=True, env={"PYTHONPATH": str(copy)}
    )
    assert result.returncode != 0 and "pokedex.serve.leak" in result.stdout, result.stdout

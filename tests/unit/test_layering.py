"""The shape of src/, checked on every run of the suite: the layers of pyproject.toml's
import-linter contract (nothing imports upward), no import circle anywhere (also inside a
package), few function-level imports of the project, and ruff's lint."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# Function-level imports of project modules outside src/cli (the tools import lazily so
# that `exptrain list` never imports torch); each one left must say why in a comment.
MAX_DEFERRED_IMPORTS = 3


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{name} is not installed in {BIN}; run ./test (it installs the test extra)")
    return str(path)


def test_layers_contract_is_kept():
    result = subprocess.run([_tool("lint-imports"), "--no-cache"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "1 kept, 0 broken" in result.stdout


def test_no_import_circle_between_any_two_modules():
    graph = grimp.build_graph("src", exclude_type_checking_imports=True)  # typing-only imports never run
    circles = set()
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            if imported != module and graph.chain_exists(importer=imported, imported=module):
                circles.add(" -> ".join([module, *graph.find_shortest_chain(importer=imported, imported=module)]))
    assert not circles, "import circles:\n" + "\n".join(sorted(circles))


def _deferred_project_imports():
    found = []
    for path in sorted((REPO_ROOT / "src").rglob("*.py")):
        if "cli" in path.relative_to(REPO_ROOT / "src").parts:
            continue
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and (inner.level > 0 or (inner.module or "").startswith("src")):
                    found.append((path, inner.lineno, lines[inner.lineno - 1]))
    return found


def test_function_level_project_imports_are_few_and_explained():
    found = _deferred_project_imports()
    listing = "\n".join(f"{p.relative_to(REPO_ROOT)}:{n}: {line.strip()}" for p, n, line in found)
    assert len(found) <= MAX_DEFERRED_IMPORTS, listing
    assert all("#" in line for _, _, line in found), f"say why in a comment:\n{listing}"


def test_ruff_lint_passes():
    result = subprocess.run([_tool("ruff"), "check", "--no-cache", "."], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]

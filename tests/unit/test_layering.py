"""The shape of src/, checked in-process on every run of the quick loop: the layers of
pyproject.toml's import-linter contract (nothing imports upward), no import circle
anywhere (also inside a package), and few function-level imports of the project.
ruff's lint runs with the end-to-end tests (tests/e2e/test_lint.py: a subprocess)."""

from __future__ import annotations

import ast
from pathlib import Path

import grimp

REPO_ROOT = Path(__file__).resolve().parents[2]
# Function-level imports of project modules outside src/cli (the tools import lazily so
# that `exptrain list` never imports torch); each one left must say why in a comment.
MAX_DEFERRED_IMPORTS = 3


def test_layers_contract_is_kept(capsys, monkeypatch):
    from importlinter.cli import lint_imports

    monkeypatch.chdir(REPO_ROOT)
    code = lint_imports(no_cache=True, no_logo=True)
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    assert "1 kept, 0 broken" in out


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

"""ruff's lint and format over the whole checkout (rules and line length in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def _ruff(*args: str) -> subprocess.CompletedProcess:
    ruff = Path(sys.executable).parent / "ruff"
    if not ruff.exists():
        pytest.fail(f"ruff is not installed in {ruff.parent}; run ./test (it installs the test extra)")
    return subprocess.run([str(ruff), *args], cwd=REPO_ROOT, capture_output=True, text=True)


def test_ruff_lint_passes():
    result = _ruff("check", "--no-cache", ".")
    assert result.returncode == 0, result.stdout[-3000:]


def test_ruff_format_is_kept():
    result = _ruff("format", "--check", "--no-cache", ".")
    assert result.returncode == 0, "run: .venv/bin/ruff format .\n" + result.stdout[-3000:]

"""Starting the commands as a user does: ``python -m src``, ``train.py``, and what a
command imports at start-up (no torch for list and help, no TensorBoard unless asked)."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import HANG_TIMEOUT, REPO_ROOT, cli_env

COMMANDS = ("train", "list", "compare", "evaluate", "predict", "export")


def run_module(*args: str, cwd=REPO_ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "src", *args],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=HANG_TIMEOUT,
    )


def test_python_m_src_lists_every_command():
    result = run_module("--help")
    assert result.returncode == 0
    for command in COMMANDS:
        assert f"    {command} " in result.stdout


def test_train_is_train_py_with_its_own_flags(tmp_path):
    result = run_module("train", "--help")
    assert result.returncode == 0 and result.stdout.startswith("usage: exptrain train")
    for flag in ("--dataset", "--resume", "--fork", "--checkpoint-interval"):
        assert flag in result.stdout
    bad = run_module("train", "--dataset", "mnist-sample", "--epochs", "0", "--runs-dir", str(tmp_path / "r"))
    assert bad.returncode == 2 and "epochs must be a positive integer" in bad.stderr
    assert not (tmp_path / "r").exists()


def test_list_and_help_do_not_import_torch(real_runs):
    code = (
        "import sys; from src.cli.main import main; assert main(['list', '--runs-dir', sys.argv[1]]) == 0; "
        "assert 'torch' not in sys.modules, 'exptrain list imported torch'"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(real_runs)],
        cwd=REPO_ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=HANG_TIMEOUT,
    )
    assert result.returncode == 0, result.stderr
    assert "exp1" in result.stdout


def test_tensorboard_is_imported_only_when_logging_is_on():
    code = (
        "import sys, train; import src.run; "
        "assert not any(m == 'tensorboard' or m.startswith(('tensorboard.', 'torch.utils.tensorboard')) "
        "for m in sys.modules), sorted(m for m in sys.modules if 'tensorboard' in m)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=cli_env(), capture_output=True, text=True, timeout=HANG_TIMEOUT
    )
    assert result.returncode == 0, result.stderr

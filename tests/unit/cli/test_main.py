"""The exptrain command: subcommands, help, train dispatch, exit codes, start-up cost."""

from __future__ import annotations

import subprocess
import sys

import pytest

from src.cli.main import build_parser, main
from tests.helpers import HANG_TIMEOUT, REPO_ROOT, cli_env

COMMANDS = ("train", "list", "compare", "evaluate", "predict", "export")


def run_module(*args: str, cwd=REPO_ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "src", *args], cwd=cwd, env=cli_env(), capture_output=True,
                          text=True, timeout=HANG_TIMEOUT)


def test_python_m_src_lists_every_command():
    result = run_module("--help")
    assert result.returncode == 0
    for command in COMMANDS:
        assert f"    {command} " in result.stdout


@pytest.mark.parametrize("command", COMMANDS[1:])
def test_each_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "--runs-dir" in capsys.readouterr().out


def test_train_is_train_py_with_its_own_flags(tmp_path):
    result = run_module("train", "--help")
    assert result.returncode == 0 and result.stdout.startswith("usage: exptrain train")
    for flag in ("--dataset", "--resume", "--fork", "--checkpoint-interval"):
        assert flag in result.stdout
    bad = run_module("train", "--dataset", "mnist-sample", "--epochs", "0", "--runs-dir", str(tmp_path / "r"))
    assert bad.returncode == 2 and "epochs must be a positive integer" in bad.stderr
    assert not (tmp_path / "r").exists()


def test_list_and_help_do_not_import_torch(real_runs):
    code = ("import sys; from src.cli.main import main; assert main(['list', '--runs-dir', sys.argv[1]]) == 0; "
            "assert 'torch' not in sys.modules, 'exptrain list imported torch'")
    result = subprocess.run([sys.executable, "-c", code, str(real_runs)], cwd=REPO_ROOT, env=cli_env(),
                            capture_output=True, text=True, timeout=HANG_TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert "exp1" in result.stdout


def test_missing_command_and_unknown_command_exit_2(capsys):
    for argv in ([], ["frobnicate"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
    capsys.readouterr()


def test_unexpected_errors_are_one_line(monkeypatch, capsys):
    from src.cli import listing

    def explode(args):
        raise RuntimeError("boom\nsecond line")
    monkeypatch.setattr(listing, "run", explode)
    monkeypatch.delenv("EXPTRAIN_DEBUG", raising=False)
    assert main(["list"]) == 1
    assert capsys.readouterr().err == "Error: unexpected RuntimeError: boom (set EXPTRAIN_DEBUG=1 for the traceback).\n"


def test_parser_defaults():
    args = build_parser().parse_args(["evaluate", "exp1"])
    assert (args.checkpoint, args.split, args.tta, args.out, args.runs_dir) == ("best", "test", False, None, "runs")
    assert build_parser().parse_args(["export", "exp1"]).format == "safetensors"

"""The exptrain command: subcommands, help, train dispatch, exit codes, start-up cost."""

from __future__ import annotations

import pytest

from src.cli.main import build_parser, main

COMMANDS = ("train", "list", "compare", "evaluate", "predict", "export")


@pytest.mark.parametrize("command", COMMANDS[1:])
def test_each_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "--runs-dir" in capsys.readouterr().out


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
    assert (
        capsys.readouterr().err
        == "Error: unexpected error (a bug): RuntimeError: boom (set EXPTRAIN_DEBUG=1 for the traceback).\n"
    )


def test_parser_defaults():
    args = build_parser().parse_args(["evaluate", "exp1"])
    assert (args.checkpoint, args.split, args.tta, args.out, args.runs_dir) == ("best", "test", False, None, "runs")
    assert build_parser().parse_args(["export", "exp1"]).format == "safetensors"


@pytest.mark.parametrize("error", [ValueError("bad arithmetic"), KeyError("missing"), TypeError("wrong call")])
def test_a_library_value_error_is_a_bug_not_bad_input(monkeypatch, capsys, error):
    """Only the project's own errors are bad input (exit 2, nothing written); a ValueError
    raised by code (a plug-in's forward at step 3, a bug here) is exit 1 and says so."""
    from src.cli import listing

    def explode(args):
        raise error

    monkeypatch.setattr(listing, "run", explode)
    monkeypatch.delenv("EXPTRAIN_DEBUG", raising=False)
    assert main(["list"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"Error: unexpected error (a bug): {type(error).__name__}: ") and "Traceback" not in err
    monkeypatch.setenv("EXPTRAIN_DEBUG", "1")
    assert main(["list"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "in explode" in err
    assert err.rstrip().endswith("(the traceback is above; please report it with the command you ran).")


def test_one_line_keeps_quotes_inside_a_message_and_shows_a_keyerrors_text():
    from src.errors import one_line

    assert one_line(ModuleNotFoundError("No module named 'no'")) == "No module named 'no'"
    assert one_line(AttributeError("'int' object has no attribute 'step'")) == "'int' object has no attribute 'step'"
    assert one_line(KeyError("missing key")) == "missing key"
    assert one_line(RuntimeError("")) == "RuntimeError"

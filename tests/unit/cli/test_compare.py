"""exptrain compare: differing settings, results, and curves with forks from their branch point."""

from __future__ import annotations

import pytest

from src.cli.compare import branch_records, compare_experiments, flatten
from tests.helpers import log_records, run_tool


def test_compare_a_fork_with_its_parent(real_runs, tmp_path, capsys):
    plot = tmp_path / "plots" / "cmp.png"
    code, out, err = run_tool(capsys, "compare", "exp1", "exp2", "--runs-dir", str(real_runs), "--plot", str(plot))
    assert code == 0, err
    settings, results = out.split("\n\n")[:2]
    assert settings.splitlines()[0].split() == ["SETTING", "exp1", "exp2"]
    keys = {line.split()[0]: line.split()[1:] for line in settings.splitlines()[1:]}
    assert keys == {"epochs": ["2", "3"], "lr": ["0.001", "0.0005"]}, "only the keys that differ"
    rows = {line[:18].strip(): line[18:].split() for line in results.splitlines()[1:]}
    assert rows["status"] == ["completed", "completed"] and rows["epochs"] == ["2/2", "3/3"]
    assert rows["parent"] == ["-", "exp1@2"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fork_curve_starts_at_the_branch_point(real_runs):
    comparison = compare_experiments(str(real_runs), ["exp1", "exp2"])
    fork_log, fork = comparison["logs"][1], comparison["summaries"][1]
    assert [r["epoch"] for r in fork_log] == [1, 2, 3], "a fork's log holds its parent's epochs"
    shown = branch_records(fork_log, fork["branch_epoch"])
    assert [r["epoch"] for r in shown] == [2, 3]
    assert shown[0]["val_accuracy"] == log_records(real_runs / "exp1")[1]["val_accuracy"], (
        "it leaves the parent's curve"
    )
    assert [r["epoch"] for r in branch_records(comparison["logs"][0], None)] == [1, 2]


def test_all_keys_and_flattened_options():
    assert flatten({"a": 1, "opts": {"x": {"y": 2}}, "empty": {}}) == {"a": 1, "opts.x.y": 2}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["exp1"], "at least two experiments"),
        (["exp1", "exp1"], "exp1 is named twice"),
        (["exp1", "exp9"], "'exp9' does not exist"),
        (["exp1", "../exp2"], "Invalid experiment name"),
        (["exp1", "exp2", "--plot", "out.jpg"], "must end in .png"),
    ],
)
def test_bad_input(argv, message, real_runs, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_tool(capsys, "compare", *argv, "--runs-dir", str(real_runs))
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err
    assert not (tmp_path / "comparison.png").exists()


def test_damaged_config_is_named(real_runs, tmp_path, capsys):
    import shutil

    runs = tmp_path / "runs"
    for name in ("exp1", "exp2"):
        shutil.copytree(real_runs / name, runs / name, ignore=shutil.ignore_patterns("checkpoints"))
    (runs / "exp2" / "config.json").write_text("{oops")
    code, _, err = run_tool(
        capsys, "compare", "exp1", "exp2", "--runs-dir", str(runs), "--plot", str(tmp_path / "c.png")
    )
    assert code == 2 and "exp2/config.json is not valid JSON" in err

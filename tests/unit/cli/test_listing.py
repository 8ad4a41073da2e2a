"""exptrain list: states, columns, damage, a running and a killed experiment, 500 experiments."""

from __future__ import annotations

import json

import pytest

from src.cli import listing
from src.cli.listing import sort_rows
from tests.helpers import fabricate, row_of, run_tool


def test_lists_real_runs_with_every_column(real_runs, capsys):
    code, out, err = run_tool(capsys, "list", "--runs-dir", str(real_runs))
    assert code == 0 and err == ""
    header = out.splitlines()[0].split()
    assert header[:5] == ["NAME", "STATUS", "DATA", "MODEL", "EPOCHS"] and "PARENT" in header and "STARTED" in header
    exp1, exp2 = row_of(out, "exp1"), row_of(out, "exp2")
    best1 = max(
        json.loads(line)["val_accuracy"] for line in (real_runs / "exp1/training_log.jsonl").read_text().splitlines()
    )
    assert exp1.split()[1:5] == ["completed", "mnist-sample", "mlp", "2/2"]
    assert f"{best1:.2f}% @2" in exp1
    assert exp2.split()[1:5] == ["completed", "mnist-sample", "mlp", "3/3"] and "exp1@2" in exp2


def test_five_hundred_experiments_in_numeric_order(real_runs, tmp_path, capsys):
    runs = tmp_path / "runs"
    source = real_runs / "exp2"
    for number in range(1, 501):
        fabricate(runs, f"exp{number}", source)
    (runs / ".new-exp.tmp-1-abcdef12").mkdir()  # a staging directory is not an experiment
    (runs / "notes.txt").write_text("not an experiment")
    code, out, _ = run_tool(capsys, "list", "--runs-dir", str(runs))
    lines = out.splitlines()
    assert code == 0 and len(lines) == 501
    assert [line.split()[0] for line in lines[1:]] == [f"exp{n}" for n in range(1, 501)]
    assert all("completed" in line and "exp1@2" in line for line in lines[1:])


def test_sort_and_json(real_runs, capsys):
    code, out, _ = run_tool(capsys, "list", "--runs-dir", str(real_runs), "--sort", "best")
    assert code == 0 and [line.split()[0] for line in out.splitlines()[1:]] == ["exp2", "exp1"]
    code, out, _ = run_tool(capsys, "list", "--runs-dir", str(real_runs), "--sort", "best", "--reverse", "--json")
    records = json.loads(out)
    assert [r["name"] for r in records] == ["exp1", "exp2"] and records[1]["parent"] == "exp1"
    assert records[0]["best_epoch"] == 2 and records[0]["epochs_target"] == 2


def test_sort_puts_missing_values_last():
    rows = [
        {"name": "exp1", "best_accuracy": None},
        {"name": "exp2", "best_accuracy": 50.0},
        {"name": "exp3", "best_accuracy": 70.0},
    ]
    assert [r["name"] for r in sort_rows(rows, "best")] == ["exp3", "exp2", "exp1"]
    assert [r["name"] for r in sort_rows(rows, "best", reverse=True)] == ["exp2", "exp3", "exp1"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--sort", "speed"], "Unknown --sort column 'speed'; choose one of: name, status"),
        (["--runs-dir", "nowhere"], "does not exist"),
        (["--runs-dir", " "], "--runs-dir must name a directory"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    code, out, err = run_tool(capsys, "list", *argv)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and message in err


def test_runs_dir_that_is_a_file_and_an_empty_one(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    code, _, err = run_tool(capsys, "list", "--runs-dir", str(tmp_path / "file"))
    assert code == 2 and "is a file" in err
    (tmp_path / "empty").mkdir()
    code, out, _ = run_tool(capsys, "list", "--runs-dir", str(tmp_path / "empty"))
    assert code == 0 and "No experiments" in out


def test_damaged_log_and_config_are_reported_not_raised(real_runs, tmp_path):
    runs = tmp_path / "runs"
    experiment = fabricate(runs, "exp1", real_runs / "exp1")
    (experiment / "training_log.jsonl").write_text('{"epoch": 1, "val_accuracy": 50.0}\nnot json\n')
    (experiment / "config.json").write_text("[1, 2]")
    row = listing.summarize(experiment)
    assert row["best_accuracy"] == 50.0 and row["dataset"] is None
    assert any("line 2 is damaged" in p for p in row["problems"]) and any("JSON list" in p for p in row["problems"])

"""metrics.csv (one row per epoch, continued on resume) and the training-curve plot."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

import train
from src.training.history import (
    HISTORY_KEYS,
    METRICS_FILE,
    append_epoch,
    empty_history,
    read_metrics_epochs,
    record_start,
    write_metrics_csv,
)
from src.training.plots import best_epoch_of, plot_history, run_title
from tests.helpers import load_checkpoint

TINY = (
    "--dataset",
    "synthetic",
    "--dataset-option",
    "num_samples=64",
    "--model",
    "mlp",
    "--model-option",
    "hidden_sizes=[8]",
    "--quiet",
    "--checkpoint-interval",
    "0",
)


def read_rows(path: Path):
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        return header, [row for row in reader]


def log_records(experiment: Path):
    return [json.loads(line) for line in (experiment / "training_log.jsonl").read_text().splitlines()]


def history_of(n: int):
    history = empty_history()
    for epoch in range(1, n + 1):
        append_epoch(
            history,
            {
                "epoch": epoch,
                "train_loss": 1.0 / epoch,
                "train_accuracy": 50.0 + epoch,
                "val_loss": 1.1 / epoch + 1e-17,
                "val_accuracy": [60.0, 70.0, 65.0, 70.0][epoch % 4],
                "learning_rate": 1e-3 / epoch,
                "epoch_time": 0.1 * epoch,
            },
        )
    return history


def test_csv_holds_the_history_exactly(tmp_path):
    history = history_of(3)
    path = tmp_path / METRICS_FILE
    write_metrics_csv(path, history)
    header, rows = read_rows(path)
    assert header == list(HISTORY_KEYS) and len(rows) == 3
    for i, row in enumerate(rows):
        assert int(row[0]) == history["epoch"][i]
        for key, text in zip(HISTORY_KEYS[1:], row[1:]):
            assert float(text) == history[key][i], "full precision, not rounded"
    assert read_metrics_epochs(path) == [1, 2, 3]
    write_metrics_csv(path, empty_history())
    assert read_rows(path) == (list(HISTORY_KEYS), []) and read_metrics_epochs(path) == []
    assert read_metrics_epochs(tmp_path / "missing.csv") is None
    (tmp_path / "damaged.csv").write_bytes(b"epoch,x\nseven,1\n")
    assert read_metrics_epochs(tmp_path / "damaged.csv") == []


def test_every_run_writes_metrics_csv_continued_on_resume(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert train.main([*TINY, "--epochs", "2", "--save-frequency", "1"]) == 0
    experiment = tmp_path / "runs" / "exp1"
    header, first = read_rows(experiment / METRICS_FILE)
    assert header == list(HISTORY_KEYS) and [int(r[0]) for r in first] == [1, 2]

    assert train.main(["--resume", "exp1", "--epochs", "4", "--quiet"]) == 0
    header, rows = read_rows(experiment / METRICS_FILE)
    assert [int(r[0]) for r in rows] == [1, 2, 3, 4] and rows[:2] == first, "continued, not restarted"
    text = (experiment / METRICS_FILE).read_text()
    assert text.count("epoch,") == 1, "one header"
    for row, record in zip(rows, log_records(experiment)):
        assert [float(v) for v in row] == [float(record[k]) for k in HISTORY_KEYS], "the same numbers as the log"
    assert load_checkpoint(experiment / "checkpoints" / "latest_checkpoint.pt")["starts"] == [
        {"kind": "resume", "epoch": 2, "global_step": 2, "mid_epoch": False}
    ]

    # A kill between the log and the table leaves the table behind: a resume of the finished run settles it.
    (experiment / METRICS_FILE).write_text("\n".join(text.splitlines()[:3]) + "\n")
    capsys.readouterr()
    assert train.main(["--resume", "exp1", "--quiet"]) == 0
    assert "brought up to date" in capsys.readouterr().out
    assert (experiment / METRICS_FILE).read_text() == text

    # A fork's table starts with its parent's epochs and goes on with its own.
    assert train.main(["--fork", "exp1", "--epochs", "5", "--lr", "3e-3", "--quiet"]) == 0
    _, forked = read_rows(tmp_path / "runs" / "exp2" / METRICS_FILE)
    assert [int(r[0]) for r in forked] == [1, 2, 3, 4, 5] and forked[:4] == rows
    starts = load_checkpoint(tmp_path / "runs" / "exp2" / "checkpoints" / "latest_checkpoint.pt")["starts"]
    assert [(s["kind"], s["epoch"]) for s in starts] == [("resume", 2), ("fork", 4)]


def test_record_start_keeps_one_point_per_step():
    starts = []
    record_start(starts, "resume", 2, 10, False)
    record_start(starts, "resume", 2, 10, False)  # stopped before its first step, resumed again
    record_start(starts, "resume", 3, 17, True)
    record_start(starts, "fork", 3, 17, True)
    assert starts == [
        {"kind": "resume", "epoch": 2, "global_step": 10, "mid_epoch": False},
        {"kind": "fork", "epoch": 3, "global_step": 17, "mid_epoch": True},
    ]


def test_run_title_and_best_epoch():
    assert run_title("exp3", {"name": "base", "model": "mynet", "dataset": "mnist"}) == "exp3 (base): mynet on mnist"
    assert run_title("exp3", {"model": "mynet", "dataset": "mnist"}) == "exp3: mynet on mnist"
    assert run_title(None, None) == "training"
    assert best_epoch_of(history_of(4)) == 1 and best_epoch_of(empty_history()) is None


@pytest.mark.parametrize("epochs", [1, 6])
def test_plot_has_three_panels_and_marks(tmp_path, epochs):
    from PIL import Image
    import numpy as np

    path = tmp_path / "curves.png"
    plot_history(
        history_of(epochs),
        path,
        title="exp9 (x): mlp on synthetic",
        best_epoch=1,
        starts=[
            {"kind": "resume", "epoch": 1, "mid_epoch": True},
            {"kind": "fork", "epoch": 2},
            {"kind": "other", "epoch": 1},
            {"kind": "resume", "epoch": "two"},
        ],
    )
    image = np.asarray(Image.open(path).convert("RGB")).astype(int)
    assert image.shape[1] > 2 * image.shape[0], "three panels side by side"
    assert image.std() > 20, "not blank"
    # The best-epoch star is drawn in tab:red (214, 39, 40).
    red = (abs(image[..., 0] - 214) < 20) & (abs(image[..., 1] - 39) < 20) & (abs(image[..., 2] - 40) < 20)
    assert red.sum() > 50
    # A resume point is a tab:gray dashed line (127, 127, 127) in every panel.
    gray = (abs(image - 127) < 6).all(axis=2)
    assert gray.sum() > 450  # ~200 without it (tick labels and anti-aliasing)

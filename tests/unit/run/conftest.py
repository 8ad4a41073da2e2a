"""Tiny finished experiments, trained once in-process, copied for each plan test."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from src.run import run_training

TINY = {
    "dataset": "synthetic",
    "dataset_options": {"num_samples": 64},
    "model": "mlp",
    "model_options": {"hidden_sizes": [16]},
    "device": "cpu",
    "save_frequency": 1,
}


def train(runs: Path, **options) -> None:
    run_training({**TINY, **options}, runs_dir=str(runs), show_progress=False, log=lambda *a, **k: None)


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory) -> Path:
    """exp1 (named "base"): 1 epoch, complete; exp2: 1 epoch of a onecycle schedule;
    exp3: a fork of exp1 to 2 epochs; exp4: stopped early at epoch 3 (patience 2, no progress)."""
    runs = tmp_path_factory.mktemp("plan") / "runs"
    train(runs, epochs=1, name="base")
    train(runs, epochs=1, scheduler="onecycle")
    run_training({"epochs": 2}, runs_dir=str(runs), fork="exp1", show_progress=False, log=lambda *a, **k: None)
    train(runs, epochs=20, patience=2, lr=1e-12, augment=False)
    return runs


@pytest.fixture
def runs(trained_runs, tmp_path) -> Path:
    """A private copy of the trained runs directory."""
    copy = tmp_path / "runs"
    shutil.copytree(trained_runs, copy, symlinks=True)
    return copy

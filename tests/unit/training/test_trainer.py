"""Trainer in-process: the documented API, plain DataLoaders, history and state."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from tests.helpers import make_trainer

RESULT_KEYS = {
    "epochs_trained",
    "best_accuracy",
    "training_time",
    "history",
    "experiment_dir",
    "stopped_early",
    "best_epoch",
}


def test_train_returns_documented_results_and_writes_files(tmp_path, capsys):
    trainer = make_trainer(tmp_path, scheduler="step")
    results = trainer.train(epochs=3)
    assert set(results) == RESULT_KEYS
    assert results["epochs_trained"] == 3 and not results["stopped_early"]
    assert results["best_accuracy"] == max(results["history"]["val_accuracy"]) > 90
    assert results["history"]["epoch"] == [1, 2, 3]
    assert results["history"]["learning_rate"] == [1e-2, 5e-3, 2.5e-3], "the scheduler steps once per epoch"
    experiment = Path(results["experiment_dir"])
    assert {"config.json", "status.json", "training_log.jsonl", "training_curves.png", "checkpoints"} <= {
        p.name for p in experiment.iterdir()
    }
    config = json.loads((experiment / "config.json").read_text())
    # The CLI's schema (RunConfig), so train.py can resume and fork a run made in Python.
    assert config["model"] == "mlp" and config["model_options"] == {"hidden_sizes": [32], "dropout": 0.0}
    assert config["optimizer"] == "adamw" and config["scheduler"] == "step" and config["epochs"] == 3
    assert (experiment / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {p.name for p in (experiment / "checkpoints").glob("*.pt")} == {
        "best_model.pt",
        "latest_checkpoint.pt",
        "epoch_1.pt",
        "epoch_2.pt",
        "epoch_3.pt",
    }
    assert json.loads((experiment / "status.json").read_text())["state"] == "completed"
    out = capsys.readouterr().out
    assert "Epoch 1/3" in out and "Epoch 3/3" in out
    assert trainer.best_epoch == results["best_epoch"] and trainer.history is results["history"]


def test_train_epoch_and_validate_return_metrics_and_speed(tmp_path):
    trainer = make_trainer(tmp_path)
    metrics, speed = trainer.train_epoch(1)
    assert metrics["total_samples"] == 256 and 0 <= metrics["accuracy"] <= 100 and speed > 0
    metrics, speed = trainer.validate()
    assert metrics["total_samples"] == 64 and speed > 0


def test_load_history_from_log_rebuilds_history(tmp_path):
    trainer = make_trainer(tmp_path)
    trainer.train(epochs=2)
    history = {k: list(v) for k, v in trainer.history.items()}
    fresh = make_trainer(tmp_path)
    fresh.experiment_manager = trainer.experiment_manager
    assert fresh.load_history_from_log() == 2
    assert fresh.history == history


def test_plain_dataloader_is_accepted(tmp_path):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(128, 1, 8, 8, generator=generator)
    y = (x.mean(dim=(1, 2, 3)) > 0).long()
    train = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True)
    val = DataLoader(TensorDataset(x[:32], y[:32]), batch_size=16)
    trainer = make_trainer(tmp_path, loaders=(train, val))
    results = trainer.train(epochs=2)
    assert results["epochs_trained"] == 2 and results["history"]["train_loss"][1] < results["history"]["train_loss"][0]


def test_early_stopping_sets_flags(tmp_path):
    trainer = make_trainer(tmp_path, patience=1)
    trainer.optimizer.param_groups[0]["lr"] = 0.0  # nothing can improve after epoch 1
    results = trainer.train(epochs=10)
    assert results["stopped_early"] and results["epochs_trained"] == 2 and results["best_epoch"] == 1
    assert trainer.epochs_without_improvement == 1
    status = json.loads((Path(results["experiment_dir"]) / "status.json").read_text())
    assert status["state"] == "stopped_early"


def test_state_dict_round_trip_continues_bit_identically(tmp_path):
    straight = make_trainer(tmp_path / "a")
    straight.train(epochs=3)
    first = make_trainer(tmp_path / "b")
    first.train(epochs=1)
    state = torch.load(Path(first.checkpoint_manager.latest_path), weights_only=True)
    second = make_trainer(tmp_path / "c")
    torch.manual_seed(123)  # different global RNG: the checkpoint's RNG state must win
    second.load_state_dict(state)
    second.train(epochs=3)
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, second.model.state_dict()[key])
    assert straight.history["val_loss"] == second.history["val_loss"]


def test_failure_is_recorded_in_status(tmp_path):
    trainer = make_trainer(tmp_path)

    def broken(*args):
        raise RuntimeError("model exploded")

    trainer.criterion = broken
    with pytest.raises(RuntimeError, match="model exploded"):
        trainer.train(epochs=1)
    status = trainer.experiment_manager.read_status()
    assert status["state"] == "failed" and "model exploded" in status["error"]


def test_bad_epochs(tmp_path):
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        make_trainer(tmp_path).train(epochs=0)

"""The Python API of the specification (Quick Start), resumed and forked from Python and
from train.py (issue 7, cases 15-18).

Runs made in this process release their experiment lock before train.py (a subprocess)
touches them, as the end of a user's script would.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from src.datasets import DatasetRegistry
from src.datasets.loader import TensorLoader
from src.models import ModelRegistry
from src.training import CheckpointManager, ExperimentError, ExperimentManager, Trainer
from tests.helpers import make_trainer, quickstart, tree_hashes

MLP = {"hidden_sizes": [16]}


# -- case 15: a missing or empty validation loader is refused when the Trainer is built ---


class Stream(IterableDataset):
    """An unsized stream of ``n`` samples (a DataLoader over it has no len())."""

    def __init__(self, n: int):
        self.n = n

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.n)
        for i in range(self.n):
            yield torch.rand((1, 8, 8), generator=generator) + (i % 4), torch.tensor(i % 4)


def empty_loaders():
    images, labels = torch.zeros((0, 1, 8, 8)), torch.zeros(0, dtype=torch.long)
    three = TensorDataset(torch.zeros((3, 1, 8, 8)), torch.zeros(3, dtype=torch.long))
    return {
        "None": None,
        "empty built-in loader": TensorLoader(images.to(torch.uint8), labels, 32, 0.5, 0.5),
        "empty DataLoader": DataLoader(TensorDataset(images, labels), batch_size=32),
        "DataLoader dropping its only batch": DataLoader(three, batch_size=32, drop_last=True),
        "empty list": [],
    }


@pytest.mark.parametrize("which", list(empty_loaders()))
def test_missing_or_empty_validation_loader_is_refused_when_built(tmp_path, which, monkeypatch):
    data = DatasetRegistry.create("synthetic", num_samples=64, num_classes=4, input_shape=(1, 8, 8), seed=0)
    train_loader, _ = data.get_dataloaders(batch_size=16)
    monkeypatch.setattr(Trainer, "train_epoch", lambda *a, **k: pytest.fail("trained before refusing"))
    with pytest.raises(ValueError, match=r"val_loader (is None|is empty)"):
        make_trainer(tmp_path, loaders=(train_loader, empty_loaders()[which]))


def test_empty_training_loader_is_refused_when_built(tmp_path):
    data = DatasetRegistry.create("synthetic", num_samples=64, num_classes=4, input_shape=(1, 8, 8), seed=0)
    _, val_loader = data.get_dataloaders(batch_size=16)
    with pytest.raises(ValueError, match=r"train_loader is empty"):
        make_trainer(tmp_path, loaders=(empty_loaders()["empty DataLoader"], val_loader))


def test_unsized_stream_loaders_are_accepted_and_train(tmp_path):
    """A DataLoader over an IterableDataset is an ordinary DataLoader: it has no len()."""
    trainer = make_trainer(
        tmp_path, loaders=(DataLoader(Stream(64), batch_size=16), DataLoader(Stream(32), batch_size=16))
    )
    results = trainer.train(epochs=1)
    assert results["epochs_trained"] == 1 and results["history"]["epoch"] == [1]


def test_unsized_validation_stream_that_yields_nothing_is_a_clear_error_not_zero_accuracy(tmp_path):
    trainer = make_trainer(
        tmp_path, loaders=(DataLoader(Stream(64), batch_size=16), DataLoader(Stream(0), batch_size=16))
    )
    with pytest.raises(ValueError, match=r"val_loader.*no (samples|batches)"):
        trainer.train(epochs=1)
    assert not (Path(trainer.experiment_manager.experiment_dir) / "checkpoints" / "best_model.pt").exists()


# -- case 16: a resume from Python keeps the better best model ------------------------


def test_load_history_from_log_restores_best_and_patience(tmp_path):
    trainer = make_trainer(tmp_path, patience=3)
    accuracies = [50.0, 60.0, 55.0, 58.0]
    lines = [
        json.dumps(
            {
                "epoch": e,
                "train_loss": 1.0,
                "train_accuracy": 50.0,
                "val_loss": 1.0,
                "val_accuracy": a,
                "learning_rate": 1e-3,
                "epoch_time": 0.1,
            }
        )
        for e, a in enumerate(accuracies, start=1)
    ]
    Path(trainer.experiment_manager.log_file).write_text("\n".join(lines) + "\n")
    assert trainer.load_history_from_log() == 4
    assert (trainer.best_accuracy, trainer.best_epoch, trainer.epochs_without_improvement) == (60.0, 2, 2)
    assert trainer.early_stopping.patience == 3 and not trainer.early_stopping.should_stop
    assert trainer.history["val_accuracy"] == accuracies


def test_save_best_model_never_replaces_a_better_model(tmp_path):
    model = ModelRegistry.create("mlp", num_classes=4, input_size=8, hidden_sizes=[8])
    first = CheckpointManager(str(tmp_path / "ckpt"), save_frequency=1)
    assert first.save_best_model(model, None, 1, 0.5, 80.0)
    best = first.best_path.read_bytes()
    reopened = CheckpointManager(str(tmp_path / "ckpt"), save_frequency=1)
    assert reopened.best_accuracy == 80.0
    assert not reopened.save_best_model(model, None, 2, 0.4, 70.0)
    assert not reopened.save_best_model(model, None, 3, 0.4, 80.0)  # a tie is no improvement
    assert not reopened.save_best_model(model, None, 4, float("nan"), float("nan"))
    assert not reopened.save_epoch_end(model, None, 5, 0.4, 79.0)["best"]
    assert reopened.best_path.read_bytes() == best
    assert reopened.save_best_model(model, None, 6, 0.3, 81.0)
    assert reopened.read(reopened.best_path)["epoch"] == 6


# -- case 17: forking from Python and the bare command-line fork ----------------------


def test_python_fork_records_lineage_and_exposes_parent_state(tmp_path):
    runs = tmp_path / "runs"
    parent = quickstart(runs, epochs=2)
    before = tree_hashes(runs / "exp1")
    fork = ExperimentManager(base_dir=str(runs), fork_exp="exp1")
    try:
        assert fork.name == "exp2" and Path(fork.experiment_dir) == runs / "exp2"
        assert fork.parent_checkpoint.parent == runs / "exp1" / "checkpoints"
        assert fork.parent_state["epoch"] == 2
        lineage = json.loads((runs / "exp2" / "lineage.json").read_text())
        assert lineage["parent"] == "exp1" and lineage["epoch"] == 2
        assert lineage["sha256"] == hashlib.sha256(fork.parent_checkpoint.read_bytes()).hexdigest()
        model = ModelRegistry.create("mlp", num_classes=10, **MLP)
        model.load_state_dict(fork.parent_state["model_state_dict"])
        parent_latest = torch.load(runs / "exp1" / "checkpoints" / "latest_checkpoint.pt", weights_only=True)
        for key, value in parent_latest["model_state_dict"].items():
            assert torch.equal(model.state_dict()[key], value)
        assert tree_hashes(runs / "exp1") == before, "a fork changed its parent"
        assert parent["epochs_trained"] == 2
    finally:
        fork.release()


@pytest.mark.parametrize("damage", ["no checkpoint", "damaged checkpoint"])
def test_python_fork_of_a_parent_without_a_checkpoint_is_refused_and_leaves_nothing(tmp_path, damage):
    runs = tmp_path / "runs"
    parent = ExperimentManager(base_dir=str(runs), lock=False)
    if damage == "damaged checkpoint":
        model = ModelRegistry.create("mlp", num_classes=4, input_size=8, hidden_sizes=[8])
        manager = CheckpointManager(parent.checkpoints_dir)
        path = manager.save_latest_checkpoint(model, None, 1, 0.5, 50.0)
        path.write_bytes(path.read_bytes()[:100])
    before = tree_hashes(runs)
    with pytest.raises(ExperimentError, match="exp1.*(no valid checkpoint|nothing to fork)"):
        ExperimentManager(base_dir=str(runs), fork_exp="exp1")
    assert sorted(os.listdir(runs)) == ["exp1"], "a refused fork left a directory"
    assert tree_hashes(runs) == before


# -- case 18: a Python run continues from train.py ------------------------------------


def test_restoring_an_older_state_never_lowers_the_best_on_disk(tmp_path):
    """trainer.load_state_dict(cm.read(epoch_2.pt)) after a better epoch 3: best_model.pt stays."""
    trainer = make_trainer(tmp_path)
    trainer.train(epochs=3)
    checkpoints = trainer.checkpoint_manager
    best = checkpoints.best_path.read_bytes()
    best_accuracy = checkpoints.best_accuracy
    accuracies = trainer.history["val_accuracy"]
    for epoch in (1, 2, 3):  # each checkpoint knows the best up to and including its own epoch
        state = checkpoints.read(checkpoints.epoch_path(epoch))
        assert state["checkpoint_manager"]["best_accuracy"] == max(accuracies[:epoch])
    reopened = CheckpointManager(checkpoints.checkpoints_dir, save_frequency=1)
    reopened.load_state_dict({"best_accuracy": best_accuracy - 5.0})
    assert reopened.best_accuracy == best_accuracy
    assert not reopened.save_best_model(trainer.model, None, 2, 1.0, best_accuracy - 1.0)
    assert reopened.best_path.read_bytes() == best


def test_resume_after_a_best_epoch_keeps_it_against_a_worse_later_epoch(tmp_path, monkeypatch):
    """The whole-run path (run_training, as train.py): validation accuracies 80, 90, then
    85 after a resume. Epoch 2's best model must survive epoch 3."""
    from src.run import run_training

    scripted = iter([80.0, 90.0, 85.0])
    original = Trainer.validate

    def validate(self):
        metrics, speed = original(self)
        return {**metrics, "accuracy": next(scripted)}, speed

    monkeypatch.setattr(Trainer, "validate", validate)
    overrides = {
        "dataset": "synthetic",
        "dataset_options": {"num_samples": 64},
        "model": "mlp",
        "model_options": {"hidden_sizes": [16]},
        "epochs": 2,
        "device": "cpu",
        "save_frequency": 1,
    }
    runs = str(tmp_path / "runs")
    run_training(overrides, runs_dir=runs, show_progress=False, log=lambda *a: None)
    best = tmp_path / "runs" / "exp1" / "checkpoints" / "best_model.pt"
    best_bytes = best.read_bytes()
    results = run_training({"epochs": 3}, runs_dir=runs, resume="exp1", show_progress=False, log=lambda *a: None)
    assert results["history"]["val_accuracy"] == [80.0, 90.0, 85.0]
    assert best.read_bytes() == best_bytes, "a worse epoch replaced best_model.pt after a resume"
    assert results["best_accuracy"] == 90.0 and results["best_epoch"] == 2

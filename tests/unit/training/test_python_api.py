"""The Python API of the specification (Quick Start), resumed and forked from Python and
from train.py (issue 7, cases 15-18).

Runs made in this process release their experiment lock before train.py (a subprocess)
touches them, as the end of a user's script would.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.optim as optim
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from src.datasets import DatasetRegistry
from src.datasets.loader import TensorLoader
from src.models import ModelRegistry
from src.training import CheckpointManager, ExperimentError, ExperimentManager, Trainer
from tests.helpers import HANG_TIMEOUT, REPO_ROOT, cli_env, run_cli
from tests.helpers import tree_hashes
from tests.helpers import make_trainer

MLP = {"hidden_sizes": [16]}


def log_epochs(experiment: Path):
    return [json.loads(line)["epoch"] for line in (experiment / "training_log.jsonl").read_text().splitlines()]


def quickstart(runs: Path, epochs: int, model: nn.Module = None, save_frequency: int = 1) -> dict:
    """The specification's Quick Start on the bundled mnist-sample with a tiny MLP; the lock
    is released at the end, as when the user's script exits."""
    torch.manual_seed(0)
    device = torch.device("cpu")
    dataset = DatasetRegistry.create("mnist-sample")
    train_loader, val_loader = dataset.get_dataloaders(batch_size=64)
    if model is None:
        model = ModelRegistry.create("mlp", num_classes=10, **MLP).to(device)
    experiment_manager = ExperimentManager(base_dir=str(runs))
    checkpoint_manager = CheckpointManager(checkpoints_dir=experiment_manager.checkpoints_dir,
                                           save_frequency=save_frequency)
    optimizer = optim.AdamW(model.parameters(), lr=1e-3)
    trainer = Trainer(model=model, train_loader=train_loader, val_loader=val_loader,
                      criterion=nn.CrossEntropyLoss(), optimizer=optimizer, device=device,
                      experiment_manager=experiment_manager, checkpoint_manager=checkpoint_manager, patience=5)
    try:
        return trainer.train(epochs=epochs)
    finally:
        experiment_manager.release()


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
    trainer = make_trainer(tmp_path, loaders=(DataLoader(Stream(64), batch_size=16), DataLoader(Stream(32), batch_size=16)))
    results = trainer.train(epochs=1)
    assert results["epochs_trained"] == 1 and results["history"]["epoch"] == [1]


def test_unsized_validation_stream_that_yields_nothing_is_a_clear_error_not_zero_accuracy(tmp_path):
    trainer = make_trainer(tmp_path, loaders=(DataLoader(Stream(64), batch_size=16), DataLoader(Stream(0), batch_size=16)))
    with pytest.raises(ValueError, match=r"val_loader.*no (samples|batches)"):
        trainer.train(epochs=1)
    assert not (Path(trainer.experiment_manager.experiment_dir) / "checkpoints" / "best_model.pt").exists()


# -- case 16: a resume from Python keeps the better best model ------------------------

RESUME_SCRIPT = """
import json, sys
import torch, torch.nn as nn, torch.optim as optim
from src.datasets import DatasetRegistry
from src.models import ModelRegistry
from src.training import Trainer, CheckpointManager, ExperimentManager

torch.set_num_threads(1)
device = torch.device("cpu")
dataset = DatasetRegistry.create("mnist-sample")
train_loader, val_loader = dataset.get_dataloaders(batch_size=64)
model = ModelRegistry.create("mlp", num_classes=10, hidden_sizes=[16]).to(device)
experiment_manager = ExperimentManager(resume_exp="exp1")
checkpoint_manager = CheckpointManager(experiment_manager.checkpoints_dir, save_frequency=1)
known_best = checkpoint_manager.best_accuracy
optimizer = optim.AdamW(model.parameters(), lr=1e-3)
loaded = checkpoint_manager.load_checkpoint(checkpoint_manager.latest_path, model, optimizer)
# Sabotage: the next epoch is far worse than the best so far (all-zero weights, lr 0).
with torch.no_grad():
    for parameter in model.parameters():
        parameter.zero_()
for group in optimizer.param_groups:
    group["lr"] = 0.0
trainer = Trainer(model=model, train_loader=train_loader, val_loader=val_loader, criterion=nn.CrossEntropyLoss(),
                  optimizer=optimizer, device=device, experiment_manager=experiment_manager,
                  checkpoint_manager=checkpoint_manager, patience=5)
last = trainer.load_history_from_log()
restored = [trainer.best_accuracy, trainer.best_epoch, trainer.epochs_without_improvement]
results = trainer.train(epochs=4, start_epoch=3)
print("RESULT " + json.dumps({
    "known_best": known_best, "loaded_epoch": loaded["epoch"], "last": last, "restored": restored,
    "best_accuracy": trainer.best_accuracy, "best_epoch": trainer.best_epoch,
    "results_best": results["best_accuracy"], "without": trainer.epochs_without_improvement,
    "new_accuracy": results["history"]["val_accuracy"][-1], "epochs": results["history"]["epoch"],
}))
"""


def test_python_resume_never_overwrites_the_better_best_model(tmp_path):
    first = quickstart(tmp_path / "runs", epochs=3)
    experiment = tmp_path / "runs" / "exp1"
    best_file = experiment / "checkpoints" / "best_model.pt"
    best_bytes = best_file.read_bytes()
    best_manifest = (experiment / "checkpoints" / "best_model.pt.manifest.json").read_bytes()
    result = subprocess.run([sys.executable, "-c", RESUME_SCRIPT], cwd=tmp_path, env=cli_env(),
                            capture_output=True, text=True, timeout=HANG_TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr
    out = json.loads(result.stdout.split("RESULT ", 1)[1])
    assert out["known_best"] == first["best_accuracy"], "CheckpointManager must read the best so far from its files"
    assert out["loaded_epoch"] == 3 and out["last"] == 3
    assert out["restored"] == [first["best_accuracy"], first["best_epoch"], 3 - first["best_epoch"]]
    assert out["new_accuracy"] < first["best_accuracy"], "the sabotaged epoch should be worse"
    assert best_file.read_bytes() == best_bytes, "best_model.pt was replaced by a worse model"
    assert (experiment / "checkpoints" / "best_model.pt.manifest.json").read_bytes() == best_manifest
    assert out["best_accuracy"] == out["results_best"] == first["best_accuracy"]
    assert out["best_epoch"] == first["best_epoch"]
    assert out["without"] == 4 - first["best_epoch"]
    assert out["epochs"] == [1, 2, 3, 4] and log_epochs(experiment) == [1, 2, 3, 4]


def test_load_history_from_log_restores_best_and_patience(tmp_path):
    trainer = make_trainer(tmp_path, patience=3)
    accuracies = [50.0, 60.0, 55.0, 58.0]
    lines = [json.dumps({"epoch": e, "train_loss": 1.0, "train_accuracy": 50.0, "val_loss": 1.0, "val_accuracy": a,
                         "learning_rate": 1e-3, "epoch_time": 0.1}) for e, a in enumerate(accuracies, start=1)]
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


def test_bare_cli_fork_of_a_finished_parent_trains_its_budget_again(tmp_path):
    run_cli("--dataset", "synthetic", "--dataset-option", "num_samples=64", "--model", "mlp",
            "--model-option", "hidden_sizes=[16]", "--quiet", "--epochs", "2", cwd=tmp_path)
    before = tree_hashes(tmp_path / "runs" / "exp1")
    forked = run_cli("--fork", "exp1", cwd=tmp_path)
    assert "Epoch 3/4" in forked.stdout and "Epoch 4/4" in forked.stdout and "Done: 4 epochs" in forked.stdout
    exp2 = tmp_path / "runs" / "exp2"
    assert log_epochs(exp2) == [1, 2, 3, 4]
    assert json.loads((exp2 / "config.json").read_text())["epochs"] == 4
    assert json.loads((exp2 / "lineage.json").read_text())["epoch"] == 2
    assert tree_hashes(tmp_path / "runs" / "exp1") == before


# -- case 18: a Python run continues from train.py ------------------------------------

@pytest.mark.slow
def test_python_run_has_the_cli_config_schema_and_resumes_and_forks_from_train_py(tmp_path):
    runs = tmp_path / "runs"
    quickstart(runs, epochs=2)
    exp1 = runs / "exp1"
    python_config = json.loads((exp1 / "config.json").read_text())
    assert python_config["dataset"] == "mnist-sample" and python_config["model"] == "mlp"
    assert python_config["model_options"] == {"hidden_sizes": [16], "dropout": 0.0} and python_config["epochs"] == 2

    run_cli("--dataset", "mnist-sample", "--model", "mlp", "--model-option", "hidden_sizes=[16]", "--quiet",
            "--epochs", "1", "--runs-dir", str(tmp_path / "cli_runs"), cwd=tmp_path)
    cli_config = json.loads((tmp_path / "cli_runs" / "exp1" / "config.json").read_text())
    assert set(python_config) == set(cli_config)
    assert {k: type(v) for k, v in python_config.items() if v is not None} == {
        k: type(cli_config[k]) for k, v in python_config.items() if v is not None}

    # Forks from the checkpoint the Python run wrote (no --epochs: the parent's budget again).
    forked = run_cli("--fork", "exp1", "--lr", "1e-4", cwd=tmp_path)
    assert "Forked exp1 (epoch 2" in forked.stdout and "lr 1.00e-04" in forked.stdout
    assert "Done: 4 epochs" in forked.stdout
    assert json.loads((runs / "exp2" / "config.json").read_text())["lr"] == 1e-4
    # A new optimizer starts fresh (the parent's AdamW state does not fit SGD).
    sgd = run_cli("--fork", "exp1", "--optimizer", "sgd", "--epochs", "3", cwd=tmp_path, check=False)
    assert sgd.returncode == 0, sgd.stdout + sgd.stderr
    assert "Done: 3 epochs" in sgd.stdout

    resumed = run_cli("--resume", "exp1", "--epochs", "3", cwd=tmp_path)
    assert "Resuming exp1" in resumed.stdout and "Done: 3 epochs" in resumed.stdout
    assert log_epochs(exp1) == [1, 2, 3]


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_python_run_with_a_custom_model_is_refused_by_cli_resume(tmp_path):
    quickstart(tmp_path / "runs", epochs=1, model=TinyNet())
    exp1 = tmp_path / "runs" / "exp1"
    assert json.loads((exp1 / "config.json").read_text())["model"] == "custom:TinyNet"
    before = tree_hashes(exp1)
    result = run_cli("--resume", "exp1", "--epochs", "2", cwd=tmp_path, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "custom:TinyNet" in lines[0]
    assert tree_hashes(exp1) == before


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
    from src.training.run import run_training

    scripted = iter([80.0, 90.0, 85.0])
    original = Trainer.validate

    def validate(self):
        metrics, speed = original(self)
        return {**metrics, "accuracy": next(scripted)}, speed

    monkeypatch.setattr(Trainer, "validate", validate)
    overrides = {"dataset": "synthetic", "dataset_options": {"num_samples": 64}, "model": "mlp",
                 "model_options": {"hidden_sizes": [16]}, "epochs": 2, "device": "cpu", "save_frequency": 1}
    runs = str(tmp_path / "runs")
    run_training(overrides, runs_dir=runs, show_progress=False, log=lambda *a: None)
    best = tmp_path / "runs" / "exp1" / "checkpoints" / "best_model.pt"
    best_bytes = best.read_bytes()
    results = run_training({"epochs": 3}, runs_dir=runs, resume="exp1", show_progress=False, log=lambda *a: None)
    assert results["history"]["val_accuracy"] == [80.0, 90.0, 85.0]
    assert best.read_bytes() == best_bytes, "a worse epoch replaced best_model.pt after a resume"
    assert results["best_accuracy"] == 90.0 and results["best_epoch"] == 2


def test_python_run_with_tuple_options_resumes_from_train_py(tmp_path):
    """A tuple option (input_shape=(1, 8, 8)) is a list in config.json; the checkpoints'
    copy of the config must say the same, or train.py --resume sees a different run."""
    trainer = make_trainer(tmp_path)  # synthetic data made with input_shape=(1, 8, 8)
    trainer.train(epochs=1)
    trainer.experiment_manager.release()
    resumed = run_cli("--resume", "exp1", "--epochs", "2", "--quiet", cwd=tmp_path, check=False)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "Done: 2 epochs" in resumed.stdout

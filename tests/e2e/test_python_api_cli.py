"""The Python API and train.py on the same experiments: a run made in Python has the CLI's
config schema and resumes and forks from train.py, a custom model is refused by a CLI resume,
a Python resume never overwrites a better best model, a bare CLI fork of a finished parent."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch.nn as nn

from tests.helpers import HANG_TIMEOUT, cli_env, log_epochs, make_trainer, quickstart, run_cli, tree_hashes


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


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_python_resume_never_overwrites_the_better_best_model(tmp_path):
    first = quickstart(tmp_path / "runs", epochs=3)
    experiment = tmp_path / "runs" / "exp1"
    best_file = experiment / "checkpoints" / "best_model.pt"
    best_bytes = best_file.read_bytes()
    best_manifest = (experiment / "checkpoints" / "best_model.pt.manifest.json").read_bytes()
    result = subprocess.run(
        [sys.executable, "-c", RESUME_SCRIPT],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=HANG_TIMEOUT,
    )
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


def test_bare_cli_fork_of_a_finished_parent_trains_its_budget_again(tmp_path):
    run_cli(
        "--dataset",
        "synthetic",
        "--dataset-option",
        "num_samples=64",
        "--model",
        "mlp",
        "--model-option",
        "hidden_sizes=[16]",
        "--quiet",
        "--epochs",
        "2",
        cwd=tmp_path,
    )
    before = tree_hashes(tmp_path / "runs" / "exp1")
    forked = run_cli("--fork", "exp1", cwd=tmp_path)
    assert "Epoch 3/4" in forked.stdout and "Epoch 4/4" in forked.stdout and "Done: 4 epochs" in forked.stdout
    exp2 = tmp_path / "runs" / "exp2"
    assert log_epochs(exp2) == [1, 2, 3, 4]
    assert json.loads((exp2 / "config.json").read_text())["epochs"] == 4
    assert json.loads((exp2 / "lineage.json").read_text())["epoch"] == 2
    assert tree_hashes(tmp_path / "runs" / "exp1") == before


@pytest.mark.slow
def test_python_run_has_the_cli_config_schema_and_resumes_and_forks_from_train_py(tmp_path):
    runs = tmp_path / "runs"
    quickstart(runs, epochs=2)
    exp1 = runs / "exp1"
    python_config = json.loads((exp1 / "config.json").read_text())
    assert python_config["dataset"] == "mnist-sample" and python_config["model"] == "mlp"
    assert python_config["model_options"] == {"hidden_sizes": [16], "dropout": 0.0} and python_config["epochs"] == 2

    run_cli(
        "--dataset",
        "mnist-sample",
        "--model",
        "mlp",
        "--model-option",
        "hidden_sizes=[16]",
        "--quiet",
        "--epochs",
        "1",
        "--runs-dir",
        str(tmp_path / "cli_runs"),
        cwd=tmp_path,
    )
    cli_config = json.loads((tmp_path / "cli_runs" / "exp1" / "config.json").read_text())
    assert set(python_config) == set(cli_config)
    assert {k: type(v) for k, v in python_config.items() if v is not None} == {
        k: type(cli_config[k]) for k, v in python_config.items() if v is not None
    }

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


def test_python_run_with_tuple_options_resumes_from_train_py(tmp_path):
    """A tuple option (input_shape=(1, 8, 8)) is a list in config.json; the checkpoints'
    copy of the config must say the same, or train.py --resume sees a different run."""
    trainer = make_trainer(tmp_path)  # synthetic data made with input_shape=(1, 8, 8)
    trainer.train(epochs=1)
    trainer.experiment_manager.release()
    resumed = run_cli("--resume", "exp1", "--epochs", "2", "--quiet", cwd=tmp_path, check=False)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "Done: 2 epochs" in resumed.stdout

"""Recipe options in whole runs: each option learns, all of them at once and mynet version 3
resume bit-identical after a mid-epoch signal, an experiment made by the code before mynet
version 2 resumes exactly, and forks switch EMA on and off.

Runs go through ``train.main`` in-process (the CLI's own code path, without a Python
start-up per run); a mid-epoch interruption is a real SIGTERM sent from inside an
optimizer step.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import train
from src.datasets import DatasetRegistry
from src.models import ModelRegistry
from src.training import CheckpointManager, ExperimentManager, Trainer
from src.training.evaluation import evaluation_forward
from tests.helpers import REPO_ROOT, assert_same_final_state, assert_same_weights, load_checkpoint

DATA = (
    "--dataset",
    "synthetic",
    "--dataset-option",
    "num_samples=192",
    "--dataset-option",
    "num_classes=4",
    "--dataset-option",
    "input_shape=[3,12,12]",
    "--batch-size",
    "16",
    "--quiet",
)
MLP = ("--model", "mlp", "--model-option", "hidden_sizes=[32]")
# Every recipe option at once, on colour images (crop-flip: flips allowed).
RECIPE = (
    *DATA,
    *MLP,
    "--augment",
    "crop-flip",
    "--reapply-transforms",
    "--label-smoothing",
    "0.1",
    "--ema",
    "0.9",
    "--scheduler",
    "onecycle",
    "--warmup-epochs",
    "2",
    "--tta-flip",
    "--lr",
    "3e-3",
)
OLD_EXPERIMENT = REPO_ROOT / "tests" / "data" / "mynet_v1_experiment"


def cli(runs: Path, *args: str) -> int:
    return train.main([*args, "--runs-dir", str(runs)])


def latest(runs: Path, name: str = "exp1") -> dict:
    return load_checkpoint(runs / name / "checkpoints" / "latest_checkpoint.pt")


def history(runs: Path, name: str = "exp1") -> list:
    return [json.loads(line) for line in (runs / name / "training_log.jsonl").read_text().splitlines()]


def interrupt_at_step(monkeypatch, step: int) -> None:
    """SIGTERM to this process from inside optimizer step ``step`` (a real signal, noted by
    the run's handler and obeyed after the step, as when a user presses Ctrl-C)."""
    original = Trainer._optimizer_step

    def stepping(self):
        original(self)
        if self.global_step == step:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(Trainer, "_optimizer_step", stepping)


def make_trainer(tmp_path, **options):
    torch.manual_seed(0)
    data = DatasetRegistry.create("synthetic", num_samples=256, num_classes=4, input_shape=(1, 8, 8), noise=200, seed=0)
    train_loader, val_loader = data.get_dataloaders(batch_size=32)
    model = ModelRegistry.create("mlp", num_classes=4, input_size=8, hidden_sizes=[32])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = options.pop("scheduler", None)
    if scheduler == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-2, total_steps=4 * len(train_loader))
    criterion = nn.CrossEntropyLoss(label_smoothing=options.pop("label_smoothing", 0.0))
    experiment = ExperimentManager(base_dir=str(tmp_path / "runs"), lock=False)
    return Trainer(
        model,
        train_loader,
        val_loader,
        criterion,
        optimizer,
        torch.device("cpu"),
        experiment,
        CheckpointManager(experiment.checkpoints_dir),
        scheduler=scheduler,
        show_progress=False,
        handle_signals=False,
        **options,
    )


# -- they learn --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"label_smoothing": 0.2},
        {"ema_decay": 0.9},
        {"scheduler": "onecycle"},
        {"warmup_epochs": 2},
        {"tta_flip": True},
    ],
    ids=["label-smoothing", "ema", "onecycle", "warmup", "tta-flip"],
)
def test_each_option_learns(tmp_path, options):
    trainer = make_trainer(tmp_path, **options)
    results = trainer.train(epochs=4)
    accuracies = results["history"]["val_accuracy"]
    assert max(accuracies) >= 75, accuracies  # chance is 25%
    if "tta_flip" not in options:  # (these random prototypes are not mirror-symmetric: flips may not help)
        assert accuracies[-1] > accuracies[0], accuracies
    assert results["history"]["train_loss"][-1] < results["history"]["train_loss"][0]
    # validation is plain cross-entropy of what was evaluated, whatever the training loss
    evaluated = trainer.saved_model.eval()
    with torch.no_grad():
        images, labels = zip(*trainer.val_loader)
        outputs = evaluation_forward(evaluated, options.get("tta_flip", False))(torch.cat(images))
        plain = nn.functional.cross_entropy(outputs, torch.cat(labels)).item()
        accuracy = 100.0 * (outputs.argmax(1) == torch.cat(labels)).float().mean().item()
    assert results["history"]["val_loss"][-1] == pytest.approx(plain, rel=1e-5)
    assert results["history"]["val_accuracy"][-1] == pytest.approx(accuracy)
    if "scheduler" in options:  # stepped once per optimizer step
        assert trainer.scheduler.last_epoch == 4 * len(trainer.train_loader)
        rates = results["history"]["learning_rate"]  # at each epoch's start: up to the peak, then down
        assert rates[0] == pytest.approx(1e-2 / 25) and rates[1] > rates[2] > rates[3]
    if "ema_decay" in options:  # checkpoints hold the average as the model, the trained weights beside it
        saved = load_checkpoint(Path(trainer.checkpoint_manager.latest_path))
        assert_same_weights(saved["model_state_dict"], trainer.ema.module.state_dict())
        assert_same_weights(saved["ema_state_dict"]["training_model"], trainer.model.state_dict())
        assert not torch.equal(next(trainer.ema.module.parameters()), next(trainer.model.parameters()))


def test_all_recipe_options_resume_bit_exact_after_a_mid_epoch_signal(tmp_path, monkeypatch):
    straight, stopped = tmp_path / "a", tmp_path / "b"
    assert cli(straight, *RECIPE, "--epochs", "3") == 0
    steps_per_epoch = 192 // 16
    interrupt_at_step(monkeypatch, steps_per_epoch + 5)  # inside epoch 2, still warming up
    assert cli(stopped, *RECIPE, "--epochs", "3") == 128 + signal.SIGTERM
    state = latest(stopped)
    assert state["mid_epoch"] and state["warmup"]["steps"] == steps_per_epoch + 5
    monkeypatch.undo()
    assert cli(stopped, "--resume", "exp1", "--quiet") == 0
    assert_same_final_state(stopped / "exp1", straight / "exp1")
    mine, theirs = latest(stopped), latest(straight)
    assert_same_weights(mine["ema_state_dict"]["training_model"], theirs["ema_state_dict"]["training_model"])
    assert mine["ema_state_dict"]["updates"] == theirs["ema_state_dict"]["updates"] == 3 * steps_per_epoch
    assert mine["warmup"] == theirs["warmup"]
    assert history(stopped) == [
        {**r, "epoch_time": h["epoch_time"]} for r, h in zip(history(straight), history(stopped))
    ]
    best = load_checkpoint(stopped / "exp1" / "checkpoints" / "best_model.pt")
    assert "ema_state_dict" in best and best["accuracy"] == max(r["val_accuracy"] for r in history(straight))


def test_new_runs_record_mynet_version_2_and_old_experiments_resume_exactly(tmp_path):
    """An experiment written before mynet version 2 resumes as version 1, and exactly: resumed
    to epoch 3 in one go or stopped at epoch 2 and resumed again, the two end bit-identical.
    Both references are made here, on this CPU: a stored float result (reference_epoch2.pt was
    made on a CPU with AVX-512) differs on other kernels, so only its structure is compared."""
    straight, runs = tmp_path / "straight", tmp_path / "runs"
    shutil.copytree(OLD_EXPERIMENT / "runs", straight)
    shutil.copytree(OLD_EXPERIMENT / "runs", runs)
    assert "version" not in latest(runs)["model_config"]
    assert cli(straight, "--resume", "exp1", "--epochs", "3", "--quiet") == 0
    assert cli(runs, "--resume", "exp1", "--epochs", "2", "--quiet") == 0
    resumed, reference = latest(runs), load_checkpoint(OLD_EXPERIMENT / "reference_epoch2.pt")
    assert resumed["model_config"] == reference["model_config"] and resumed["epoch"] == 2
    assert {k: v.shape for k, v in resumed["model_state_dict"].items()} == {
        k: v.shape for k, v in reference["model_state_dict"].items()
    }
    assert cli(runs, "--resume", "exp1", "--epochs", "3", "--quiet") == 0
    assert_same_final_state(runs / "exp1", straight / "exp1")
    assert "version" not in latest(runs)["model_config"]
    assert json.loads((runs / "exp1" / "config.json").read_text())["amp"] is None  # stays float32
    # a new run of the same configuration is version 2, and says which precision it uses
    assert (
        cli(
            runs,
            "--dataset",
            "synthetic",
            "--dataset-option",
            "num_samples=96",
            "--model-option",
            "width=2",
            "--batch-size",
            "32",
            "--epochs",
            "1",
            "--quiet",
        )
        == 0
    )
    config = json.loads((runs / "exp2" / "config.json").read_text())
    assert config["model_options"] == {"width": 2, "version": 2} and config["amp"] == "auto"
    assert latest(runs, "exp2")["model_config"]["version"] == 2
    assert math.isfinite(history(runs, "exp2")[0]["val_loss"])
    # repeating a run's --model-option keeps its version, in a resume and in a fork
    assert cli(runs, "--resume", "exp2", "--epochs", "2", "--model-option", "width=2", "--quiet") == 0
    assert latest(runs, "exp2")["epoch"] == 2
    assert cli(runs, "--fork", "exp1", "--model-option", "width=2", "--epochs", "4", "--quiet") == 0
    assert "version" not in latest(runs, "exp3")["model_config"]  # forked from the version-1 run


def test_mynet_version_3_learns_and_resumes_bit_exact_after_a_mid_epoch_signal(tmp_path, monkeypatch):
    recipe = (
        *DATA,
        "--dataset-option",
        "input_shape=[1,16,16]",
        "--model-option",
        "version=3",
        "--model-option",
        "width=4",
        "--model-option",
        "hidden=16",
        "--scheduler",
        "onecycle",
        "--lr",
        "1e-2",
        "--epochs",
        "3",
    )
    straight, stopped = tmp_path / "a", tmp_path / "b"
    assert cli(straight, *recipe) == 0
    assert latest(straight)["model_config"]["version"] == 3
    accuracies = [record["val_accuracy"] for record in history(straight)]
    assert max(accuracies) >= 75, accuracies  # chance is 25%
    interrupt_at_step(monkeypatch, 192 // 16 + 5)  # inside epoch 2
    assert cli(stopped, *recipe) == 128 + signal.SIGTERM
    assert latest(stopped)["mid_epoch"]
    monkeypatch.undo()
    assert cli(stopped, "--resume", "exp1", "--quiet") == 0
    assert_same_final_state(stopped / "exp1", straight / "exp1")


def test_forks_switch_ema_on_and_off(tmp_path):
    runs = tmp_path / "runs"
    assert cli(runs, *DATA, *MLP, "--ema", "0.9", "--epochs", "1") == 0
    averaged = latest(runs)["model_state_dict"]
    # without --ema the fork trains on from the averaged weights (a vanishing rate: it stays there)
    assert cli(runs, "--fork", "exp1", "--ema", "0", "--lr", "1e-12", "--epochs", "2", "--quiet") == 0
    forked = latest(runs, "exp2")
    assert forked["ema_state_dict"] is None
    assert all(torch.allclose(averaged[k].float(), v.float(), atol=1e-6) for k, v in forked["model_state_dict"].items())
    assert not all(torch.equal(averaged[k], v) for k, v in latest(runs)["ema_state_dict"]["training_model"].items())
    assert cli(runs, "--fork", "exp2", "--ema", "0.5", "--epochs", "3", "--quiet") == 0  # the average starts anew
    assert latest(runs, "exp3")["ema_state_dict"]["updates"] == 192 // 16

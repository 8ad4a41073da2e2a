"""Learning-rate schedules across forks: a fork of a one-cycle run that changes the steps per
epoch (batch size, gradient accumulation, a mid-epoch parent) plans enough steps and
finishes its cycle.

Each test states the correct behaviour; those marked "FAILS ON MAIN" in their docstring
failed on the code they were written against (main at f3c2f57, hostile-user findings,
round 5). Runs go through ``train.main`` in-process on tiny synthetic data (10 steps an
epoch, batch 8); a mid-epoch interruption is a real SIGINT sent from inside an optimizer
step.
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

import train
from src.training import Trainer
from tests.helpers import load_checkpoint

DATA = (
    "--dataset",
    "synthetic",
    "--dataset-option",
    "num_samples=80",
    "--dataset-option",
    "num_classes=4",
    "--dataset-option",
    "input_shape=[1,8,8]",
    "--batch-size",
    "8",
    "--model",
    "mlp",
    "--model-option",
    "hidden_sizes=[16]",
    "--quiet",
    "--device",
    "cpu",
)
STEPS_PER_EPOCH = 10


def cli(runs: Path, *args: str) -> int:
    return train.main([*args, "--runs-dir", str(runs)])


def run_interrupted_at_step(runs: Path, step: int, *args: str) -> int:
    """``train.py ARGS`` sent SIGINT from inside optimizer step ``step`` (as Ctrl-C would)."""
    original = Trainer._optimizer_step

    def stepping(self):
        original(self)
        if self.global_step == step:
            os.kill(os.getpid(), signal.SIGINT)

    Trainer._optimizer_step = stepping
    try:
        return cli(runs, *args)
    finally:
        Trainer._optimizer_step = original


@pytest.fixture(scope="module")
def parents(tmp_path_factory) -> Path:
    """exp1: --scheduler onecycle --epochs 3, exp2: --scheduler cosine --epochs 3; both
    interrupted one batch into epoch 2 (a mid-epoch checkpoint at step 11)."""
    runs = tmp_path_factory.mktemp("parents") / "runs"
    for scheduler in ("onecycle", "cosine"):
        assert (
            run_interrupted_at_step(runs, STEPS_PER_EPOCH + 1, *DATA, "--scheduler", scheduler, "--epochs", "3")
            == 128 + signal.SIGINT
        )
    return runs


def fork_of(parents: Path, tmp_path: Path, *args: str) -> tuple:
    """Fork in a copy of the parents' runs directory; returns (exit code, the fork's dir)."""
    runs = tmp_path / "runs"
    shutil.copytree(parents, runs)
    return cli(runs, *args), runs / "exp3"


def assert_cycle_finished(experiment: Path) -> None:
    """The fork's one-cycle schedule ended exactly at its last planned step (the learning
    rate annealed to its minimum), as an uninterrupted one-cycle run's does."""
    state = load_checkpoint(experiment / "checkpoints" / "latest_checkpoint.pt")["scheduler_state_dict"]
    assert state["last_epoch"] == state["total_steps"], (
        f"the one-cycle schedule took {state['last_epoch']} of its {state['total_steps']} planned steps"
    )


# -- 1. a fork that changes the steps per epoch keeps the parent's one-cycle plan ---------


@pytest.mark.parametrize("change", [("--grad-accum", "2"), ("--batch-size", "16")], ids=["grad-accum", "batch-size"])
def test_fork_of_onecycle_with_fewer_steps_per_epoch_finishes_its_cycle(parents, tmp_path, change):
    """FAILS ON MAIN: ``load_fork`` re-plans only when the scheduler or --epochs change;
    a fork that halves the optimizer steps per epoch keeps the parent's 30-step plan,
    takes 10 more of them and ends at lr 3.2e-4 (not annealed) - silently."""
    code, fork = fork_of(parents, tmp_path, "--fork", "exp1", *change)
    assert code == 0
    assert_cycle_finished(fork)


def test_fork_of_onecycle_with_a_smaller_batch_is_planned_not_refused(parents, tmp_path, capsys):
    """FAILS ON MAIN: --fork exp1 --batch-size 4 (twice the steps per epoch) is refused
    after the fork's experiment exists ("exp3's onecycle learning-rate schedule has 19 of
    its 30 optimizer steps left, but training to epoch 3 needs 40 ... Fork to plan a new
    schedule: python train.py --fork exp3 --epochs 3"), leaving an empty failed exp3 whose
    suggested fork fails too (exp3 has no checkpoint). Commit ff3fe35 fixed exactly this for
    a changed --epochs."""
    code, fork = fork_of(parents, tmp_path, "--fork", "exp1", "--batch-size", "4")
    assert code == 0, capsys.readouterr().err
    assert_cycle_finished(fork)


# -- 2. a re-planned cycle from a mid-epoch checkpoint with another --grad-accum ----------


@pytest.mark.parametrize(
    "parent, args",
    [
        ("exp2", ("--scheduler", "onecycle", "--grad-accum", "3")),
        ("exp1", ("--epochs", "4", "--grad-accum", "2")),
    ],
    ids=["cosine-to-onecycle", "onecycle-more-epochs"],
)
def test_mid_epoch_fork_with_other_grad_accum_plans_enough_steps(parents, tmp_path, capsys, parent, args):
    """FAILS ON MAIN: the parent stopped 1 batch into epoch 2; the fork keeps that position
    (grad_accum is not a data key) and ``Trainer.remaining_optimizer_steps`` counts
    ceil(1 / accum) = 1 step as done in that epoch, but no step of the new accumulation
    was taken there: the plan is one step short and the run dies after an epoch with
    PyTorch's "Tried to step 8 times. The specified number of total steps is 7"."""
    code, fork = fork_of(parents, tmp_path, "--fork", parent, *args)
    assert code == 0, capsys.readouterr().err
    assert_cycle_finished(fork)


# -- 3. --no-tensorboard on the command line cannot override a recipe file --------------

# -- 4. MetricsTracker ------------------------------------------------------------------

# -- 5. --augment POLICY against a config file's augment: false --------------------------

# -- 6. ArrayDataset class names ---------------------------------------------------------

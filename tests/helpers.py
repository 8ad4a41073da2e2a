"""Helpers shared by the test files: running train.py as a user would, tiny runs, and
comparisons of checkpoints and experiments. Fixtures live in conftest.py."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn as nn

from src.datasets import DatasetRegistry
from src.models import ModelRegistry
from src.training import CheckpointManager, ExperimentManager, Trainer

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("EXPTRAIN_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))

# A guard against a hung process, not a speed check: the suite must pass on a machine whose
# CPU is oversubscribed several times over, where a 20-epoch reference run takes minutes.
# Tests that wait for progress wait for it to be observed (a line, a file), bounded by this.
HANG_TIMEOUT = float(os.environ.get("EXPTRAIN_TEST_HANG_TIMEOUT", 1800))


def cli_env(**extra: str) -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO_ROOT))
    env.update(extra)
    return env


def run_cli(
    *args: str, cwd: Path, check: bool = True, timeout: float = HANG_TIMEOUT, **env: str
) -> subprocess.CompletedProcess:
    """Run ``python train.py ARGS`` in a subprocess and return the finished process."""
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "train.py"), *args],
        cwd=cwd,
        env=cli_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"train.py {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def start_cli(*args: str, cwd: Path, **env: str) -> subprocess.Popen:
    """Start ``python train.py ARGS`` without waiting; stdout is a line-buffered pipe."""
    return subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "train.py"), *args],
        cwd=cwd,
        env=cli_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs"


def wait_for_line(process: subprocess.Popen, needle: str, timeout: float = HANG_TIMEOUT) -> str:
    deadline, seen = time.time() + timeout, []
    while time.time() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        seen.append(line)
        if needle in line:
            return line
    raise AssertionError(f"{needle!r} never appeared; output:\n{''.join(seen)}")


def log_epochs(experiment: Path):
    return [json.loads(line)["epoch"] for line in (experiment / "training_log.jsonl").read_text().splitlines()]


def assert_same_final_state(experiment: Path, reference: Path):
    mine = load_checkpoint(experiment / "checkpoints" / "latest_checkpoint.pt")
    theirs = load_checkpoint(reference / "checkpoints" / "latest_checkpoint.pt")
    assert mine["epoch"] == theirs["epoch"] and mine["global_step"] == theirs["global_step"]
    assert_same_weights(mine["model_state_dict"], theirs["model_state_dict"])
    for group_a, group_b in zip(
        mine["optimizer_state_dict"]["param_groups"], theirs["optimizer_state_dict"]["param_groups"]
    ):
        assert group_a == group_b
    for key, state in theirs["optimizer_state_dict"]["state"].items():
        for name, value in state.items():
            assert torch.equal(mine["optimizer_state_dict"]["state"][key][name], value), f"optimizer {key}.{name}"
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "learning_rate", "epoch"):
        assert mine["history"][key] == theirs["history"][key], f"logged {key} differs"
    assert mine["early_stopping"] == theirs["early_stopping"]
    assert mine["scheduler_state_dict"] == theirs["scheduler_state_dict"]


def tree_hashes(directory: Path):
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def tree_hashes_with_lock(directory):
    """``tree_hashes`` with the lock file counted too."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


# Experiments and tools (``exptrain``) without a training run.

LOCKER = """
import fcntl, os, sys
handle = open(sys.argv[1], "a+")
fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
handle.seek(0); handle.truncate(); handle.write(str(os.getpid())); handle.flush()
print("locked", flush=True)
sys.stdin.read()
"""


def fabricate(runs: Path, name: str, source: Path, status=None, with_checkpoints: bool = False) -> Path:
    """A new experiment folder made from ``source``'s records (no checkpoints unless
    asked), with ``status`` written as status.json when given."""
    target = runs / name
    target.mkdir(parents=True)
    for file_name in ("config.json", "training_log.jsonl", "lineage.json", "status.json", ".lock"):
        if (source / file_name).exists():
            shutil.copy2(source / file_name, target / file_name)
    if with_checkpoints:
        shutil.copytree(source / "checkpoints", target / "checkpoints")
    if status is not None:
        (target / "status.json").write_text(json.dumps(status))
    return target


class LockHolder:
    """A live process holding an experiment's lock, as a training process does."""

    def __init__(self, experiment: Path):
        self.process = subprocess.Popen(
            [sys.executable, "-c", LOCKER, str(experiment / ".lock")],
            env=cli_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout.readline().strip() == "locked"
        self.pid = self.process.pid

    def release(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout=30)


def run_tool(capsys, *argv: str):
    """``exptrain ARGV`` in this process: ``(exit code, stdout, stderr)``."""
    from src.cli.main import main

    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def row_of(output: str, name: str) -> str:
    return next(line for line in output.splitlines() if line.split()[0] == name)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def log_records(experiment: Path):
    return [json.loads(line) for line in (experiment / "training_log.jsonl").read_text().splitlines()]


# Tiny in-process trainers.


def make_trainer(tmp_path, patience=0, with_checkpoints=True, loaders=None, dataset=None, scheduler=None):
    torch.manual_seed(0)
    data = DatasetRegistry.create("synthetic", num_samples=256, num_classes=4, input_shape=(1, 8, 8), seed=0)
    train_loader, val_loader = loaders or data.get_dataloaders(batch_size=32)
    model = ModelRegistry.create("mlp", num_classes=4, input_size=8, hidden_sizes=[32])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    experiment = ExperimentManager(base_dir=str(tmp_path / "runs"), lock=False)
    checkpoints = CheckpointManager(experiment.checkpoints_dir, save_frequency=1) if with_checkpoints else None
    if scheduler == "step":
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    return Trainer(
        model,
        train_loader,
        val_loader,
        nn.CrossEntropyLoss(),
        optimizer,
        torch.device("cpu"),
        experiment,
        checkpoints,
        scheduler=scheduler,
        dataset=dataset,
        patience=patience,
    )


def make_background_trainer(runs: Path, background=True, epochs_hook=None, model=None):
    torch.manual_seed(0)
    data = DatasetRegistry.create("synthetic", num_samples=256, num_classes=4, input_shape=(1, 8, 8), seed=0)
    train_loader, val_loader = data.get_dataloaders(batch_size=32)
    model = model or ModelRegistry.create("mlp", num_classes=4, input_size=8, hidden_sizes=[32])
    experiment = ExperimentManager(base_dir=str(runs), lock=False)
    return Trainer(
        model,
        train_loader,
        val_loader,
        nn.CrossEntropyLoss(),
        torch.optim.AdamW(model.parameters(), lr=1e-2),
        torch.device("cpu"),
        experiment,
        CheckpointManager(experiment.checkpoints_dir, save_frequency=1),
        show_progress=False,
        background_writes=background,
    )


QUICKSTART_MLP = {"hidden_sizes": [16]}


def quickstart(runs: Path, epochs: int, model: nn.Module = None, save_frequency: int = 1) -> dict:
    """The specification's Quick Start on the bundled mnist-sample with a tiny MLP; the lock
    is released at the end, as when the user's script exits."""
    torch.manual_seed(0)
    device = torch.device("cpu")
    dataset = DatasetRegistry.create("mnist-sample")
    train_loader, val_loader = dataset.get_dataloaders(batch_size=64)
    if model is None:
        model = ModelRegistry.create("mlp", num_classes=10, **QUICKSTART_MLP).to(device)
    experiment_manager = ExperimentManager(base_dir=str(runs))
    checkpoint_manager = CheckpointManager(
        checkpoints_dir=experiment_manager.checkpoints_dir, save_frequency=save_frequency
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    trainer = Trainer(
        model=model,
        train_loader=train_loader,
        val_loader=val_loader,
        criterion=nn.CrossEntropyLoss(),
        optimizer=optimizer,
        device=device,
        experiment_manager=experiment_manager,
        checkpoint_manager=checkpoint_manager,
        patience=5,
    )
    try:
        return trainer.train(epochs=epochs)
    finally:
        experiment_manager.release()


class Result(NamedTuple):
    """What an in-process ``train.main`` call (the ``cli`` fixture) returned and printed."""

    returncode: int
    stdout: str
    stderr: str

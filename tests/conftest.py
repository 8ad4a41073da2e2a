"""Shared fixtures: the real data in ../shared/data, real runs made once, lock holders.
Helpers (running train.py as a user would, comparisons, tiny trainers) are in tests/helpers.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import train
from tests.fake_data import FORMATS, make_folder

# Re-exported for test files written before tests/helpers.py; import from tests.helpers.
from tests.helpers import (  # noqa: F401
    Result,
    HANG_TIMEOUT,
    REPO_ROOT,
    SHARED_DATA,
    LockHolder,
    assert_same_weights,
    cli_env,
    load_checkpoint,
    run_cli,
    start_cli,
)

# Two cores: keep each test process to one intra-op thread so parallel work (subprocesses,
# the HTTP server) does not thrash, and numerics do not depend on the machine's core count.
torch.set_num_threads(1)


@pytest.fixture
def shared_data() -> Path:
    """The real MNIST subset and Fashion-MNIST (see ../shared/data/README.md)."""
    if not (SHARED_DATA / "MNIST" / "raw").is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA} (set EXPTRAIN_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def real_runs(tmp_path_factory) -> Path:
    """runs/exp1 (mlp, 2 epochs, epoch checkpoints) and runs/exp2 (a fork of exp1 to
    epoch 3 with another learning rate), made once by train.py's own main. Tests that
    write copy them first (``copy_runs``)."""
    runs = tmp_path_factory.mktemp("tool-runs") / "runs"
    common = ["--dataset", "mnist-sample", "--model", "mlp", "--quiet", "--runs-dir", str(runs)]
    assert train.main([*common, "--epochs", "2", "--save-frequency", "1"]) == 0
    assert train.main([*common[4:], "--fork", "exp1", "--epochs", "3", "--lr", "0.0005"]) == 0
    return runs


@pytest.fixture
def copy_runs(real_runs, tmp_path):
    """A private copy of the real runs directory (evaluate and export write into it)."""
    target = tmp_path / "runs"
    shutil.copytree(real_runs, target)
    return target


@pytest.fixture
def lock_holder():
    """``lock_holder(experiment_dir)`` starts a process holding its lock; all are released at the end."""
    holders = []

    def start(experiment: Path) -> LockHolder:
        holder = LockHolder(experiment)
        holders.append(holder)
        return holder

    yield start
    for holder in holders:
        holder.release()


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    base = tmp_path_factory.mktemp("templates")
    return {
        "uniform": make_folder(base / "uniform"),
        "mixed": make_folder(base / "mixed", sizes=((24, 24), (40, 30), (20, 33)), formats=FORMATS),
        "shapes": make_folder(
            base / "shapes", train=40, val=15, sizes=((32, 32), (40, 28)), formats=FORMATS[:4], seed=1
        ),
    }


@pytest.fixture
def folder(templates, tmp_path):
    """A fresh copy (same modification times) of a template folder: ``folder("mixed")``."""

    def copy(name: str) -> Path:
        return Path(shutil.copytree(templates[name], tmp_path / name))

    return copy


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    """``train.main(args)`` in this process, in ``tmp_path``; returns code, stdout, stderr
    (a ``Result``)."""
    import train

    monkeypatch.chdir(tmp_path)

    def call(*args: str) -> Result:
        capsys.readouterr()
        code = train.main([str(a) for a in args])
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return call

"""Fixtures of the tool tests: real runs made once, fabricated experiments, a lock holder."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import train

from tests.conftest import cli_env

LOCKER = """
import fcntl, os, sys
handle = open(sys.argv[1], "a+")
fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
handle.seek(0); handle.truncate(); handle.write(str(os.getpid())); handle.flush()
print("locked", flush=True)
sys.stdin.read()
"""


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
        self.process = subprocess.Popen([sys.executable, "-c", LOCKER, str(experiment / ".lock")], env=cli_env(),
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout.readline().strip() == "locked"
        self.pid = self.process.pid

    def release(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout=30)


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


def run_tool(capsys, *argv: str):
    """``exptrain ARGV`` in this process: ``(exit code, stdout, stderr)``."""
    from src.cli.main import main

    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def log_records(experiment: Path):
    return [json.loads(line) for line in (experiment / "training_log.jsonl").read_text().splitlines()]

"""Shared fixtures: the real data in ../shared/data, and running train.py as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("EXPTRAIN_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))

# Two cores: keep each test process to one intra-op thread so parallel work (subprocesses,
# the HTTP server) does not thrash, and numerics do not depend on the machine's core count.
torch.set_num_threads(1)

# A guard against a hung process, not a speed check: the suite must pass on a machine whose
# CPU is oversubscribed several times over, where a 20-epoch reference run takes minutes.
# Tests that wait for progress wait for it to be observed (a line, a file), bounded by this.
HANG_TIMEOUT = float(os.environ.get("EXPTRAIN_TEST_HANG_TIMEOUT", 1800))


@pytest.fixture
def shared_data() -> Path:
    """The real MNIST subset and Fashion-MNIST (see ../shared/data/README.md)."""
    if not (SHARED_DATA / "MNIST" / "raw").is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA} (set EXPTRAIN_SHARED_DATA)")
    return SHARED_DATA


def cli_env(**extra: str) -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO_ROOT))
    env.update(extra)
    return env


def run_cli(*args: str, cwd: Path, check: bool = True, timeout: float = HANG_TIMEOUT, **env: str) -> subprocess.CompletedProcess:
    """Run ``python train.py ARGS`` in a subprocess and return the finished process."""
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "train.py"), *args],
        cwd=cwd, env=cli_env(**env), capture_output=True, text=True, timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"train.py {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def start_cli(*args: str, cwd: Path, **env: str) -> subprocess.Popen:
    """Start ``python train.py ARGS`` without waiting; stdout is a line-buffered pipe."""
    return subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "train.py"), *args],
        cwd=cwd, env=cli_env(**env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
    )


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs"

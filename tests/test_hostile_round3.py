"""Hostile-user findings, round 3 (data sets, augmentation, image folders, torchrun).

Each test states the correct behaviour and fails on the code it was written against;
/work/briefs/hostile-findings.md (the lead's copy) has the command, the output and the
suspected cause of each. Torchrun tests are marked slow.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import REPO_ROOT, cli_env, run_cli

TRAIN = str(REPO_ROOT / "train.py")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
MLP = ("--model", "mlp", "--model-option", "hidden_sizes=[16]", "--quiet", "--device", "cpu")


def make_folder(root: Path, classes: int = 2, per_class: int = 3, side: int = 8) -> Path:
    """ROOT/train/<class>/*.png and ROOT/val/<class>/*.png of random RGB pixels."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for label in range(classes):
            folder = root / split / f"c{label}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


def torchrun(*args: str, cwd: Path, timeout: float, **env: str):
    """Run torchrun; on a hang kill the whole process group and return None."""
    process = subprocess.Popen([*TORCHRUN, *args], cwd=cwd, env=cli_env(**env), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, _ = process.communicate()
        return None, out
    return process.returncode, out


# -- 1. hang: torchrun --resume of a finished run whose records lag -----------------------

@pytest.mark.slow
def test_torchrun_resume_of_finished_run_with_lagging_status_does_not_hang(tmp_path):
    # A finished run whose status.json lags its checkpoint (the process died right after the
    # last save; here: interrupted at an epoch end). README: "Records catch up" on --resume,
    # and "nothing left to do is a success ... so a cluster scheduler can requeue a job".
    run_cli("--dataset", "mnist-sample", *MLP, "--epochs", "1", "--runs-dir", "runs", cwd=tmp_path)
    status_file = tmp_path / "runs" / "exp1" / "status.json"
    status = json.loads(status_file.read_text())
    status.update(state="interrupted", signal="SIGINT")
    status_file.write_text(json.dumps(status))
    code, out = torchrun(TRAIN, "--resume", "exp1", "--runs-dir", "runs", "--quiet", cwd=tmp_path, timeout=60,
                         EXPTRAIN_DIST_TIMEOUT="10")
    assert code is not None, f"torchrun --resume of a finished run hung:\n{out[-3000:]}"
    assert code == 0, out[-3000:]
    assert json.loads(status_file.read_text())["state"] == "completed"

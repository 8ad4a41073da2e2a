"""Real faults, real processes: kills, signals, damaged files, full disks, hostile input.

Each test drives train.py in subprocesses (or the same code in-process where a fault
must be injected) and compares against an uninterrupted run of the same configuration.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import time

import pytest
import torch

from src.training.checkpoint import CheckpointManager, manifest_path
from tests.helpers import (
    HANG_TIMEOUT,
    assert_same_final_state,
    load_checkpoint,
    log_epochs,
    run_cli,
    start_cli,
    wait_for_line,
)

# Augmentation, per-epoch redraws, a scheduler and early stopping all active.
FULL = (
    "--dataset",
    "mnist-sample",
    "--reapply-transforms",
    "--scheduler",
    "cosine",
    "--patience",
    "10",
    "--save-frequency",
    "1",
    "--quiet",
)
FAST = (*FULL, "--model", "mlp", "--batch-size", "16")
SLOW = (*FULL, "--model", "lenet5", "--batch-size", "8")  # ~1 s epochs: room to land a signal mid-epoch
# For runs extended with --epochs: a cosine schedule's length is fixed when the run starts.
EXTENDABLE = tuple("plateau" if a == "cosine" else a for a in FAST)


@pytest.fixture(scope="module")
def baselines(tmp_path_factory):
    """Uninterrupted reference runs, made once."""
    root = tmp_path_factory.mktemp("baselines")
    run_cli(*SLOW, "--epochs", "20", cwd=root)  # exp1
    run_cli(*SLOW, "--epochs", "3", cwd=root)  # exp2
    run_cli(*EXTENDABLE, "--epochs", "4", cwd=root)  # exp3
    return {"slow20": root / "runs" / "exp1", "slow3": root / "runs" / "exp2", "fast4": root / "runs" / "exp3"}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_epoch_saves_exits_and_resumes_bit_exact(tmp_path, baselines, signum):
    process = start_cli(*SLOW, "--epochs", "3", cwd=tmp_path)
    wait_for_line(process, "Epoch 1/3")
    time.sleep(0.15)  # epoch 2 has just started; its 500 steps take longer than this
    process.send_signal(signum)
    time.sleep(0.005)
    process.send_signal(signum)  # a second signal while the first is being handled
    output = process.communicate(timeout=HANG_TIMEOUT)[0]
    assert process.returncode == 128 + signum, output
    assert "state saved, resume to continue" in output
    experiment = tmp_path / "runs" / "exp1"
    state = load_checkpoint(experiment / "checkpoints" / "latest_checkpoint.pt")
    assert state["mid_epoch"] and state["epoch"] == 1 and state["train_loader"]["position"] > 0
    assert CheckpointManager(experiment / "checkpoints").verify(experiment / "checkpoints" / "latest_checkpoint.pt")[0]
    status = json.loads((experiment / "status.json").read_text())
    assert status["state"] == "interrupted" and status["signal"] == signal.Signals(signum).name

    resumed = run_cli("--resume", "exp1", "--quiet", cwd=tmp_path)
    assert f"at epoch 1, step {state['global_step']}" in resumed.stdout
    assert_same_final_state(experiment, baselines["slow3"])
    assert log_epochs(experiment) == [1, 2, 3]


def wait_for_epoch(process: subprocess.Popen, timeout: float = HANG_TIMEOUT) -> float:
    """Wait for the next "Epoch N/M ... 1.2s (...)" line; return the epoch time it reports."""
    line = wait_for_line(process, "Epoch ", timeout)
    return float(re.search(r"  ([0-9.]+)s \(", line).group(1))


def test_repeated_sigkill_always_resumes_and_matches_uninterrupted_run(tmp_path, baselines):
    """Ten SIGKILLs, their moments driven by observed progress, not by wall-clock guesses:
    most land at a random fraction of the run's own epoch time after an epoch was reported
    (so every such kill follows real progress, on a fast or a loaded machine, and lands
    anywhere in the next epoch: mid-step, validating, saving, plotting); every third lands
    during start-up or the first epoch after a resume."""
    rng = random.Random(1234)
    experiment = tmp_path / "runs" / "exp1"
    process = start_cli(*SLOW, "--epochs", "20", cwd=tmp_path)
    wait_for_line(process, "Experiment:")
    progress, kills, epoch_time = [], 0, None
    while kills < 10:
        if kills % 3 == 2 and epoch_time is not None:
            time.sleep(rng.uniform(0.0, epoch_time))  # start-up, loading, the first steps
        else:
            epoch_time = wait_for_epoch(process)
            time.sleep(rng.uniform(0.0, 1.1 * epoch_time))  # somewhere in the next epoch or its save
        if process.poll() is not None:
            break
        process.kill()
        process.wait()
        kills += 1
        _, payload, problems = CheckpointManager(experiment / "checkpoints").find_latest_valid()
        assert not problems, f"a kill left a damaged checkpoint: {problems}"
        if payload is not None:
            progress.append((payload["epoch"], payload["global_step"]))
        process = start_cli("--resume", "exp1", cwd=tmp_path)
        wait_for_line(process, "Resuming exp1")
    output = process.communicate(timeout=HANG_TIMEOUT)[0]
    assert process.returncode == 0, output
    assert kills == 10, "the run finished before ten kills; make it longer"
    assert progress == sorted(progress), f"epoch/step went backwards: {progress}"
    assert progress[-1][0] >= 3, f"the kills left too little progress to be a meaningful test: {progress}"
    assert_same_final_state(experiment, baselines["slow20"])
    assert log_epochs(experiment) == list(range(1, 21)), "no duplicated or missing epochs"
    assert not [p for p in experiment.rglob(".*tmp-*")], "temporary files were cleaned up"


@pytest.mark.parametrize("damage", ["truncated", "empty", "bitflip"])
def test_damaged_latest_checkpoint_falls_back_with_warning(tmp_path, baselines, damage):
    run_cli(*EXTENDABLE, "--epochs", "3", cwd=tmp_path)
    latest = tmp_path / "runs" / "exp1" / "checkpoints" / "latest_checkpoint.pt"
    data = latest.read_bytes()
    if damage == "truncated":
        latest.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        latest.write_bytes(b"")
    else:
        flipped = bytearray(data)
        flipped[len(flipped) // 3] ^= 0x01
        latest.write_bytes(bytes(flipped))
    result = run_cli("--resume", "exp1", "--epochs", "4", cwd=tmp_path)
    assert "skipping damaged checkpoint exp1/checkpoints/latest_checkpoint.pt" in result.stdout
    assert "using epoch_3.pt (epoch 3" in result.stdout
    assert_same_final_state(tmp_path / "runs" / "exp1", baselines["fast4"])


def test_no_valid_checkpoint_is_one_clear_error(tmp_path):
    run_cli(*FAST, "--epochs", "1", cwd=tmp_path)
    for path in (tmp_path / "runs" / "exp1" / "checkpoints").glob("*.pt"):
        path.write_bytes(b"garbage")
    result = run_cli("--resume", "exp1", "--epochs", "2", cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert "has no valid checkpoint" in result.stderr and "Traceback" not in result.stderr


def test_disk_full_during_save_stops_with_clear_error_and_keeps_older(tmp_path, monkeypatch, capsys):
    import src.utils.io as io_module
    import train

    real_write_all, calls = io_module._write_all, {"n": 0}

    def fill_disk_on_epoch_two(fd, data):
        calls["n"] += 1
        if len(data) > 10_000 and calls.get("armed"):
            os.write(fd, data[:4096])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write_all(fd, data)

    real_save = CheckpointManager.save_epoch_end

    def arm_after_first_epoch(self, *args, **kwargs):
        saved = real_save(self, *args, **kwargs)
        calls["armed"] = True  # the disk is full from the second epoch's save on
        return saved

    monkeypatch.setattr(io_module, "_write_all", fill_disk_on_epoch_two)
    monkeypatch.setattr(CheckpointManager, "save_epoch_end", arm_after_first_epoch)
    monkeypatch.chdir(tmp_path)
    code = train.main(["--dataset", "synthetic", "--model", "mlp", "--epochs", "3", "--save-frequency", "1", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    assert "Could not save checkpoint" in err and "No space left on device" in err and "intact" in err
    checkpoints = tmp_path / "runs" / "exp1" / "checkpoints"
    manager = CheckpointManager(checkpoints)
    assert all(manager.verify(p)[0] for p in checkpoints.glob("*.pt"))
    _, payload, _ = manager.find_latest_valid()
    assert payload["epoch"] == 1, "nothing claims the failed epoch-2 save"
    status = json.loads((tmp_path / "runs" / "exp1" / "status.json").read_text())
    assert status["state"] == "failed" and "No space left" in status["error"]
    assert not list(checkpoints.glob(".*"))


def test_patience_survives_resume(tmp_path):
    args = (
        "--dataset",
        "mnist-sample",
        "--model",
        "mlp",
        "--no-augment",
        "--lr",
        "1e-12",
        "--patience",
        "3",
        "--quiet",
    )
    run_cli(*args, "--epochs", "3", cwd=tmp_path)  # epoch 1 best, then 2 epochs without improvement
    state = load_checkpoint(tmp_path / "runs" / "exp1" / "checkpoints" / "latest_checkpoint.pt")
    assert state["early_stopping"]["epochs_without_improvement"] == 2
    result = run_cli("--resume", "exp1", "--epochs", "20", cwd=tmp_path)
    assert "Epoch 4/20" in result.stdout and "Epoch 5/20" not in result.stdout and "(stopped early)" in result.stdout
    assert log_epochs(tmp_path / "runs" / "exp1") == [1, 2, 3, 4]


def test_second_process_cannot_resume_a_running_experiment(tmp_path):
    process = start_cli(*SLOW, "--epochs", "50", cwd=tmp_path)
    try:
        wait_for_line(process, "Epoch 1/50")
        result = run_cli("--resume", "exp1", "--epochs", "50", cwd=tmp_path, check=False)
        assert result.returncode == 2
        assert f"'exp1' is in use by process {process.pid}" in result.stderr
    finally:
        process.kill()
        process.communicate()
    reached = load_checkpoint(tmp_path / "runs" / "exp1" / "checkpoints" / "latest_checkpoint.pt")["epoch"]
    resumed = run_cli("--resume", "exp1", "--epochs", str(reached + 1), cwd=tmp_path)
    assert resumed.returncode == 0, "a lock left by a killed process does not block"


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {_Payload.marker}",))


def test_malicious_checkpoint_is_refused_and_never_runs(tmp_path):
    run_cli(*EXTENDABLE, "--epochs", "2", cwd=tmp_path)
    latest = tmp_path / "runs" / "exp1" / "checkpoints" / "latest_checkpoint.pt"
    marker = tmp_path / "code-ran"
    _Payload.marker = marker
    torch.save({"model_state_dict": {}, "epoch": 99, "evil": _Payload()}, latest)
    data = latest.read_bytes()  # give it a matching manifest: only safe loading stands in the way
    manifest_path(latest).write_text(
        json.dumps(
            {
                "format_version": 1,
                "entries": [
                    {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "epoch": 99, "step": 10**6}
                ],
            }
        )
    )
    result = run_cli("--resume", "exp1", "--epochs", "3", cwd=tmp_path)
    assert "safe loading does not allow (posix.system)" in result.stdout or "(os.system)" in result.stdout
    assert "using epoch_2.pt" in result.stdout
    assert not marker.exists(), "code inside the checkpoint ran"
    assert log_epochs(tmp_path / "runs" / "exp1") == [1, 2, 3]


def test_resume_with_a_different_model_is_refused(tmp_path):
    run_cli(*FAST, "--epochs", "1", cwd=tmp_path)
    experiment = tmp_path / "runs" / "exp1"
    config = json.loads((experiment / "config.json").read_text())
    config["model_options"] = {"hidden_sizes": [32]}  # as if someone edited the experiment's config
    (experiment / "config.json").write_text(json.dumps(config))
    before = {p.name: p.read_bytes() for p in (experiment / "checkpoints").iterdir()}
    result = run_cli("--resume", "exp1", "--epochs", "2", cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert "different model (hidden_sizes: [256] vs [32])" in result.stderr and "nothing was loaded" in result.stderr
    assert {p.name: p.read_bytes() for p in (experiment / "checkpoints").iterdir()} == before

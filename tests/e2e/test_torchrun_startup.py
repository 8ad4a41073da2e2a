"""Torchrun start-up and shut-down: a resume of a finished run whose status lags does not hang,
bad input is reported once, and SIGINT while waiting for peers exits promptly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import HANG_TIMEOUT, REPO_ROOT, cli_env, run_cli

MLP = ("--model", "mlp", "--model-option", "hidden_sizes=[16]", "--quiet", "--device", "cpu")


TRAIN = str(REPO_ROOT / "train.py")


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def torchrun(*args: str, cwd: Path, timeout: float, **env: str):
    """Run torchrun; on a hang kill the whole process group and return None."""
    process = subprocess.Popen(
        [*TORCHRUN, *args],
        cwd=cwd,
        env=cli_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, _ = process.communicate()
        return None, out
    return process.returncode, out


def _listening(port: int) -> bool:
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":
                return True
    return False


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
    code, out = torchrun(
        TRAIN,
        "--resume",
        "exp1",
        "--runs-dir",
        "runs",
        "--quiet",
        cwd=tmp_path,
        timeout=HANG_TIMEOUT,
        EXPTRAIN_DIST_TIMEOUT="10",
    )
    assert code is not None, f"torchrun --resume of a finished run hung:\n{out[-3000:]}"
    assert code == 0, out[-3000:]
    assert json.loads(status_file.read_text())["state"] == "completed"


@pytest.mark.slow
def test_torchrun_bad_input_is_reported_once(tmp_path):
    # README: rank 0 prints, "the others print nothing". Every rank prints the error today
    # (16 copies on 2 nodes x 8 GPUs).
    code, out = torchrun(
        TRAIN,
        "--dataset",
        str(tmp_path / "no such folder" / "x"),
        *MLP,
        "--runs-dir",
        "runs",
        cwd=tmp_path,
        timeout=HANG_TIMEOUT,
    )
    assert code not in (None, 0), out[-3000:]
    assert sum(line.startswith("Error:") for line in out.splitlines()) == 1, out[-3000:]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc/net/tcp")
def test_sigint_while_waiting_for_peers_exits_promptly(tmp_path):
    # Rank 0 of 2 started by hand (RANK/WORLD_SIZE/MASTER_* as srun scripts set them) waits in
    # init_process_group for rank 1. Ctrl-C prints "Interrupted by SIGINT during start-up;
    # nothing was written." at once, but the process then keeps waiting for the whole
    # process-group timeout ($EXPTRAIN_DIST_TIMEOUT, 300 s by default) before it exits.
    import socket
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = cli_env(
        WORLD_SIZE="2",
        RANK="0",
        LOCAL_RANK="0",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        EXPTRAIN_DIST_TIMEOUT="40",
    )
    process = subprocess.Popen(
        [sys.executable, TRAIN, "--dataset", "mnist-sample", *MLP, "--epochs", "1", "--runs-dir", "runs"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not _listening(port) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert process.poll() is None, process.communicate()[0]
        assert _listening(port), "rank 0 never opened its rendezvous store"
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        try:
            out, _ = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            out, _ = process.communicate()
            pytest.fail(f"still waiting for its peers 120 s after SIGINT:\n{out[-2000:]}")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130, out
    assert not (tmp_path / "runs").exists()

"""Multi-process training under real torchrun (CPU, gloo, 2 processes).

Every test launches ``python -m torch.distributed.run --standalone --nproc_per_node=2``
as a user would; timing is driven by the run's own output, never by the clock.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from tests.helpers import HANG_TIMEOUT, REPO_ROOT, assert_same_weights, cli_env, load_checkpoint, run_cli

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built in")

TRAIN = str(REPO_ROOT / "train.py")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
FAST = (
    "--dataset",
    "mnist-sample",
    "--model",
    "mlp",
    "--model-option",
    "hidden_sizes=[32]",
    "--quiet",
    "--device",
    "cpu",
)


def torchrun(*args: str, cwd: Path, timeout: float = HANG_TIMEOUT, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*TORCHRUN, *args], cwd=cwd, env=cli_env(**env), capture_output=True, text=True, timeout=timeout
    )


def start_torchrun(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [*TORCHRUN, *args],
        cwd=cwd,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )


def read_until(process: subprocess.Popen, text: str, seen: list, timeout: float = HANG_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            raise AssertionError(f"the run ended before printing {text!r}:\n{''.join(seen)}")
        seen.append(line)
        if text in line:
            return
    raise AssertionError(f"no {text!r} within {timeout} s:\n{''.join(seen)}")


def workers_of(launcher_pid: int, count: int = 2, timeout: float = HANG_TIMEOUT) -> list:
    """The worker processes torchrun started (children of the launcher), by rank order of start."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            children = Path(f"/proc/{launcher_pid}/task/{launcher_pid}/children").read_text().split()
        except OSError:
            children = []
        if len(children) >= count:
            ranks = {}
            for pid in children:
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                values = dict(item.split(b"=", 1) for item in environ if b"=" in item)
                ranks[int(values.get(b"RANK", b"-1"))] = int(pid)
            return [ranks[rank] for rank in sorted(ranks)]
        time.sleep(0.05)
    raise AssertionError("torchrun started no workers")


def log_of(experiment: Path) -> list:
    return [json.loads(line) for line in (experiment / "training_log.jsonl").read_text().splitlines()]


# -- the Python API under torchrun: ranks agree, and 2 x B equals 1 x 2B ------------------

WORKER = textwrap.dedent("""
    import sys, torch, torch.nn as nn
    from src.datasets import DatasetRegistry
    from src.models import ModelRegistry
    from src.training import Trainer, ExperimentManager
    from src.training.distributed import Distributed

    import json
    out, batch = sys.argv[1], int(sys.argv[2])
    options = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    dist = Distributed.from_environment("cpu")
    torch.manual_seed(0)
    data = DatasetRegistry.create("synthetic", num_samples=1000, num_classes=4, input_shape=[1, 8, 8], seed=3)
    train_loader, val_loader = data.get_dataloaders(batch_size=batch, val_batch_size=64)
    model = ModelRegistry.create("mlp", num_classes=4, in_channels=1, input_size=8, hidden_sizes=[16])
    experiment = ExperimentManager(base_dir=out + "/runs")  # rank 0 creates it, the others see it
    trainer = Trainer(model=model, train_loader=train_loader, val_loader=val_loader, criterion=nn.CrossEntropyLoss(),
                      optimizer=torch.optim.SGD(model.parameters(), lr=0.05), device="cpu",
                      experiment_manager=experiment, distributed=dist, show_progress=False, **options)
    results = trainer.train(epochs=3)
    val, _ = trainer.validate()
    torch.save({"model": model.state_dict(), "val": val, "history": results["history"]}, f"{out}/rank{dist.rank}.pt")
    experiment.release()
    dist.close()
""")


@pytest.mark.parametrize(
    "options",
    [
        {},
        pytest.param({"grad_accum_steps": 2, "grad_clip": 0.5, "amp": "bf16"}, marks=pytest.mark.slow),
    ],
    ids=["plain", "accumulation+clipping+bf16"],
)
def test_python_api_under_torchrun_ranks_agree_and_two_ranks_of_b_equal_one_process_of_2b(tmp_path, options):
    from src.datasets import DatasetRegistry
    from src.models import ModelRegistry
    from src.training import ExperimentManager, Trainer

    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    result = torchrun(str(script), str(tmp_path), "16", json.dumps(options), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert_same_weights(rank0["model"], rank1["model"])
    timeless = [{k: v for k, v in r["history"].items() if k != "epoch_time"} for r in (rank0, rank1)]
    assert rank0["val"] == rank1["val"] and timeless[0] == timeless[1], "ranks report one set of metrics"
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["exp1"], "exactly one experiment"

    # One process at batch 32 over the same order (1000 samples: the last global batch is
    # short, 8 samples, split 4 + 4 and weighted): the same training up to float summation order.
    torch.manual_seed(0)
    data = DatasetRegistry.create("synthetic", num_samples=1000, num_classes=4, input_shape=[1, 8, 8], seed=3)
    train_loader, val_loader = data.get_dataloaders(batch_size=32, val_batch_size=64)
    model = ModelRegistry.create("mlp", num_classes=4, in_channels=1, input_size=8, hidden_sizes=[16])
    experiment = ExperimentManager(base_dir=str(tmp_path / "single"))
    trainer = Trainer(
        model=model,
        train_loader=train_loader,
        val_loader=val_loader,
        criterion=nn.CrossEntropyLoss(),
        optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
        device="cpu",
        experiment_manager=experiment,
        show_progress=False,
        **options,
    )
    trainer.train(epochs=3)
    experiment.release()
    # bf16 autocast rounds activations to 8 bits of mantissa: the two runs agree to its precision.
    tolerance = {"rtol": 2e-2, "atol": 2e-3} if options.get("amp") else {"rtol": 1e-5, "atol": 1e-6}
    for key, value in model.state_dict().items():
        torch.testing.assert_close(rank0["model"][key], value, **tolerance, msg=key)

    # The validation metrics of 2 ranks equal a single-process evaluation of the same weights, bit for bit.
    model.load_state_dict(rank0["model"])
    single, _ = trainer.validate()
    assert single == rank0["val"]


def test_torchrun_cli_sigterm_to_one_rank_stops_both_and_resume_is_bit_identical(tmp_path):
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    straight.mkdir()
    broken.mkdir()
    args = (*FAST, "--epochs", "3", "--batch-size", "8")
    done = torchrun(TRAIN, *args, cwd=straight)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("Done:") == 1 and done.stdout.count("Epoch 3/3") == 1, "rank 0 alone reports"
    assert [p.name for p in (straight / "runs").iterdir()] == ["exp1"]

    process = start_torchrun(TRAIN, *args, cwd=broken)
    seen: list = []
    try:
        read_until(process, "Epoch 1/3", seen)
        rank0, rank1 = workers_of(process.pid)
        os.kill(rank1, signal.SIGTERM)  # one rank only
        output = process.communicate(timeout=HANG_TIMEOUT)[0]
    finally:
        if process.poll() is None:
            process.kill()
    seen.append(output)
    text = "".join(seen)
    assert "Saved " in text and text.count("Saved ") == 1, text  # one save, announced by rank 0
    state = load_checkpoint(broken / "runs" / "exp1" / "checkpoints" / "latest_checkpoint.pt")
    assert state["world_size"] == 2 and len(state["ranks"]) == 2, "every rank's RNG is in the checkpoint"
    status = json.loads((broken / "runs" / "exp1" / "status.json").read_text())
    assert status["state"] == "interrupted" and status["signal"] == "SIGTERM"

    # A mid-epoch checkpoint of 2 processes is not resumed by 1: one clear error, nothing changed.
    before = (broken / "runs" / "exp1" / "checkpoints" / "latest_checkpoint.pt").read_bytes()
    refused = run_cli("--resume", "exp1", "--quiet", cwd=broken, check=False)
    if state["mid_epoch"]:
        assert refused.returncode == 2 and "2 process(es) and this run has 1" in refused.stderr, refused.stderr
        assert (broken / "runs" / "exp1" / "checkpoints" / "latest_checkpoint.pt").read_bytes() == before

    resumed = torchrun(TRAIN, "--resume", "exp1", "--quiet", cwd=broken)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    a = load_checkpoint(straight / "runs" / "exp1" / "checkpoints" / "latest_checkpoint.pt")
    b = load_checkpoint(broken / "runs" / "exp1" / "checkpoints" / "latest_checkpoint.pt")
    assert a["epoch"] == b["epoch"] == 3
    assert_same_weights(a["model_state_dict"], b["model_state_dict"])
    assert [r["val_accuracy"] for r in log_of(straight / "runs" / "exp1")] == [
        r["val_accuracy"] for r in log_of(broken / "runs" / "exp1")
    ]

    # The checkpoint is the plain model: it loads in one process with strict=True, and its
    # validation accuracy there equals the one the 2-process run logged.
    from src.datasets import DatasetRegistry
    from src.models import build_model

    model = build_model(a["model_config"])
    model.load_state_dict(a["model_state_dict"], strict=True)
    model.eval()
    _, val_loader = DatasetRegistry.create("mnist-sample", augment=False).get_dataloaders(batch_size=8)
    correct = total = 0
    with torch.no_grad():
        for images, labels in val_loader:
            correct += int((model(images).argmax(1) == labels).sum())
            total += labels.shape[0]
    assert 100.0 * correct / total == log_of(straight / "runs" / "exp1")[-1]["val_accuracy"]


@pytest.mark.slow
def test_torchrun_early_stopping_stops_both_ranks_at_the_same_epoch(tmp_path):
    result = torchrun(TRAIN, *FAST, "--epochs", "6", "--lr", "1e-12", "--patience", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr  # a rank left behind would hang, not exit
    assert "Early stopping" in result.stdout
    assert [r["epoch"] for r in log_of(tmp_path / "runs" / "exp1")] == [1, 2]


@pytest.mark.slow
def test_a_killed_rank_makes_the_other_stop_with_a_clear_error(tmp_path):
    process = start_torchrun(TRAIN, *FAST, "--epochs", "50", "--batch-size", "8", cwd=tmp_path)
    seen: list = []
    try:
        read_until(process, "Epoch 1/50", seen)
        rank0, rank1 = workers_of(process.pid)
        os.kill(rank1, signal.SIGKILL)
        output = process.communicate(timeout=HANG_TIMEOUT)[0]  # bounded: the survivor notices the lost peer
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode != 0
    status = json.loads((tmp_path / "runs" / "exp1" / "status.json").read_text())
    assert status["state"] == "failed" and "another process of this torchrun job stopped" in status["error"], status
    text = "".join(seen) + output
    assert "Error: Rank 0 of 2: another process of this torchrun job stopped" in text, text
    assert f'File "{REPO_ROOT / "src"}' not in text and f'File "{REPO_ROOT / "train.py"}' not in text, (
        "no traceback from the workers (torchrun prints its own)"
    )

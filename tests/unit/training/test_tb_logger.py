"""``--tensorboard``: the event files a run writes, read back as TensorBoard reads them.

Runs go through ``train.main`` in-process on tiny synthetic data (12 steps an epoch);
a mid-epoch interruption is a real SIGINT sent from inside an optimizer step. Events are
read with TensorBoard's ``EventAccumulator`` (orphaned data purged, as TensorBoard does).
"""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import os
import signal
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import train
from src.config import ConfigError, RunConfig
from src.errors import WriteError
from src.training import Trainer
from src.training.tb_logger import EPOCH_TAGS, STEP_LOSS_TAG, TensorBoardLogger
from tests.helpers import assert_same_weights, load_checkpoint

# The test extra installs tensorboard (pyproject.toml): CI tests it, never skips it.
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

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
    "--model",
    "mlp",
    "--model-option",
    "hidden_sizes=[32]",
    "--scheduler",
    "cosine",
    "--quiet",
)
STEPS_PER_EPOCH = 192 // 16
EVERY = 5
TB = ("--tensorboard", "--tensorboard-every", str(EVERY))
ALL_TAGS = {STEP_LOSS_TAG, *EPOCH_TAGS.values()}


def cli(runs: Path, *args: str) -> int:
    return train.main([*args, "--runs-dir", str(runs)])


def events(directory: Path, purge: bool = True) -> dict:
    """``{tag: [(step, value), ...]}`` as TensorBoard shows the run in ``directory``."""
    accumulator = EventAccumulator(str(directory), size_guidance={"scalars": 0}, purge_orphaned_data=purge)
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def metrics(experiment: Path) -> list:
    with open(experiment / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def interrupt_at_step(monkeypatch, step: int, signum: int = signal.SIGINT) -> None:
    """``signum`` to this process from inside optimizer step ``step`` (as Ctrl-C would)."""
    original = Trainer._optimizer_step

    def stepping(self):
        original(self)
        if self.global_step == step:
            os.kill(os.getpid(), signum)

    monkeypatch.setattr(Trainer, "_optimizer_step", stepping)


def assert_one_axis(scalars: dict) -> None:
    for tag, points in scalars.items():
        steps = [step for step, _ in points]
        assert steps == sorted(set(steps)), f"{tag}: steps not strictly increasing: {steps}"


def without_times(scalars: dict) -> dict:
    return {tag: points for tag, points in scalars.items() if tag != EPOCH_TAGS["epoch_time"]}


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """An uninterrupted 3-epoch run with --tensorboard (exp1)."""
    runs = tmp_path_factory.mktemp("straight")
    assert cli(runs, *DATA, *TB, "--epochs", "3") == 0
    return runs / "exp1"


def test_events_share_the_step_axis_and_match_metrics_csv(straight):
    scalars = events(straight / "tensorboard")
    assert set(scalars) == ALL_TAGS
    assert_one_axis(scalars)
    total = 3 * STEPS_PER_EPOCH
    assert [step for step, _ in scalars[STEP_LOSS_TAG]] == list(range(EVERY, total + 1, EVERY))
    assert all(np.isfinite(value) and value > 0 for _, value in scalars[STEP_LOSS_TAG])
    epoch_ends = [STEPS_PER_EPOCH * e for e in (1, 2, 3)]
    rows = metrics(straight)
    for key, tag in EPOCH_TAGS.items():
        assert [step for step, _ in scalars[tag]] == epoch_ends, tag
        # TensorBoard keeps scalars as float32: the csv's numbers, rounded so, exactly.
        assert [value for _, value in scalars[tag]] == [float(np.float32(float(row[key]))) for row in rows], tag
    assert [value for _, value in scalars["epoch"]] == [1.0, 2.0, 3.0]
    assert load_checkpoint(straight / "checkpoints" / "latest_checkpoint.pt")["global_step"] == epoch_ends[-1]
    assert json.loads((straight / "config.json").read_text())["tensorboard"] is True


def test_logging_does_not_change_the_run(tmp_path, straight):
    """Why it may be switched on or off on --resume: the weights and numbers are the same."""
    assert cli(tmp_path / "runs", *DATA, "--epochs", "3") == 0
    plain = load_checkpoint(tmp_path / "runs" / "exp1" / "checkpoints" / "latest_checkpoint.pt")
    logged = load_checkpoint(straight / "checkpoints" / "latest_checkpoint.pt")
    assert_same_weights(plain["model_state_dict"], logged["model_state_dict"])
    assert [r["val_loss"] for r in metrics(tmp_path / "runs" / "exp1")] == [r["val_loss"] for r in metrics(straight)]


def test_interrupted_and_resumed_run_logs_each_step_once_with_the_same_values(tmp_path, monkeypatch, straight):
    runs = tmp_path / "runs"
    interrupt_at_step(monkeypatch, STEPS_PER_EPOCH + 7)  # inside epoch 2
    assert cli(runs, *DATA, *TB, "--epochs", "3") == 128 + signal.SIGINT
    monkeypatch.undo()
    experiment = runs / "exp1"
    assert load_checkpoint(experiment / "checkpoints" / "latest_checkpoint.pt")["global_step"] == STEPS_PER_EPOCH + 7
    stopped = events(experiment / "tensorboard")
    assert [step for step, _ in stopped[STEP_LOSS_TAG]] == [5, 10, 15]  # all flushed before the exit
    assert cli(runs, "--resume", "exp1", "--quiet") == 0
    resumed, reference = events(experiment / "tensorboard"), events(straight / "tensorboard")
    assert len(list((experiment / "tensorboard").iterdir())) == 2, "the resume writes a file of its own"
    assert_one_axis(resumed)
    assert {tag: [s for s, _ in p] for tag, p in resumed.items()} == {
        tag: [s for s, _ in p] for tag, p in reference.items()
    }
    assert without_times(resumed) == without_times(reference), "bit-exact resume: the same numbers"


def test_events_written_after_the_last_checkpoint_are_hidden_on_resume(tmp_path, monkeypatch, straight):
    runs = tmp_path / "runs"
    interrupt_at_step(monkeypatch, STEPS_PER_EPOCH + 7)
    assert cli(runs, *DATA, *TB, "--epochs", "3") == 128 + signal.SIGINT
    monkeypatch.undo()
    tensorboard = runs / "exp1" / "tensorboard"
    (first,) = tensorboard.iterdir()
    # A process killed after its checkpoint had logged on, past it, before it died.
    crashed = SummaryWriter(str(tmp_path / "crashed"))
    for step in range(STEPS_PER_EPOCH + 8, 3 * STEPS_PER_EPOCH + 1):
        for tag in ALL_TAGS:
            crashed.add_scalar(tag, 999.0, step)
    crashed.close()
    (written,) = (tmp_path / "crashed").iterdir()
    os.replace(written, tensorboard / (first.name + ".crashed"))  # read right after the first file
    assert cli(runs, "--resume", "exp1", "--quiet") == 0
    unpurged = events(tensorboard, purge=False)
    assert any(value == 999.0 for _, value in unpurged[STEP_LOSS_TAG]), "the orphaned events are in the files"
    resumed, reference = events(tensorboard), events(straight / "tensorboard")
    assert_one_axis(resumed)
    assert without_times(resumed) == without_times(reference)


def test_logging_may_be_switched_on_and_off_on_resume_and_a_fork_starts_at_its_step(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    assert cli(runs, *DATA, "--scheduler", "none", "--epochs", "1") == 0  # extendable
    assert not (runs / "exp1" / "tensorboard").exists()
    assert cli(runs, "--resume", "exp1", "--epochs", "2", *TB) == 0
    scalars = events(runs / "exp1" / "tensorboard")
    assert [step for step, _ in scalars["epoch"]] == [2 * STEPS_PER_EPOCH]
    assert [step for step, _ in scalars[STEP_LOSS_TAG]] == [15, 20]
    files = {p.name: p.read_bytes() for p in (runs / "exp1" / "tensorboard").iterdir()}
    assert cli(runs, "--resume", "exp1", "--epochs", "3", "--no-tensorboard") == 0
    assert {p.name: p.read_bytes() for p in (runs / "exp1" / "tensorboard").iterdir()} == files
    assert json.loads((runs / "exp1" / "config.json").read_text())["tensorboard"] is False

    assert cli(runs, "--fork", "exp1", "--epochs", "4", "--tensorboard") == 0  # inherits --tensorboard-every 5
    fork = events(runs / "exp2" / "tensorboard")
    assert [step for step, _ in fork["epoch"]] == [4 * STEPS_PER_EPOCH]
    assert [value for _, value in fork["epoch"]] == [4.0]
    assert [step for step, _ in fork[STEP_LOSS_TAG]] == [40, 45]  # from the fork point, step 36, on
    assert {p.name: p.read_bytes() for p in (runs / "exp1" / "tensorboard").iterdir()} == files, "parent untouched"


def test_missing_package_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard now fails
    assert cli(runs, *DATA, *TB, "--epochs", "1") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("Error: --tensorboard needs the tensorboard package") and len(err.splitlines()) == 1
    assert "pip install tensorboard==2.21.0" in err
    assert not runs.exists() or not any(runs.iterdir()), "no experiment was created"

    monkeypatch.undo()
    assert cli(runs, *DATA, *TB, "--scheduler", "none", "--epochs", "1") == 0
    before = {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in (runs / "exp1").rglob("*") if p.is_file()}
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    assert cli(runs, "--resume", "exp1", "--epochs", "2", "--quiet") == 2
    assert "--no-tensorboard" in capsys.readouterr().err
    after = {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in (runs / "exp1").rglob("*") if p.is_file()}
    assert after == before, "a refused resume leaves the experiment as it was"
    assert cli(runs, "--resume", "exp1", "--quiet") == 0, "a finished run has nothing to do, logging or not"
    assert "complete" in capsys.readouterr().out
    assert cli(runs, "--resume", "exp1", "--epochs", "2", "--no-tensorboard") == 0


@pytest.mark.parametrize("value", ["0", "-1", "x", "2.5", ""])
def test_bad_tensorboard_every_is_one_sentence(tmp_path, capsys, value):
    with pytest.raises(SystemExit) as stopped:
        cli(tmp_path / "runs", *DATA, *TB[:1], "--tensorboard-every", value)
    assert stopped.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.endswith(
        f"error: argument --tensorboard-every: expects a positive whole number of steps, e.g. 50, got {value!r}"
    )
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("value", [0, -3, 2.5, True, "50", None])
def test_bad_tensorboard_every_in_a_config_is_refused_by_name(value):
    with pytest.raises(ConfigError) as caught:
        RunConfig(tensorboard=True, tensorboard_every=value).validate()
    assert str(caught.value) == (
        f"tensorboard_every (--tensorboard-every) must be a positive whole number of steps, e.g. 50, got {value!r}."
    )
    with pytest.raises(ConfigError, match="tensorboard must be true or false, got 'yes'"):
        RunConfig(tensorboard="yes").validate()


def test_config_file_and_flag_without_tensorboard(tmp_path, capsys):
    runs = tmp_path / "runs"
    config = tmp_path / "c.yaml"
    config.write_text("tensorboard_every: 0\n")
    assert cli(runs, "--config", str(config)) == 2
    assert "tensorboard_every: tensorboard_every (--tensorboard-every) must be a positive" in capsys.readouterr().err
    assert cli(runs, *DATA, "--tensorboard-every", "7") == 2
    assert (
        "--tensorboard-every 7 has no effect while TensorBoard logging is off; add --tensorboard"
        in capsys.readouterr().err
    )
    assert not runs.exists() or not any(runs.iterdir())


def test_a_file_where_the_event_folder_belongs_is_refused_before_the_resume(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert cli(runs, *DATA, "--scheduler", "none", "--epochs", "1") == 0
    (runs / "exp1" / "tensorboard").write_text("not a folder")
    status = (runs / "exp1" / "status.json").read_text()
    assert cli(runs, "--resume", "exp1", "--epochs", "2", "--tensorboard") == 2
    assert "tensorboard is a file, not the directory of TensorBoard events; move it away" in capsys.readouterr().err
    assert (runs / "exp1" / "status.json").read_text() == status


def test_a_failed_event_write_stops_the_run_with_one_line_and_keeps_the_checkpoints(tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    calls = []

    def flush_until_the_disk_fills(self):
        calls.append(1)
        if len(calls) > 3:  # epoch 1's two step losses and its record got through
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(SummaryWriter, "flush", flush_until_the_disk_fills)
    assert cli(runs, *DATA, *TB, "--scheduler", "none", "--epochs", "3") == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("Error: Could not write TensorBoard events to ") and "No space left on device" in err
    assert len(err.splitlines()) == 1
    assert json.loads((runs / "exp1" / "status.json").read_text())["state"] == "failed"
    assert load_checkpoint(runs / "exp1" / "checkpoints" / "latest_checkpoint.pt")["epoch"] == 1
    monkeypatch.undo()
    assert cli(runs, "--resume", "exp1") == 0
    assert_one_axis(events(runs / "exp1" / "tensorboard"))


def test_a_write_failing_in_the_writer_thread_is_one_write_error_and_no_traceback(tmp_path, monkeypatch):
    printed = []  # what threading.excepthook would print as a thread's traceback
    monkeypatch.setattr(threading, "excepthook", lambda args: printed.append(args.exc_value))
    logger = TensorBoardLogger(tmp_path / "tb", every=1)
    logger.log_step(1, 0.5)
    record_file = logger._writer.file_writer.event_writer._async_writer._writer._writer  # tensorboard 2.21's

    def full(data):
        raise OSError(errno.ENOSPC, "No space left on device")

    record_file.write = full
    with pytest.raises(WriteError, match=r"Could not write TensorBoard events to .*tb: No space left on device"):
        logger.log_step(2, 0.4)
    assert logger.close() is None  # joins the writer thread: its exception has been handled
    assert printed == []
    other = threading.Thread(target=lambda: 1 / 0)
    other.start()
    other.join()
    assert [type(e) for e in printed] == [ZeroDivisionError], "other threads' errors still reach the hook"


def test_logger_close_is_idempotent_and_never_raises(tmp_path, monkeypatch):
    logger = TensorBoardLogger(tmp_path / "tb", every=1)
    assert logger.close() is None  # never opened
    logger.log_step(3, 0.5)  # opened on first use, at that step
    monkeypatch.setattr(logger._writer, "close", lambda: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    problem = logger.close()
    assert "could not finish the TensorBoard events in" in problem and "I/O error" in problem
    assert logger.close() is None
    with pytest.raises(ValueError, match="every must be a positive whole number of steps, e.g. 50, got 0"):
        TensorBoardLogger(tmp_path, every=0)


def test_python_api_logs_through_repeated_train_calls_and_train_py_continues(tmp_path):
    import torch
    import torch.nn as nn

    from src.datasets import DatasetRegistry
    from src.models import ModelRegistry
    from src.training import CheckpointManager, ExperimentManager

    torch.manual_seed(0)
    # input_shape as a list, as config.json reads it back (a tuple makes train.py refuse the resume)
    data = DatasetRegistry.create("synthetic", num_samples=192, num_classes=4, input_shape=[1, 8, 8], seed=0)
    train_loader, val_loader = data.get_dataloaders(batch_size=16)
    model = ModelRegistry.create("mlp", num_classes=4, input_size=8, hidden_sizes=[16])
    experiment = ExperimentManager(base_dir=str(tmp_path / "runs"))
    trainer = Trainer(
        model,
        train_loader,
        val_loader,
        nn.CrossEntropyLoss(),
        torch.optim.AdamW(model.parameters()),
        torch.device("cpu"),
        experiment,
        CheckpointManager(experiment.checkpoints_dir),
        show_progress=False,
        tensorboard=TensorBoardLogger(experiment.tensorboard_dir, every=4),
    )
    try:
        trainer.train(epochs=1)
        trainer.train(epochs=2)  # a second writer at once: its file must still be read after the first
    finally:
        experiment.release()
    config = json.loads((tmp_path / "runs" / "exp1" / "config.json").read_text())
    assert (config["tensorboard"], config["tensorboard_every"]) == (True, 4)
    assert cli(tmp_path / "runs", "--resume", "exp1", "--epochs", "3", "--quiet") == 0
    scalars = events(tmp_path / "runs" / "exp1" / "tensorboard")
    assert len(list((tmp_path / "runs" / "exp1" / "tensorboard").iterdir())) == 3
    assert_one_axis(scalars)
    assert [step for step, _ in scalars["epoch"]] == [12, 24, 36]
    assert [step for step, _ in scalars[STEP_LOSS_TAG]] == list(range(4, 37, 4))

"""Epoch-end checkpoints written on a background thread: the same files as a synchronous
save, written in order, overlapping the next epoch, and a failed write reported unchanged."""

from __future__ import annotations

import errno
import io
import json
import os
import threading
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import src.utils.io as io_module
from src.errors import NonFiniteLossError
from src.models import ModelRegistry
from src.training import CheckpointManager, Trainer
from src.training.background import BackgroundWrites, FrozenState, freeze
from src.training.checkpoint import CheckpointSaveError
from src.training.manifest import read_manifest
from tests.helpers import make_background_trainer as make_trainer


def test_frozen_state_serializes_to_the_same_bytes_and_ignores_later_steps():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    model.model_config = {"name": "x", "options": {"a": [1]}}
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(5, 3)).sum().backward()
    optimizer.step()

    def saved(source):
        buffer = io.BytesIO()
        torch.save(source.state_dict(), buffer)
        return buffer.getvalue()

    frozen_model, frozen_optimizer = FrozenState(model), FrozenState(optimizer)
    assert saved(frozen_model) == saved(model) and saved(frozen_optimizer) == saved(optimizer)
    assert frozen_model.model_config == model.model_config and frozen_model.model_config is not model.model_config
    before = saved(frozen_model), saved(frozen_optimizer)
    model(torch.randn(5, 3)).sum().backward()
    optimizer.step()  # in-place updates of the live weights and moments
    assert (saved(frozen_model), saved(frozen_optimizer)) == before
    assert saved(frozen_model) != saved(model)


def test_freeze_copies_accelerator_tensors_to_the_host_once():
    """The host-copy path (taken for GPU tensors) exercised on CPU tensors: every tensor
    copied, a tensor that appears twice copied once, the rest deep-copied."""
    weight = torch.randn(3, 3)
    state = {"a": weight, "b": [weight, (torch.arange(4), {"n": 3})], "name": "x"}
    frozen = freeze(state, to_host=lambda t: True)
    assert frozen["a"] is frozen["b"][0] and frozen["a"] is not weight and torch.equal(frozen["a"], weight)
    assert torch.equal(frozen["b"][1][0], torch.arange(4)) and frozen["b"][1][1] == {"n": 3}
    weight.add_(1)
    assert not torch.equal(frozen["a"], weight)
    plain = freeze(state)  # CPU tensors: the ordinary deep copy keeps views of one storage together
    assert plain["a"] is plain["b"][0] and plain["a"].data_ptr() != weight.data_ptr()


def test_background_writes_runs_in_order_and_reraises_the_same_error_once():
    writes, order = BackgroundWrites(), []
    gate = threading.Event()
    writes.submit(lambda: (gate.wait(30), order.append(1)))
    assert writes.busy
    gate.set()
    writes.submit(lambda: order.append(2))  # waits for the first
    writes.wait()
    assert order == [1, 2] and not writes.busy
    error = OSError(errno.ENOSPC, "full")
    writes.submit(lambda: (_ for _ in ()).throw(error))
    with pytest.raises(OSError) as raised:
        writes.submit(lambda: order.append(3))  # the previous job's error stops the next one
    assert raised.value is error and order == [1, 2]
    writes.wait()  # reported once
    inline = BackgroundWrites(enabled=False)
    inline.submit(lambda: order.append(threading.current_thread().name))
    assert order[-1] == threading.current_thread().name


def test_background_and_synchronous_saves_write_identical_checkpoints(tmp_path):
    results = {}
    for background in (True, False):
        trainer = make_trainer(tmp_path / str(background), background=background)
        trainer.train(epochs=3)
        checkpoints = Path(trainer.checkpoint_manager.checkpoints_dir)
        results[background] = {p.name: p.read_bytes() for p in sorted(checkpoints.glob("*.pt"))}
        log = (checkpoints.parent / "training_log.jsonl").read_text().splitlines()
        assert [json.loads(line)["epoch"] for line in log] == [1, 2, 3]
    assert set(results[True]) == {"best_model.pt", "latest_checkpoint.pt", "epoch_1.pt", "epoch_2.pt", "epoch_3.pt"}
    for name, data in results[True].items():
        saved, synchronous = (torch.load(io.BytesIO(d), weights_only=True) for d in (data, results[False][name]))
        assert saved.keys() == synchronous.keys()
        for key in saved:
            if key == "history":  # epoch times are measured, the rest must agree
                for field in (saved[key], synchronous[key]):
                    field.pop("epoch_time")
            if key != "versions":
                assert _same(saved[key], synchronous[key]), f"{name}: {key} differs"


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b or (a != a and b != b)


def test_the_write_overlaps_the_next_epoch_and_the_log_follows_its_checkpoint(tmp_path, monkeypatch):
    """The epoch-1 write is held until epoch 2 has started training: with a synchronous
    save that could never happen (the wait would time out). Each log line is written
    only once the checkpoint it describes is committed."""
    trainer = make_trainer(tmp_path / "runs")
    checkpoints = Path(trainer.checkpoint_manager.checkpoints_dir)
    epoch_two_started, held, seen = threading.Event(), {"timed_out": None}, []
    real_save, real_train_epoch = CheckpointManager.save_epoch_end, Trainer.train_epoch
    import src.training.trainer_saves as trainer_module

    def held_save(self, model, optimizer, epoch, *args, **kwargs):
        if epoch == 1:
            held["timed_out"] = not epoch_two_started.wait(60)
        return real_save(self, model, optimizer, epoch, *args, **kwargs)

    def noting_train_epoch(self, epoch):
        if epoch == 2:
            epoch_two_started.set()
        return real_train_epoch(self, epoch)

    real_write_log = trainer_module.write_log

    def checking_write_log(path, history):
        entries, _ = read_manifest(checkpoints / "latest_checkpoint.pt")
        seen.append((history["epoch"][-1], entries[-1]["epoch"], threading.current_thread().name))
        real_write_log(path, history)

    monkeypatch.setattr(CheckpointManager, "save_epoch_end", held_save)
    monkeypatch.setattr(Trainer, "train_epoch", noting_train_epoch)
    monkeypatch.setattr(trainer_module, "write_log", checking_write_log)
    results = trainer.train(epochs=3)
    assert held["timed_out"] is False, "epoch 2 started while epoch 1 was being written"
    assert [(logged, committed) for logged, committed, _ in seen] == [(1, 1), (2, 2), (3, 3)]
    assert {thread for _, _, thread in seen} == {"exptrain-writer"}
    assert results["epochs_trained"] == 3 and not [t for t in threading.enumerate() if t.name == "exptrain-writer"]
    status = json.loads((checkpoints.parent / "status.json").read_text())
    assert status["state"] == "completed" and status["epoch"] == 3


@pytest.mark.parametrize("background", [True, False])
def test_a_failed_background_write_stops_the_run_at_the_last_saved_epoch(tmp_path, monkeypatch, background):
    """The disk fills during the epoch-2 write (on the writer thread): the error is raised
    by train() unchanged, status, log and metrics.csv stop at epoch 1, and the trainer's
    epoch says 1 again."""
    real_write_all, armed = io_module._write_all, {"on": False}

    def full_disk(fd, data):
        if armed["on"] and len(data) > 2000:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write_all(fd, data)

    real_save = CheckpointManager.save_epoch_end

    def arm_after_epoch_one(self, *args, **kwargs):
        saved = real_save(self, *args, **kwargs)
        armed["on"] = True
        return saved

    monkeypatch.setattr(io_module, "_write_all", full_disk)
    monkeypatch.setattr(CheckpointManager, "save_epoch_end", arm_after_epoch_one)
    trainer = make_trainer(tmp_path / "runs", background=background)
    with pytest.raises(CheckpointSaveError, match="No space left on device.*intact"):
        trainer.train(epochs=4)
    experiment = Path(trainer.experiment_manager.experiment_dir)
    status = json.loads((experiment / "status.json").read_text())
    assert status["state"] == "failed" and status["epoch"] == 1 and "No space left" in status["error"]
    assert [json.loads(line)["epoch"] for line in (experiment / "training_log.jsonl").read_text().splitlines()] == [1]
    assert (experiment / "metrics.csv").read_text().count("\n") == 2  # header + epoch 1
    assert trainer.epoch == 1 and trainer.history["epoch"] == [1]
    _, payload, _ = trainer.checkpoint_manager.find_latest_valid()
    assert payload["epoch"] == 1
    # Its model and optimizer are past epoch 1: it refuses to go on, and says how to resume.
    armed["on"] = False
    with pytest.raises(
        Exception,
        match=r"stopped at epoch 1 of exp1 because a checkpoint could not be written.*"
        r"--resume exp1",
    ):
        trainer.train(epochs=4)


def test_a_model_that_cannot_be_saved_is_reported_as_non_finite(tmp_path, monkeypatch):
    """The writer thread refuses a NaN model; the run fails as for any non-finite loss."""
    model = ModelRegistry.create("mlp", num_classes=4, input_size=8, hidden_sizes=[32])
    model.register_buffer("unused", torch.zeros(1))
    trainer = make_trainer(tmp_path / "runs", model=model)
    real_validate = Trainer.validate

    def poisoning_validate(self):
        if self.epoch == 1:  # during epoch 2
            self.model.unused.fill_(float("nan"))
        return real_validate(self)

    monkeypatch.setattr(Trainer, "validate", poisoning_validate)
    with pytest.raises(NonFiniteLossError, match="NaN or infinite"):
        trainer.train(epochs=4)
    status = json.loads((Path(trainer.experiment_manager.experiment_dir) / "status.json").read_text())
    assert status["state"] == "failed" and status["reason"] == "non-finite loss" and status["epoch"] == 1


def test_state_that_cannot_be_copied_is_saved_on_the_training_thread(tmp_path, monkeypatch):
    import src.training.trainer_saves as trainer_module

    def refuse(value):
        raise RuntimeError("cannot deep-copy this tensor type")

    monkeypatch.setattr(trainer_module, "freeze", refuse)
    trainer = make_trainer(tmp_path / "runs")
    threads = []
    real_save = CheckpointManager.save_epoch_end

    def noting_save(self, *args, **kwargs):
        threads.append(threading.current_thread().name)
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(CheckpointManager, "save_epoch_end", noting_save)
    assert trainer.train(epochs=2)["epochs_trained"] == 2
    assert threads == [threading.current_thread().name] * 2
    _, payload, _ = trainer.checkpoint_manager.find_latest_valid()
    assert payload["epoch"] == 2

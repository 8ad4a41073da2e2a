"""The Trainer's parts in-process: the loader protocol and its one adapter, the options
object, the experiment protocol and the checkpoint format check."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from src.datasets import DatasetRegistry
from src.models import ModelRegistry
from src.training import CheckpointManager, ExperimentManager, Trainer
from src.training.checkpoint import FORMAT_VERSION, CheckpointError
from src.training.distributed import FollowerExperiment
from src.training.interrupts import TrainingInterrupted
from src.training.protocols import ExperimentLike, LoaderAdapter, ResumableLoader, as_resumable, unwrap
from src.training.trainer_options import TrainerOptions


class StatefulLoader:
    """Like torchdata's ``StatefulDataLoader``: ``state_dict``/``load_state_dict`` that
    continue mid-epoch, but no ``position``."""

    def __init__(self, images, labels, batch_size):
        self.images, self.labels, self.batch_size = images, labels, batch_size
        self._start, self._next = 0, 0

    def __len__(self):
        return (len(self.images) + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        start, self._start = self._start, 0
        for batch in range(start, len(self)):
            self._next = batch + 1
            lo, hi = batch * self.batch_size, (batch + 1) * self.batch_size
            yield self.images[lo:hi], self.labels[lo:hi]
        self._next = 0

    def state_dict(self):
        return {"next": self._next}

    def load_state_dict(self, state):
        self._start = self._next = int(state["next"])


def _data():
    data = DatasetRegistry.create("synthetic", num_samples=128, num_classes=4, input_shape=(1, 8, 8), seed=0)
    train, val = data.get_dataloaders(batch_size=32)
    images, labels = zip(*train)
    return torch.cat(images), torch.cat(labels), val


def _trainer(runs: Path, train_loader, val_loader, resume_exp=None, **options):
    torch.manual_seed(0)
    model = ModelRegistry.create("mlp", num_classes=4, input_size=8, hidden_sizes=[16])
    experiment = ExperimentManager(base_dir=str(runs), lock=False, resume_exp=resume_exp)
    return Trainer(
        model,
        train_loader,
        val_loader,
        nn.CrossEntropyLoss(),
        torch.optim.SGD(model.parameters(), lr=0.1),
        torch.device("cpu"),
        experiment,
        CheckpointManager(experiment.checkpoints_dir, save_frequency=1),
        show_progress=False,
        plot_interval=3600,
        **options,
    )


def _signal_at(trainer: Trainer, step: int) -> None:
    real_step = trainer._optimizer_step

    def step_then_signal():
        real_step()
        if trainer.global_step == step:
            trainer.stop_request.signum = signal.SIGTERM  # what the handler records

    trainer._optimizer_step = step_then_signal


def test_a_stateful_loader_without_position_is_saved_and_resumed_after_a_stop_signal(tmp_path):
    images, labels, val = _data()
    trainer = _trainer(tmp_path, StatefulLoader(images, labels, 16), val)
    per_epoch = len(trainer.train_loader)
    _signal_at(trainer, per_epoch + 3)  # inside epoch 2
    with pytest.raises(TrainingInterrupted) as stopped:
        trainer.train(epochs=3)
    assert stopped.value.saved and stopped.value.exit_code == 128 + signal.SIGTERM
    experiment = Path(trainer.experiment_manager.experiment_dir)
    assert json.loads((experiment / "status.json").read_text())["state"] == "interrupted"
    payload = trainer.checkpoint_manager.read(trainer.checkpoint_manager.latest_path)
    assert payload["mid_epoch"] and payload["global_step"] == per_epoch + 3
    assert payload["train_loader"] == {"next": 3}  # the loader's own state, unchanged

    resumed = _trainer(tmp_path, StatefulLoader(images, labels, 16), val, resume_exp=trainer.experiment_manager.name)
    resumed.load_state_dict(payload)
    results = resumed.train(epochs=3)
    assert results["epochs_trained"] == 3 and resumed.global_step == 3 * per_epoch
    assert json.loads((experiment / "status.json").read_text())["state"] == "completed"


def test_a_plain_dataloader_stops_without_a_mid_epoch_checkpoint(tmp_path, capsys):
    images, labels, val = _data()
    loader = DataLoader(TensorDataset(images, labels), batch_size=16)
    trainer = _trainer(tmp_path, loader, val)
    assert isinstance(trainer._train, LoaderAdapter) and trainer.train_loader is loader
    _signal_at(trainer, 2)
    with pytest.raises(TrainingInterrupted) as stopped:
        trainer.train(epochs=2)
    assert not stopped.value.saved and "cannot record its position" in capsys.readouterr().out


def test_the_adapter_counts_position_and_has_no_state_for_a_plain_iterable():
    batches = [(torch.zeros(2, 1), torch.zeros(2, dtype=torch.long))] * 3
    adapter = as_resumable(batches)
    assert isinstance(adapter, ResumableLoader) and unwrap(adapter) is batches
    assert adapter.state_dict() is None and len(adapter) == 3 and adapter.batch_weight == 1.0
    positions = [adapter.position for _ in adapter]
    assert positions == [1, 2, 3] and adapter.position == 0  # a finished pass starts again at 0
    adapter.load_state_dict({"ignored": True})  # nothing to restore


def test_the_built_in_loader_is_used_as_it_is():
    data = DatasetRegistry.create("synthetic", num_samples=64, num_classes=4, input_shape=(1, 8, 8), seed=0)
    train, _ = data.get_dataloaders(batch_size=32)
    assert as_resumable(train) is train and unwrap(train) is train


def test_both_experiments_are_experiment_like(tmp_path):
    experiment = ExperimentManager(base_dir=str(tmp_path), lock=False)
    follower = FollowerExperiment(tmp_path, experiment.name)
    assert isinstance(experiment, ExperimentLike) and isinstance(follower, ExperimentLike)


def test_options_object_and_keyword_arguments_are_the_same(tmp_path):
    images, labels, val = _data()
    loader = StatefulLoader(images, labels, 16)
    by_object = _trainer(tmp_path / "a", loader, val, options=TrainerOptions(grad_accum_steps=2, grad_clip=1.0))
    by_keywords = _trainer(tmp_path / "b", loader, val, grad_accum_steps=2, grad_clip=1.0)
    for trainer in (by_object, by_keywords):
        assert (trainer.grad_accum_steps, trainer.grad_clip) == (2, 1.0)
    merged = TrainerOptions.from_keywords(TrainerOptions(grad_clip=1.0), {"grad_accum_steps": 3})
    assert (merged.grad_clip, merged.grad_accum_steps) == (1.0, 3)
    with pytest.raises(TypeError, match="grad_acum"):
        _trainer(tmp_path / "c", loader, val, grad_acum=2)
    with pytest.raises(ValueError, match="grad_accum_steps must be a positive integer, got 0"):
        _trainer(tmp_path / "d", loader, val, grad_accum_steps=0)


def test_a_checkpoint_of_a_newer_format_is_refused_with_a_clear_error(tmp_path):
    images, labels, val = _data()
    trainer = _trainer(tmp_path, StatefulLoader(images, labels, 16), val)
    state = trainer.state_dict()
    trainer.load_state_dict({**state, "format_version": FORMAT_VERSION})  # this format: loads
    with pytest.raises(CheckpointError, match=f"format version {FORMAT_VERSION + 1}.*upgrade exptrain"):
        trainer.load_state_dict({**state, "format_version": FORMAT_VERSION + 1})

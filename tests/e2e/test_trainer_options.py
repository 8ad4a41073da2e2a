"""Trainer options: AMP, channels-last, gradient accumulation and clipping, torch.compile.

Correctness only (runs, learns, resumes exactly); their speed is for benchmarks/.
"""

from __future__ import annotations

import os
import signal

import pytest
import torch
import torch.nn as nn

from src.datasets import DatasetRegistry
from src.models import ModelRegistry
from src.training import CheckpointManager, ExperimentManager, Trainer, TrainingInterrupted

OPTIONS = {
    "bf16": {"amp": "bf16"},
    "fp16": {"amp": "fp16"},
    "channels_last": {"channels_last": True},
    "grad_accum": {"grad_accum_steps": 3},
    "grad_clip": {"grad_clip": 0.5},
}


def make(tmp_path, model="mynet", batch_size=32, lr=3e-3, optimizer="adamw", **options):
    torch.manual_seed(0)
    data = DatasetRegistry.create(
        "synthetic", num_samples=320, num_classes=4, input_shape=(1, 12, 12), seed=0, noise=90.0
    )
    train_loader, val_loader = data.get_dataloaders(batch_size=batch_size)
    kwargs = {"width": 8} if model == "mynet" else {"hidden_sizes": [32]}
    net = ModelRegistry.create(model, num_classes=4, input_size=12, **kwargs)
    opt = (torch.optim.AdamW if optimizer == "adamw" else torch.optim.SGD)(net.parameters(), lr=lr)
    experiment = ExperimentManager(base_dir=str(tmp_path), lock=False)
    return Trainer(
        net,
        train_loader,
        val_loader,
        nn.CrossEntropyLoss(),
        opt,
        torch.device("cpu"),
        experiment,
        CheckpointManager(experiment.checkpoints_dir, save_frequency=1),
        show_progress=False,
        **options,
    )


@pytest.mark.parametrize("name", OPTIONS)
def test_option_learns_and_resumes_bit_exact(tmp_path, name):
    straight = make(tmp_path / "a", **OPTIONS[name])
    results = straight.train(epochs=3)
    history = results["history"]
    assert history["train_loss"][-1] < history["train_loss"][0] and results["best_accuracy"] > 60
    latest = torch.load(straight.checkpoint_manager.latest_path, weights_only=True)
    assert (latest["scaler_state_dict"] is not None) == (name == "fp16")

    first = make(tmp_path / "b", **OPTIONS[name])
    first.train(epochs=1)
    state = torch.load(first.checkpoint_manager.latest_path, weights_only=True)
    second = make(tmp_path / "c", **OPTIONS[name])
    second.load_state_dict(state)
    second.train(epochs=3)
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, second.model.state_dict()[key]), key
    assert straight.history["val_loss"] == second.history["val_loss"]


def test_gradient_accumulation_matches_a_larger_batch(tmp_path):
    # No batch norm, no shuffle, SGD: 2 x 16 accumulated must equal one batch of 32.
    big = make(tmp_path / "a", model="mlp", batch_size=32, optimizer="sgd", lr=0.1)
    small = make(tmp_path / "b", model="mlp", batch_size=16, optimizer="sgd", lr=0.1, grad_accum_steps=2)
    for trainer in (big, small):
        trainer.train_loader.shuffle = False
        trainer.train_epoch(1)
    for key, value in big.model.state_dict().items():
        assert torch.allclose(value, small.model.state_dict()[key], atol=1e-6), key


def test_gradient_clipping_bounds_the_update(tmp_path):
    trainer = make(tmp_path, model="mlp", batch_size=320, optimizer="sgd", lr=1.0, grad_clip=1e-3)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train_epoch(1)  # one batch: exactly one SGD step
    change = torch.sqrt(sum(((p - b) ** 2).sum() for p, b in zip(trainer.model.parameters(), before)))
    assert 0 < change <= 1e-3 + 1e-7


def test_interrupt_waits_for_the_accumulation_boundary(tmp_path):
    trainer = make(tmp_path, grad_accum_steps=3)
    criterion, calls = trainer.criterion, {"n": 0}

    def criterion_that_signals(outputs, labels):
        calls["n"] += 1
        if calls["n"] == 5:  # batch 5 of an accumulation group of 3: stop after batch 6
            trainer.stop_request.signum = signal.SIGTERM
        return criterion(outputs, labels)

    trainer.criterion = criterion_that_signals
    with pytest.raises(TrainingInterrupted):
        trainer.train(epochs=2)
    state = torch.load(trainer.checkpoint_manager.latest_path, weights_only=True)
    assert state["mid_epoch"] and state["train_loader"]["position"] == 6 and state["global_step"] == 6


@pytest.mark.skipif(
    os.environ.get("ATEN_CPU_CAPABILITY") == "default",
    reason="torch 2.13's inductor emits C++ that does not build with ATEN_CPU_CAPABILITY=default "
    "('at::vec has not been declared'); torch.compile is tested on the CPU's own kernels",
)
def test_compile_runs_and_checkpoints_plain_keys(tmp_path):
    trainer = make(tmp_path, model="mlp", compile_model=True)
    results = trainer.train(epochs=2)
    assert results["best_accuracy"] > 60
    state = torch.load(trainer.checkpoint_manager.latest_path, weights_only=True)
    assert not any(key.startswith("_orig_mod.") for key in state["model_state_dict"])
    plain = make(tmp_path / "plain", model="mlp")  # resume without compile
    plain.load_state_dict(state)
    assert plain.train(epochs=3)["epochs_trained"] == 3


def test_bad_option_values(tmp_path):
    with pytest.raises(ValueError, match="Unknown AMP mode 'fp8'"):
        make(tmp_path, amp="fp8")
    with pytest.raises(ValueError, match="grad_accum_steps must be a positive integer"):
        make(tmp_path, grad_accum_steps=0)

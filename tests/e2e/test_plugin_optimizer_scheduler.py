"""Adding an optimizer and a scheduler is one registry entry: a plug-in file registers a
new one of each, trains with them through the command line, and ``--resume`` continues
exactly (bit for bit the run that was never interrupted)."""

from __future__ import annotations

import json
import sys

import pytest
import torch

import train
from src import plugins
from src.optim import OptimizerRegistry, SchedulerRegistry

PLUGIN = '''
import torch

from src.optim import OptimizerRegistry, SchedulerRegistry


class PlainSGD(torch.optim.SGD):
    """SGD without momentum, as a class of its own so the run records it by name."""


class Decay(torch.optim.lr_scheduler.LambdaLR):
    pass


@OptimizerRegistry.register("plainsgd", cls=PlainSGD)
def plainsgd(parameters, lr, weight_decay):
    return PlainSGD(parameters, lr=lr, weight_decay=weight_decay)


@SchedulerRegistry.register("decay", cls=Decay, per_step=True)
def decay(optimizer, epochs, steps_per_epoch):
    return Decay(optimizer, lambda step: 0.97 ** step)
'''
TINY = (
    "--dataset",
    "synthetic",
    "--dataset-option",
    "num_samples=96",
    "--model",
    "mlp",
    "--model-option",
    "hidden_sizes=[8]",
    "--quiet",
    "--checkpoint-interval",
    "0",
    "--batch-size",
    "16",
)


@pytest.fixture
def clean_optim_registries():
    """Undo the plug-in's registrations and imports (as if the next test ran in a new process)."""
    saved = {
        registry: (dict(registry._entries), dict(registry._metadata))
        for registry in (OptimizerRegistry, SchedulerRegistry)
    }
    loaded, modules = dict(plugins._loaded), set(sys.modules)
    yield
    for registry, (entries, metadata) in saved.items():
        registry._entries.clear(), registry._entries.update(entries)
        registry._metadata.clear(), registry._metadata.update(metadata)
    plugins._loaded.clear(), plugins._loaded.update(loaded)
    for name in set(sys.modules) - modules:
        if name.startswith(plugins.MODULE_PREFIX):
            del sys.modules[name]


def weights(experiment):
    return torch.load(experiment / "checkpoints" / "latest_checkpoint.pt", weights_only=True)


def test_a_plugin_optimizer_and_scheduler_train_and_resume_exactly(tmp_path, monkeypatch, clean_optim_registries):
    (tmp_path / "my_optim.py").write_text(PLUGIN)
    monkeypatch.chdir(tmp_path)
    new = ("--import", "my_optim.py", "--optimizer", "plainsgd", "--scheduler", "decay", "--lr", "0.05", *TINY)
    assert train.main([*new, "--epochs", "3", "--name", "straight"]) == 0
    assert train.main([*new, "--epochs", "1", "--name", "stopped"]) == 0
    assert train.main(["--resume", "stopped", "--epochs", "3"]) == 0  # re-imports the recorded plug-in

    straight, resumed = tmp_path / "runs" / "exp1", tmp_path / "runs" / "exp2"
    config = json.loads((resumed / "config.json").read_text())
    assert (config["optimizer"], config["scheduler"], config["epochs"]) == ("plainsgd", "decay", 3)
    a, b = weights(straight), weights(resumed)
    assert a["epoch"] == b["epoch"] == 3
    for key, value in a["model_state_dict"].items():
        assert torch.equal(value, b["model_state_dict"][key]), key
    # The scheduler was stepped after every optimizer step (per_step): 6 batches x 3 epochs.
    assert a["scheduler_state_dict"]["last_epoch"] == b["scheduler_state_dict"]["last_epoch"] == 18
    assert a["optimizer_state_dict"]["param_groups"][0]["lr"] == pytest.approx(0.05 * 0.97**18)
    logs = [
        [json.loads(line)["val_loss"] for line in (e / "training_log.jsonl").read_text().splitlines()]
        for e in (straight, resumed)
    ]
    assert logs[0] == logs[1] and len(logs[0]) == 3

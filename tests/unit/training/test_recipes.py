"""Recipe options: label smoothing, EMA, one-cycle, warmup, flip TTA, the CPU fast path and
mynet's versions. Each is checked for what it computes, that a run with it learns, and
that an interrupted and resumed run ends bit-identical to an uninterrupted one.

Runs go through ``train.main`` in-process (the CLI's own code path, without a Python
start-up per run); a mid-epoch interruption is a real SIGTERM sent from inside an
optimizer step.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import train
from src.config import ConfigError, RunConfig
from src.models import ModelRegistry, build_model
from src.training.ema import ModelEMA
from src.training.evaluation import evaluation_forward
from src.training.fast_path import resolve_fast_path
from src.training.schedules import LinearWarmup
from tests.helpers import REPO_ROOT, assert_same_weights, load_checkpoint

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
    "--quiet",
)
MLP = ("--model", "mlp", "--model-option", "hidden_sizes=[32]")
OLD_EXPERIMENT = REPO_ROOT / "tests" / "data" / "mynet_v1_experiment"


def cli(runs: Path, *args: str) -> int:
    return train.main([*args, "--runs-dir", str(runs)])


def latest(runs: Path, name: str = "exp1") -> dict:
    return load_checkpoint(runs / name / "checkpoints" / "latest_checkpoint.pt")


# -- configuration -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "changes, message",
    [
        ({"label_smoothing": 1.0}, "label_smoothing must be a number from 0 to below 1"),
        ({"label_smoothing": -0.1}, "got -0.1"),
        ({"label_smoothing": float("nan")}, "got nan"),
        ({"label_smoothing": "0.1"}, "got '0.1'"),
        ({"ema_decay": 1.0}, "ema_decay (--ema) must be a number between 0 and 1"),
        ({"ema_decay": -0.5}, "got -0.5"),
        ({"ema_decay": True}, "got True"),
        ({"warmup_epochs": -1}, "warmup_epochs must be a non-negative integer, got -1"),
        ({"warmup_epochs": 1.5}, "got 1.5"),
        ({"warmup_epochs": 30}, "warmup_epochs (30) is longer than the run (20 epochs)"),
        ({"tta_flip": "yes"}, "tta_flip must be true or false, got 'yes'"),
        ({"scheduler": "one-cycle"}, "choose one of: none, cosine, step, plateau, onecycle"),
        ({"amp": "bf32"}, "choose one of: auto, bf16, fp16"),
    ],
)
def test_bad_recipe_values_are_refused_by_name(changes, message):
    with pytest.raises(ConfigError) as error:
        RunConfig(**changes).validate()
    assert message in str(error.value)


def test_a_config_from_before_the_recipe_options_keeps_todays_behaviour():
    saved = json.loads((OLD_EXPERIMENT / "runs" / "exp1" / "config.json").read_text())
    assert "label_smoothing" not in saved and saved["model_options"] == {"width": 2}
    config = RunConfig.from_dict(saved).validate()
    assert (config.label_smoothing, config.ema_decay, config.warmup_epochs, config.tta_flip) == (0.0, 0.0, 0, False)
    del saved["amp"]  # a record without amp was made when float32 was the only choice
    assert RunConfig.from_dict(saved).amp is None and RunConfig().amp == "auto"


def test_cli_refuses_bad_recipe_flags_and_writes_nothing(tmp_path, capsys):
    assert cli(tmp_path / "runs", *DATA, *MLP, "--ema", "nan") == 2
    assert "--ema must be a finite number" in capsys.readouterr().err
    assert cli(tmp_path / "runs", *DATA, *MLP, "--label-smoothing", "1.5") == 2
    assert "label_smoothing must be a number from 0 to below 1" in capsys.readouterr().err
    # digits must not be mirrored: flip TTA is refused before anything is written
    assert cli(tmp_path / "runs", "--dataset", "mnist-sample", *MLP, "--tta-flip", "--quiet") == 2
    err = capsys.readouterr().err
    assert "--tta-flip" in err and "'mnist-sample' uses the affine augmentation policy" in err
    assert not (tmp_path / "runs").exists()


# -- what each option computes -----------------------------------------------------------
def test_ema_update_follows_the_ramped_decay_and_copies_buffers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = ModelEMA(model, 0.99)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model[0].weight.add_(1.0)
        model[1].running_mean.add_(5.0)
    ema.update(model)  # first update: decay min(0.99, 1/10) = 0.1
    expected = 0.1 * start["0.weight"] + 0.9 * model[0].weight
    assert torch.allclose(ema.module[0].weight, expected)
    assert torch.equal(ema.module[1].running_mean, model[1].running_mean)
    assert ema.updates == 1 and ema.current_decay() == pytest.approx(2 / 11)
    ema.updates = 10_000
    assert ema.current_decay() == 0.99
    with pytest.raises(ValueError, match="between 0 and 1"):
        ModelEMA(model, 1.0)


def test_warmup_scales_only_the_step_and_restores_the_schedulers_rate():
    weight = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([weight], lr=0.4)
    seen = []
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: seen.append(opt.param_groups[0]["lr"]))
    warmup = LinearWarmup(4)
    for _ in range(6):
        with warmup.applied(optimizer):
            optimizer.step()
        assert optimizer.param_groups[0]["lr"] == 0.4  # the scheduler's value between steps
    assert seen == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.4, 0.4])
    assert warmup.state_dict() == {"warmup_steps": 4, "steps": 6} and not warmup.active


def test_flip_tta_averages_the_logits_of_both_orientations():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    images = torch.randn(2, 1, 3, 4)
    expected = (model(images) + model(images.flip(-1))) / 2
    assert torch.allclose(evaluation_forward(model, True)(images), expected)
    assert evaluation_forward(model, False) is model


def test_fast_path_is_bf16_channels_last_only_for_measured_models_on_bf16_cpus(monkeypatch):
    from src.training import fast_path

    mynet, mlp = ModelRegistry.create("mynet"), ModelRegistry.create("mlp")
    monkeypatch.setattr(fast_path, "cpu_has_native_bf16", lambda: True)
    cpu = torch.device("cpu")
    assert resolve_fast_path("auto", False, mynet, cpu)[:2] == ("bf16", True)
    assert resolve_fast_path("auto", False, mlp, cpu)[:2] == (None, False)
    assert resolve_fast_path(None, False, mynet, cpu)[:2] == (None, False)
    assert resolve_fast_path("auto", False, mynet, torch.device("meta"))[:2] == (None, False)
    monkeypatch.setattr(fast_path, "cpu_has_native_bf16", lambda: False)
    assert resolve_fast_path("auto", False, mynet, cpu)[:2] == (None, False)


# -- a planned schedule is not extended --------------------------------------------------
def test_onecycle_cannot_be_extended_past_its_plan(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert cli(runs, *DATA, *MLP, "--scheduler", "onecycle", "--epochs", "1") == 0
    before = latest(runs)
    assert cli(runs, "--resume", "exp1", "--epochs", "2", "--quiet") == 2
    assert "onecycle learning-rate schedule was planned for 1 epochs" in capsys.readouterr().err
    assert_same_weights(latest(runs)["model_state_dict"], before["model_state_dict"])  # nothing trained
    status = json.loads((runs / "exp1" / "status.json").read_text())
    assert status["state"] == "completed", "refused before the experiment was opened: its records are unchanged"


# -- mynet versions ----------------------------------------------------------------------
def test_mynet_versions_record_and_rebuild():
    new = ModelRegistry.create("mynet")
    assert new.model_config["version"] == 2 and build_model(new.model_config).model_config == new.model_config
    old = ModelRegistry.create("mynet", version=1)
    assert "version" not in old.model_config  # exactly what checkpoints before version 2 hold
    rebuilt = build_model(old.model_config)
    assert [tuple(p.shape) for p in rebuilt.parameters()] == [tuple(p.shape) for p in old.parameters()]
    with pytest.raises(ConfigError, match="mynet has versions 1, 2, 3; got --model-option version=4"):
        ModelRegistry.create("mynet", version=4)
    with pytest.raises(ConfigError, match="at least 8x8"):
        ModelRegistry.create("mynet", input_size=6)


def test_mynet_version_3_pools_before_batch_norm_and_records_its_hidden_layer():
    model = ModelRegistry.create("mynet", version=3, width=4)
    assert model.model_config == {
        "name": "mynet",
        "num_classes": 10,
        "in_channels": 1,
        "input_size": 28,
        "width": 4,
        "dropout": 0.0,
        "version": 3,
        "hidden": 128,
    }
    assert [type(layer) for layer in model.features[0]] == [nn.Conv2d, nn.MaxPool2d, nn.BatchNorm2d, nn.ReLU]
    assert [m.out_features for m in model.classifier if isinstance(m, nn.Linear)] == [128, 10]
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    rebuilt = build_model(model.model_config)
    assert rebuilt.model_config == model.model_config
    assert [tuple(p.shape) for p in rebuilt.parameters()] == [tuple(p.shape) for p in model.parameters()]
    single = ModelRegistry.create("mynet", version=3, width=4, hidden=0, dropout=0.5, input_size=16, in_channels=3)
    assert [m.out_features for m in single.classifier if isinstance(m, nn.Linear)] == [10]
    assert single(torch.zeros(2, 3, 16, 16)).shape == (2, 10)
    # a run asking for version 3 records it (a new run without a version is still version 2)
    assert ModelRegistry.create("mynet").model_config["version"] == 2


@pytest.mark.parametrize(
    "options, message",
    [
        ({"hidden": 16}, "hidden is a mynet version 3 option; got hidden=16 with version 2"),
        ({"hidden": 16, "version": 1}, "with version 1. Add --model-option version=3"),
        ({"hidden": -1, "version": 3}, "--model-option hidden for mynet must be an integer >= 0, got -1"),
        ({"hidden": 1.5, "version": 3}, "got 1.5"),
        ({"hidden": True, "version": 3}, "got True"),
        ({"hidden": "wide", "version": 3}, "got 'wide'"),
        ({"hidden": 10**9, "version": 3}, "use a smaller width or hidden"),
    ],
)
def test_mynet_version_3_refuses_bad_hidden_layers(options, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        ModelRegistry.create("mynet", **options)

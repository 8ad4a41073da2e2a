"""The start plan, in-process: every refusal that the command-line tests reach through a
subprocess, each asserting its message and that the runs directory is byte-identical
afterwards (the plan writes nothing), plus what an accepted plan says."""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
from pathlib import Path
from typing import Dict, List

import pytest
import torch.nn as nn

from src.config import ConfigError
from src.run import plan as plan_module
from src.run.plan import StartPlan, make_plan
from src.training.checkpoint import CheckpointError
from src.training.distributed import Distributed
from src.training.experiment import ExperimentError

from .conftest import TINY


def tree(root: Path) -> Dict[str, object]:
    """Every entry under ``root`` (or the path itself): kind and bytes, links as their target."""
    root = Path(root)
    if not root.exists() and not root.is_symlink():
        return {}
    entries = {}
    for path in [root, *sorted(root.rglob("*"))] if root.is_dir() else [root]:
        key = str(path.relative_to(root))
        if path.is_symlink():
            entries[key] = ("link", os.readlink(path))
        elif path.is_dir():
            entries[key] = ("dir", sorted(p.name for p in path.iterdir()))
        else:
            entries[key] = ("file", path.read_bytes())
    return entries


def plan(runs: Path, overrides=None, resume=None, fork=None, dist=None, lines=None):
    return make_plan(
        dist or Distributed.from_environment("cpu"),
        dict(overrides or {}),
        str(runs),
        resume,
        fork,
        log=(lines.append if lines is not None else lambda *a: None),
        progress=False,
    )


def refused(runs: Path, error, match: str, overrides=None, resume=None, fork=None, watch=None, **kwargs) -> str:
    """The plan's refusal (``error`` matching ``match``), with nothing under ``watch`` changed."""
    watched = Path(watch or runs)
    before = tree(watched)
    with pytest.raises(error, match=match) as caught:
        plan(runs, overrides, resume, fork, **kwargs)
    assert tree(watched) == before, "a refused plan wrote nothing"
    return str(caught.value)


def edit_config(runs: Path, experiment: str, **changes) -> None:
    path = runs / experiment / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


# -- the runs directory and the experiment names ------------------------------------------


def test_runs_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "runs").write_text("not a directory")
    refused(tmp_path / "runs", ExperimentError, "is a file, not a directory; pass a directory", TINY, watch=tmp_path)


def test_runs_dir_through_a_broken_link_is_refused(tmp_path):
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    refused(tmp_path / "gone" / "runs", ExperimentError, "broken symbolic link", TINY, watch=tmp_path)


def test_runs_dir_without_a_name_is_refused(tmp_path):
    refused("  ", ExperimentError, "--runs-dir must name a directory", TINY, watch=tmp_path)


def test_read_only_runs_dir_is_refused(tmp_path, monkeypatch):
    (tmp_path / "locked").mkdir(mode=0o500)
    monkeypatch.setattr(plan_module.os, "access", lambda path, mode: False)  # as a user who is not root sees it
    refused(tmp_path / "locked" / "runs", ExperimentError, "is not writable", TINY, watch=tmp_path)


def test_missing_experiment_is_refused(runs):
    refused(runs, ExperimentError, "'exp7' does not exist", resume="exp7")


@pytest.mark.parametrize("name", ["../../etc", "/tmp"])
def test_invalid_experiment_name_is_refused(runs, name):
    refused(runs, ExperimentError, f"Invalid experiment name '{name}'", fork=name)


def test_resume_and_fork_together_are_refused(runs):
    refused(runs, ExperimentError, r"Give either --resume or --fork, not both", resume="exp1", fork="exp2")


def test_running_experiment_is_refused(runs):
    with open(runs / "exp1" / ".lock", "w") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.write("4242")
        lock.flush()
        refused(runs, ExperimentError, "'exp1' is in use by process 4242; wait for it", {"epochs": 3}, resume="exp1")


# -- the configuration --------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, match",
    [
        ({"dataset": "imagenet"}, "Unknown dataset 'imagenet'; choose one of: "),
        ({"model": "gpt5"}, "Unknown model 'gpt5'; choose one of: "),
        ({"epochs": 0}, "epochs must be a positive integer, got 0"),
        ({"batch_size": -3}, "batch_size must be a positive integer, got -3"),
        ({"optimizer": "lion"}, "Unknown optimizer 'lion'"),
        ({"grad_accum": 0}, "grad_accum must be a positive integer, got 0"),
        ({"grad_clip": -1.0}, "grad_clip must be a non-negative finite number"),
    ],
    ids=["dataset", "model", "epochs", "batch-size", "optimizer", "grad-accum", "grad-clip"],
)
def test_a_bad_option_of_a_new_run_is_refused(tmp_path, options, match):
    refused(tmp_path / "runs", ConfigError, match, {**TINY, **options}, watch=tmp_path)


def test_resume_refuses_a_changed_setting(runs):
    message = refused(
        runs, ConfigError, r"cannot change lr \(run has 0.001, given 0.5\)", {"lr": 0.5, "epochs": 3}, resume="exp1"
    )
    assert "--fork exp1" in message


def test_resume_refuses_a_new_name(runs):
    refused(runs, ConfigError, "cannot change name", {"epochs": 2, "name": "other"}, resume="base")


def test_a_new_run_may_not_take_a_used_name(runs):
    refused(runs, ConfigError, "The name 'base' is already used by exp1", {**TINY, "name": "base"})


def test_a_name_two_runs_record_is_ambiguous(runs):
    edit_config(runs, "exp2", name="base")
    refused(runs, ExperimentError, "recorded by exp1 and exp2", {"epochs": 4}, resume="base")


def test_an_unusable_saved_configuration_is_refused(runs):
    edit_config(runs, "exp1", epochs=0)
    refused(
        runs,
        ConfigError,
        "config.json is not a usable configuration: epochs must be a positive integer",
        {"epochs": 3},
        resume="exp1",
    )


def test_a_run_of_a_custom_model_cannot_be_resumed_by_name(runs):
    edit_config(runs, "exp1", model="custom:TinyNet")
    refused(runs, ConfigError, "custom:TinyNet", {"epochs": 2}, resume="exp1")


def test_tensorboard_every_without_tensorboard_is_refused(runs):
    refused(
        runs,
        ConfigError,
        "--tensorboard-every 5 has no effect while TensorBoard logging is off",
        {**TINY, "tensorboard_every": 5},
    )


def test_tensorboard_without_its_package_is_refused(runs, monkeypatch):
    def missing(name, *args, **kwargs):
        raise ModuleNotFoundError(f"No module named {name!r}")

    monkeypatch.setattr("src.training.tb_logger.importlib.import_module", missing)
    refused(runs, ConfigError, "--tensorboard needs the tensorboard package", {**TINY, "tensorboard": True})


# -- the data and the model -----------------------------------------------------------------


@pytest.mark.parametrize(
    "options, match",
    [
        ({"dataset_options": {"num_samples": 64, "colour": 1}}, "dataset 'synthetic' has no option colour"),
        ({"dataset_options": {"num_samples": 64, "image_size": 32}}, "--image-size is for image folders"),
        ({"dataset_options": {"num_samples": 64, "seed": 5}}, "--dataset-option seed cannot be given .* from --seed"),
        ({"model_options": {"num_classes": 3}}, "--model-option num_classes cannot be given .* from the data"),
    ],
    ids=["unknown-option", "image-size", "dataset-seed", "model-num-classes"],
)
def test_bad_data_or_model_options_are_refused(runs, options, match):
    refused(runs, ConfigError, match, {**TINY, **options})


def test_resume_on_other_data_is_refused(runs):
    recorded = json.loads((runs / "exp1" / "config.json").read_text())["data_fingerprint"]
    edit_config(runs, "exp1", data_fingerprint={**recorded, "sha256": "0" * 64})
    message = refused(runs, ConfigError, "--resume exp1 would train on different data", {"epochs": 2}, resume="exp1")
    assert message.count("sha256") == 2 and "--fork exp1" in message


# -- the checkpoint -------------------------------------------------------------------------


def test_fork_to_another_model_shape_is_refused(runs):
    refused(
        runs,
        CheckpointError,
        r"was saved from a different model \(hidden_sizes: \[16\] vs \[32\]\)",
        {"model_options": {"hidden_sizes": [32]}},
        fork="exp1",
    )


def test_fork_of_a_run_without_checkpoints_is_refused(runs):
    for path in (runs / "exp1" / "checkpoints").iterdir():
        path.unlink()
    refused(runs, CheckpointError, "Experiment exp1 has no checkpoint yet; there is nothing to fork from", fork="exp1")


def test_resume_whose_checkpoints_are_gone_is_refused(runs):
    for path in (runs / "exp1" / "checkpoints").iterdir():
        path.unlink()
    refused(
        runs,
        CheckpointError,
        r"exp1 records 1 finished epoch\(s\) in training_log.jsonl but no checkpoint",
        {"epochs": 2},
        resume="exp1",
    )


def test_resume_with_only_damaged_checkpoints_is_refused(runs):
    for path in (runs / "exp1" / "checkpoints").glob("*.pt"):
        path.write_bytes(b"damaged")
    lines: List[str] = []
    refused(runs, CheckpointError, "Experiment exp1 has no valid checkpoint", {"epochs": 2}, resume="exp1", lines=lines)
    assert any(line.startswith("Warning: skipping damaged checkpoint exp1/checkpoints/") for line in lines)


def test_checkpoints_that_are_a_file_are_refused(runs):
    checkpoints = runs / "exp1" / "checkpoints"
    for path in checkpoints.iterdir():
        path.unlink()
    checkpoints.rmdir()
    checkpoints.write_text("not a directory")
    refused(runs, ExperimentError, "checkpoints is a file, not a directory; move it away", {"epochs": 2}, resume="exp1")


def test_config_file_that_disagrees_with_the_checkpoint_is_refused(runs):
    edit_config(runs, "exp1", batch_size=32)
    refused(
        runs,
        CheckpointError,
        r"was written with a different configuration \(batch_size\) than .*exp1/config.json",
        {"epochs": 2},
        resume="exp1",
    )


def test_mid_epoch_checkpoint_of_another_process_count_is_refused(runs, monkeypatch):
    real = plan_module.latest_valid_checkpoint

    def mid_epoch_of_two(*args):
        found = real(*args)
        return found._replace(payload={**found.payload, "mid_epoch": True, "world_size": 2})

    monkeypatch.setattr(plan_module, "latest_valid_checkpoint", mid_epoch_of_two)
    refused(
        runs,
        CheckpointError,
        r"was saved mid-epoch by a run of 2 process\(es\) and this run has 1",
        {"epochs": 2},
        resume="exp1",
    )


# -- what is left to do ---------------------------------------------------------------------


def test_onecycle_cannot_be_extended_past_its_plan(runs):
    refused(
        runs,
        ConfigError,
        "exp2's onecycle learning-rate schedule was planned for 1 epochs; extending it to 2",
        {"epochs": 2},
        resume="exp2",
    )


def test_fork_to_no_more_epochs_than_the_parent_is_refused(runs):
    refused(
        runs,
        ConfigError,
        r"exp1 is at epoch 1 and --epochs is 1; pass --epochs N with N > 1",
        {"epochs": 1},
        fork="exp1",
    )


def test_resume_of_a_complete_run_plans_nothing_to_do(runs):
    before = tree(runs)
    start, _ = plan(runs, {}, resume="exp1")
    assert tree(runs) == before
    assert start.kind == "resume" and start.finished.startswith("exp1 is complete at epoch 1 (--epochs 1)")


def test_resume_of_a_run_that_stopped_early_plans_nothing_to_do(runs):
    before = tree(runs)
    start, _ = plan(runs, {}, resume="exp4")
    assert tree(runs) == before
    assert start.finished.startswith("exp4 stopped early at epoch 3") and "--patience" in start.finished


# -- accepted plans -------------------------------------------------------------------------


def test_plans_of_a_new_run_a_resume_and_a_fork_write_nothing(runs):
    before = tree(runs)
    new, parts = plan(runs, {**TINY, "epochs": 2})
    resumed, _ = plan(runs, {"epochs": 3}, resume="base")
    forked, _ = plan(runs, {"lr": 0.01}, fork="exp1")
    assert tree(runs) == before
    assert isinstance(new, StartPlan) and new.kind == "new" and new.found is None and new.source is None
    assert new.config.epochs == 2 and new.config.data_fingerprint == parts.dataset.fingerprint()
    assert (resumed.kind, resumed.resume, resumed.config.epochs, resumed.payload["epoch"]) == ("resume", "exp1", 3, 1)
    assert (forked.kind, forked.fork, forked.config.lr, forked.config.epochs) == ("fork", "exp1", 0.01, 2)
    assert forked.finished is None and forked.found.path.name == "latest_checkpoint.pt"
    with pytest.raises(dataclasses.FrozenInstanceError):
        forked.kind = "new"  # read-only


def test_another_process_count_is_a_note(runs, monkeypatch):
    class TwoProcesses:
        is_main, world_size, enabled = True, 2, False

    lines: List[str] = []
    start, _ = plan(runs, {"epochs": 2}, resume="exp1", dist=TwoProcesses(), lines=lines)
    assert start.notes == tuple(line for line in lines if line.startswith("Note:"))
    assert start.notes[0].startswith("Note: exp1 was trained by 1 process(es) and continues with 2")


# -- a fork that saved no checkpoint of its own -------------------------------------------


def unsaved_fork(runs: Path) -> Path:
    """exp3 (a fork of exp1) as a kill before its first save leaves it: config and lineage only."""
    fork = runs / "exp3"
    for path in sorted(fork.rglob("*"), reverse=True):
        if path.is_dir():
            path.rmdir()
        elif path.name not in ("config.json", "lineage.json"):
            path.unlink()
    return fork


def test_unsaved_fork_plans_to_start_again_from_its_parent(runs):
    unsaved_fork(runs)
    before = tree(runs)
    start, _ = plan(runs, {}, resume="exp3")
    assert tree(runs) == before
    assert (start.kind, start.into, start.fork, start.resume, start.config.epochs) == ("fork", "exp3", "exp1", None, 2)
    assert start.notes == (
        "exp3 is a fork of exp1 that saved no checkpoint of its own; it starts again from exp1's checkpoint.",
    )


def test_unsaved_fork_whose_parent_moved_on_is_refused(runs):
    lineage = unsaved_fork(runs) / "lineage.json"
    lineage.write_text(json.dumps({**json.loads(lineage.read_text()), "sha256": "f" * 64}))
    message = refused(
        runs, CheckpointError, "exp3 was forked from a checkpoint of exp1 .* no longer exp1's newest", resume="exp3"
    )
    assert "python train.py --fork exp1" in message


# -- a model that cannot take the data (the dry forward pass) -------------------------------


@pytest.mark.parametrize(
    "factory, match",
    [
        (
            lambda num_classes, **_: nn.Linear(3, num_classes),
            r"Model 'plan_test_model' cannot take the inputs of 'synthetic' \(shape \(1, 28, 28\)\)",
        ),
        (
            lambda num_classes, **_: nn.Sequential(nn.Flatten(), nn.Linear(784, 7)),
            r"Model 'plan_test_model' returns outputs of shape \(2, 7\) for 2 images; expected \(2, 10\)",
        ),
    ],
    ids=["forward-fails", "wrong-output-shape"],
)
def test_model_that_cannot_take_the_data_is_refused(runs, monkeypatch, factory, match):
    from src.models import ModelRegistry

    monkeypatch.setitem(ModelRegistry._entries, "plan_test_model", factory)
    refused(runs, ConfigError, match, {**TINY, "model": "plan_test_model", "model_options": {}})


# -- the experiment a resume reopens --------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "training_curves.png",
        ".lock",
        "status.json",
        "checkpoints/best_model.pt",
        "checkpoints/epoch_1.pt.manifest.json",
    ],
)
def test_a_directory_where_a_run_file_belongs_is_refused(runs, target):
    path = runs / "exp1" / target
    if path.exists():
        path.unlink()
    path.mkdir()
    refused(
        runs,
        ExperimentError,
        f"exp1/{target} is a directory, not the file this run keeps there",
        {"epochs": 3},
        resume="exp1",
    )


def test_an_unsaved_fork_whose_checkpoints_are_a_file_is_refused(runs):
    (unsaved_fork(runs) / "checkpoints").write_text("not a directory")
    refused(
        runs,
        ExperimentError,
        "exp3/checkpoints is a file, not a directory; move it away and resume again",
        resume="exp3",
    )


@pytest.mark.parametrize("how", ["resume", "fork"])
def test_a_checkpoint_of_a_newer_format_is_refused_before_anything_is_written(runs, how):
    """A newer exptrain's checkpoint: one clear refusal naming the file, from the plan (the
    Trainer's own check ran only after the experiment was opened and marked failed)."""
    import torch

    from src.training.checkpoint import CheckpointManager

    manager = CheckpointManager(runs / "exp1" / "checkpoints")
    for path in sorted((runs / "exp1" / "checkpoints").glob("*.pt")):
        payload = torch.load(path, map_location="cpu", weights_only=True)
        payload["format_version"] = 2
        manager.write_bytes(manager.serialize(payload), path, payload["epoch"], payload["global_step"])
    message = refused(
        runs,
        CheckpointError,
        "has format version 2, newer than the 1 this exptrain reads",
        {"epochs": 2},
        **{how: "exp1"},
    )
    assert "checkpoints/" in message and ".pt has format version" in message

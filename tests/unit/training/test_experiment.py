"""ExperimentManager: numbering, validation, locks, concurrent creation."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from src.training import ExperimentError, ExperimentManager


def test_new_experiments_are_numbered_and_laid_out(tmp_path):
    first = ExperimentManager(base_dir=str(tmp_path / "runs"), lock=False)
    second = ExperimentManager(base_dir=str(tmp_path / "runs"), lock=False)
    assert Path(first.experiment_dir).name == "exp1" and Path(second.experiment_dir).name == "exp2"
    assert Path(second.checkpoints_dir) == Path(second.experiment_dir) / "checkpoints"
    assert Path(second.checkpoints_dir).is_dir()
    for path in (second.log_file, second.plot_file, second.config_file):
        assert Path(path).parent == Path(second.experiment_dir)


def test_numbers_are_never_reused_below_the_highest(tmp_path):
    runs = tmp_path / "runs"
    for name in ("exp1", "exp7"):
        (runs / name).mkdir(parents=True)
    assert Path(ExperimentManager(str(runs), lock=False).experiment_dir).name == "exp8"


def test_resume_reopens_in_place_and_missing_lists_existing(tmp_path):
    runs = tmp_path / "runs"
    created = ExperimentManager(str(runs), lock=False)
    reopened = ExperimentManager(str(runs), resume_exp="exp1", lock=False)
    assert reopened.experiment_dir == created.experiment_dir
    with pytest.raises(ExperimentError, match=r"'exp9' does not exist .*existing experiments: exp1"):
        ExperimentManager(str(runs), resume_exp="exp9")
    with pytest.raises(ExperimentError, match="not both"):
        ExperimentManager(str(runs), resume_exp="exp1", fork_exp="exp1")


def test_fork_creates_new_experiment_with_parent_checkpoint_and_lineage(tmp_path):
    import hashlib

    import torch

    from src.models import ModelRegistry
    from src.training import CheckpointManager

    runs = tmp_path / "runs"
    parent = ExperimentManager(str(runs), lock=False)
    with pytest.raises(ExperimentError, match="'exp1' has no valid checkpoint; there is nothing to fork from"):
        ExperimentManager(str(runs), fork_exp="exp1", lock=False)
    assert sorted(p.name for p in runs.iterdir()) == ["exp1"], "a refused fork leaves nothing behind"
    model = ModelRegistry.create("mlp", hidden_sizes=[4])
    CheckpointManager(parent.checkpoints_dir).save_latest_checkpoint(model, None, 3, 0.5, 50.0, {"global_step": 30})
    fork = ExperimentManager(str(runs), fork_exp="exp1", lock=False)
    assert Path(fork.experiment_dir).name == "exp2" and fork.parent_dir == runs / "exp1"
    assert fork.parent_checkpoint.name == "latest_checkpoint.pt" and fork.parent_state["epoch"] == 3
    assert all(torch.equal(fork.parent_state["model_state_dict"][k], v) for k, v in model.state_dict().items())
    lineage = json.loads((Path(fork.experiment_dir) / "lineage.json").read_text())
    digest = hashlib.sha256(fork.parent_checkpoint.read_bytes()).hexdigest()
    assert lineage == {
        "parent": "exp1",
        "epoch": 3,
        "step": 30,
        "checkpoint": str(fork.parent_checkpoint),
        "sha256": digest,
    }


@pytest.mark.parametrize("name", ["../../etc", "/etc", "a/b", "", ".", "..", "exp1/../../x", "~root", "a\\b"])
def test_bad_names_are_refused_before_touching_disk(tmp_path, name):
    runs = tmp_path / "runs"
    runs.mkdir()
    before = sorted(tmp_path.rglob("*"))
    for kwargs in ({"resume_exp": name}, {"fork_exp": name}):
        with pytest.raises(ExperimentError, match="Invalid experiment name"):
            ExperimentManager(str(runs), **kwargs)
    assert sorted(tmp_path.rglob("*")) == before


def test_symlink_out_of_runs_is_refused(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (runs / "exp1").symlink_to(outside)
    with pytest.raises(ExperimentError, match="points outside"):
        ExperimentManager(str(runs), resume_exp="exp1")
    assert list(outside.iterdir()) == []


def test_status_records(tmp_path):
    manager = ExperimentManager(str(tmp_path), lock=False)
    manager.write_status("failed", error="boom")
    status = manager.read_status()
    assert status["state"] == "failed" and status["error"] == "boom" and status["pid"] == os.getpid()


def test_leftover_temporary_files_are_removed_by_the_lock_holder(tmp_path):
    manager = ExperimentManager(str(tmp_path), lock=False)
    leftover = Path(manager.experiment_dir) / ".training_log.jsonl.tmp-99-abcd"
    leftover.write_text("half")
    ExperimentManager(str(tmp_path), resume_exp=manager.name).release()
    assert not leftover.exists()

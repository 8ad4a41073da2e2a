"""The torch-free helpers the tools use (src/cli/common.py, src/layout.py) agree with the
experiment manager (src/training/experiment.py)."""

from __future__ import annotations

import pytest

from src import layout
from src.cli import common
from src.cli.common import ToolError, checkpoint_file_name, class_names_for, find_experiment
from src.training import checkpoint, experiment


def test_file_names_and_name_rule_match_the_experiment_manager():
    for name in ("CONFIG_FILE", "STATUS_FILE", "LINEAGE_FILE", "LOG_FILE", "CHECKPOINTS_DIR", "LOCK_FILE"):
        assert getattr(common, name) == getattr(experiment, name)
    assert common.NAME_PATTERN.pattern == experiment.NAME_PATTERN.pattern
    assert checkpoint_file_name("best") == checkpoint.BEST_MODEL
    assert checkpoint_file_name("epoch_12") == checkpoint.EPOCH_CHECKPOINT.format(12)


def test_experiment_order_matches_the_experiment_manager(tmp_path):
    for name in ("exp10", "exp2", "exp1", "zeta", "alpha", ".hidden"):
        (tmp_path / name).mkdir()
    assert common.experiment_names(tmp_path) == experiment.list_experiments(tmp_path)


@pytest.mark.parametrize("lock_table", [False, True])
def test_without_a_lock_table_or_lock_file_the_recorded_pid_decides(lock_table, tmp_path, monkeypatch):
    import os

    if not lock_table:
        monkeypatch.setattr(layout, "PROC_LOCKS", tmp_path / "no-such-file")
        (tmp_path / ".lock").write_text(str(os.getpid()))
    assert common.lock_holder(tmp_path, status={"state": "running", "pid": os.getpid()}) == str(os.getpid())
    assert common.lock_holder(tmp_path, status={"state": "running", "pid": 2**22 + 12345}) is None
    assert common.lock_holder(tmp_path, status={"state": "completed", "pid": os.getpid()}) is None


def test_class_names():
    assert class_names_for("fashion_mnist", 10)[:2] == ["T-shirt/top", "Trouser"]
    assert class_names_for("mnist-sample", 10) == [str(d) for d in range(10)]
    assert class_names_for("synthetic", 3) == ["0", "1", "2"]

    class WithNames:
        class_names = ("cat", "dog")

    assert class_names_for("anything", 2, WithNames) == ["cat", "dog"]
    assert class_names_for("anything", 3, WithNames) == ["0", "1", "2"], "names of the wrong length are not used"


@pytest.mark.parametrize("name", ["worst", "epoch_0", "epoch_-1", "epoch_x", "", "best_model.pt", "../best"])
def test_bad_checkpoint_names(name):
    with pytest.raises(ToolError, match="use best, latest or epoch_N"):
        checkpoint_file_name(name)


@pytest.mark.parametrize("name", ["../exp1", "/etc", "a/b", "", ".", 7])
def test_bad_experiment_names(name, tmp_path):
    with pytest.raises(ToolError, match="Invalid experiment name"):
        find_experiment(tmp_path, name)


def test_missing_experiment_lists_the_existing_ones(tmp_path):
    (tmp_path / "exp1").mkdir()
    with pytest.raises(ToolError, match="'exp9' does not exist .*existing experiments: exp1"):
        find_experiment(tmp_path, "exp9")

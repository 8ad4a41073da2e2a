"""The new models through ``train.py``, as a user runs them: the data arguments come from
the data set, a model the data is too small for is refused before an experiment exists,
and a resumed run continues exactly (batch norm statistics included)."""

from __future__ import annotations

import pytest

from tests.helpers import assert_same_weights, load_checkpoint, run_cli

DATA = ("--dataset", "synthetic", "--dataset-option", "num_samples=64", "--batch-size", "16", "--quiet")


@pytest.mark.slow  # three short runs of train.py, about 12 s on the two-core CI machine
def test_resnet_sized_from_the_data_and_resumed_exactly(tmp_path):
    args = (
        *DATA,
        "--dataset-option",
        "input_shape=[3,32,32]",
        "--dataset-option",
        "num_classes=5",
        "--model",
        "resnet20",
        "--model-option",
        "width=4",
    )
    run_cli(*args, "--epochs", "2", "--runs-dir", "straight", cwd=tmp_path)
    run_cli(*args, "--epochs", "1", "--runs-dir", "resumed", cwd=tmp_path)
    run_cli("--resume", "exp1", "--epochs", "2", "--runs-dir", "resumed", "--quiet", cwd=tmp_path)

    straight = load_checkpoint(tmp_path / "straight" / "exp1" / "checkpoints" / "latest_checkpoint.pt")
    resumed = load_checkpoint(tmp_path / "resumed" / "exp1" / "checkpoints" / "latest_checkpoint.pt")
    assert straight["model_config"] == {
        "name": "resnet20",
        "num_classes": 5,
        "in_channels": 3,
        "input_size": 32,
        "width": 4,
    }
    assert straight["epoch"] == resumed["epoch"] == 2
    assert any(key.endswith("running_mean") for key in straight["model_state_dict"])
    assert_same_weights(straight["model_state_dict"], resumed["model_state_dict"])


def test_data_too_small_for_the_model_is_refused_before_the_experiment(tmp_path):
    result = run_cli(
        *DATA,
        "--dataset-option",
        "input_shape=[3,4,4]",
        "--model",
        "resnet18",
        "--runs-dir",
        "runs",
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "resnet18's input_size must be an integer >= 8 (images of at least 8x8 pixels), got 4." in result.stderr
    assert not (tmp_path / "runs").exists()

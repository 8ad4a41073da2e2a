"""train.py's flags against a --config file, through ``train.main`` in-process: a flag switching
off the file's TensorBoard logging, and an augmentation policy never dropped silently."""

from __future__ import annotations

from pathlib import Path

import pytest

import train

DATA = (
    "--dataset",
    "synthetic",
    "--dataset-option",
    "num_samples=80",
    "--dataset-option",
    "num_classes=4",
    "--dataset-option",
    "input_shape=[1,8,8]",
    "--batch-size",
    "8",
    "--model",
    "mlp",
    "--model-option",
    "hidden_sizes=[16]",
    "--quiet",
    "--device",
    "cpu",
)


def cli(runs: Path, *args: str) -> int:
    return train.main([*args, "--runs-dir", str(runs)])


def test_no_tensorboard_flag_overrides_a_config_file_that_logs(tmp_path, capsys):
    """FAILS ON MAIN: a shared recipe file sets ``tensorboard: true`` and
    ``tensorboard_every: 5``; ``--no-tensorboard`` (flags win over the file, README) is
    refused with "--tensorboard-every 5 has no effect while TensorBoard logging is off",
    naming a flag the user never gave: no run can opt out of the file's logging."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("tensorboard: true\ntensorboard_every: 5\nepochs: 1\n")
    runs = tmp_path / "runs"
    assert cli(runs, *DATA, "--config", str(recipe), "--no-tensorboard") == 0, capsys.readouterr().err
    assert not (runs / "exp1" / "tensorboard").exists()


@pytest.mark.parametrize(
    "recipe, flags",
    [
        ("augment: false\n", ("--augment", "affine")),
        ("augment: false\naugmentation: affine\n", ()),
    ],
    ids=["flag-vs-file", "within-the-file"],
)
def test_augment_policy_is_never_dropped_silently_by_a_config_file(tmp_path, capsys, recipe, flags):
    """FAILS ON MAIN: c465228 refuses ``--augment affine --no-augment``, but the same
    contradiction through a ``--config`` file (``augment: false``) trains with
    "augmentation off" and exit 0, recording ``augment: false, augmentation: affine``;
    with the flag, the file even beats the command line. Refuse it (exit 2) or apply it."""
    path = tmp_path / "recipe.yaml"
    path.write_text(recipe + "epochs: 1\n")
    runs = tmp_path / "runs"
    code = cli(runs, *DATA, "--config", str(path), *flags)
    if code == 0:
        assert "augmentation off" not in capsys.readouterr().out
    else:
        assert code == 2 and "contradict" in capsys.readouterr().err

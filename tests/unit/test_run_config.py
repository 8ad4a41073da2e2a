"""RunConfig's field metadata (src/config.py) and what is generated from it: the key
lists, the parser, the --config keys, the Trainer arguments; the rules checked once on
the merged configuration, whatever the source (flags, --config file, Python)."""

from __future__ import annotations

import dataclasses

import pytest

import train
from src.cli.train import finite_float_flags
from src.config import (
    DATA_KEYS,
    FIELDS,
    LEGACY_DEFAULTS,
    LOCATION_OPTIONS,
    RECORDED_KEYS,
    RESUME_MUTABLE_KEYS,
    ConfigError,
    RunConfig,
    trainer_options,
)
from src.config_file import CONFIG_FILE_KEYS, check_config_values, read_config_file
from src.training.run import run_training

TINY = (
    "--dataset",
    "synthetic",
    "--dataset-option",
    "num_samples=64",
    "--model",
    "mlp",
    "--model-option",
    "hidden_sizes=[8]",
    "--quiet",
    "--checkpoint-interval",
    "0",
)


# -- the lists generated from the metadata are the ones written out before ----------------
def test_generated_key_lists_are_the_hand_written_ones():
    assert RESUME_MUTABLE_KEYS == {
        "epochs",
        "patience",
        "save_frequency",
        "keep_last",
        "device",
        "data_dir",
        "compile",
        "checkpoint_interval",
        "notes",
        "threads",
        "tensorboard",
        "tensorboard_every",
    }
    assert set(DATA_KEYS) == {
        "dataset",
        "batch_size",
        "seed",
        "augment",
        "augmentation",
        "reapply_transforms",
        "dataset_options",
    }
    assert RECORDED_KEYS == {"data_fingerprint"} and LEGACY_DEFAULTS == {"amp": None}
    assert LOCATION_OPTIONS == {"root", "cache_dir", "workers", "progress", "memory_budget_mb", "download", "mirrors"}
    assert finite_float_flags() == {
        "lr": "--lr",
        "weight_decay": "--weight-decay",
        "grad_clip": "--grad-clip",
        "checkpoint_interval": "--checkpoint-interval",
        "label_smoothing": "--label-smoothing",
        "ema_decay": "--ema",
    }


def test_every_option_a_user_chooses_has_a_flag_and_a_file_key():
    chosen = {f.name for f in dataclasses.fields(RunConfig)} - RECORDED_KEYS
    assert set(CONFIG_FILE_KEYS) == chosen == set(train.OPTIONS.values()) | set(train.SPECIAL_OPTIONS)
    parser = train.build_parser()
    dests = {action.dest for action in parser._actions}
    assert chosen <= dests
    groups = {group.title for group in parser._action_groups}
    assert {info["group"] for name, info in FIELDS.items() if name in chosen} <= groups


def test_help_shows_each_default_from_the_field():
    parser = train.build_parser()
    helps = {action.option_strings[0]: action.help for action in parser._actions if action.option_strings}
    defaults = RunConfig()
    assert helps["--epochs"].endswith(f"(default {defaults.epochs})")
    assert helps["--lr"].endswith("(default 0.001)") and helps["--grad-clip"].endswith("(default 0)")
    assert helps["--checkpoint-interval"].endswith("(default 300)") and helps["--ema"].endswith("(default off)")
    assert helps["--optimizer"] == "adamw, adam, sgd (default adamw)"
    assert "none, cosine, step, plateau, onecycle" in helps["--scheduler"]


def test_trainer_options_are_the_fields_passed_to_the_trainer_as_they_are():
    config = RunConfig(grad_accum=2, ema_decay=0.5, warmup_epochs=1)
    assert trainer_options(config) == {
        "patience": 0,
        "compile_model": False,
        "grad_accum_steps": 2,
        "grad_clip": 0.0,
        "checkpoint_interval": 300.0,
        "ema_decay": 0.5,
        "warmup_epochs": 1,
        "tta_flip": False,
    }


def test_a_validation_error_names_its_field():
    with pytest.raises(ConfigError) as caught:
        RunConfig(warmup_epochs=30, epochs=10).validate()
    assert caught.value.key == "warmup_epochs"
    with pytest.raises(ConfigError) as caught:
        RunConfig(optimizer="lion").validate()
    assert caught.value.key == "optimizer" and "choose one of: adamw, adam, sgd" in str(caught.value)


# -- bug (a): a --config file's keys are checked together, with the command line ---------------
def test_a_config_file_warmup_longer_than_the_default_epochs_is_accepted(tmp_path, monkeypatch):
    """Was refused: each file key was validated alone against the defaults (epochs 20)."""
    path = tmp_path / "recipe.yaml"
    path.write_text("epochs: 30\nwarmup_epochs: 25\n")
    check_config_values(path, read_config_file(path))  # the file on its own
    asked = {}

    def fake_run_training(overrides, **kwargs):
        asked.update(overrides)
        RunConfig(**overrides).validate()
        return {"nothing_to_do": True}

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("src.run.run_training", fake_run_training)
    assert train.main([*TINY, "--config", str(path)]) == 0
    assert asked["epochs"] == 30 and asked["warmup_epochs"] == 25
    # The file's warmup against the command line's epochs: checked on the merged options too.
    path.write_text("warmup_epochs: 25\n")
    assert train.main([*TINY, "--config", str(path), "--epochs", "30"]) == 0


def test_a_config_file_warmup_longer_than_the_run_is_refused_naming_file_and_key(tmp_path, monkeypatch, capsys):
    path = tmp_path / "recipe.yaml"
    path.write_text("epochs: 30\nwarmup_epochs: 31\n")
    monkeypatch.chdir(tmp_path)
    assert train.main([*TINY, "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"Error: --config {path}: warmup_epochs: warmup_epochs (31) is longer than the run (30 "), err
    path.write_text("warmup_epochs: 25\n")
    assert train.main([*TINY, "--config", str(path), "--epochs", "10"]) == 2
    assert "warmup_epochs (25) is longer than the run (10 epochs)" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


# -- bug (b): Python's run_training refuses what the command line refuses ---------------------
def test_run_training_refuses_augment_off_with_a_policy_like_the_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert train.main([*TINY, "--no-augment", "--augment", "crop-flip"]) == 2
    cli_message = capsys.readouterr().err.strip()
    with pytest.raises(ConfigError) as caught:
        run_training(
            {"dataset": "synthetic", "model": "mlp", "augment": False, "augmentation": "crop-flip"},
            runs_dir=str(tmp_path / "runs"),
            show_progress=False,
        )
    assert cli_message == f"Error: {caught.value}"
    assert "contradict" in cli_message and "crop-flip" in cli_message
    assert not (tmp_path / "runs").exists()

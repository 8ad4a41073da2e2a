"""--config FILE (YAML / JSON), the shipped recipes in configs/, and run names (--name, --notes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import train
from src.config import ConfigError, RunConfig
from src.config_file import CONFIG_FILE_KEYS, check_config_values, merge_config_values, read_config_file
from src.run_names import name_problem, resolve_experiment
from tests.helpers import Result, REPO_ROOT

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
RECIPES = sorted((REPO_ROOT / "configs").glob("*.yaml"))


def one_line_error(result: Result) -> str:
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# -- the recipes ----------------------------------------------------------------------
def test_recipes_are_shipped():
    assert {p.name for p in RECIPES} >= {"mnist-sample.yaml", "mnist.yaml", "fashion-mnist.yaml", "cifar10.yaml"}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_every_recipe_parses_and_validates(recipe):
    values = read_config_file(recipe)
    check_config_values(recipe, values)
    config = RunConfig(**values).validate()
    assert config.dataset == values["dataset"] and config.epochs == values["epochs"]


def test_fashion_recipe_matches_the_documented_command():
    values = read_config_file(REPO_ROOT / "configs" / "fashion-mnist.yaml")
    assert values == {
        "dataset": "fashion_mnist",
        "model": "mynet",
        "model_options": {"version": 3, "width": 16},
        "augment": False,
        "batch_size": 128,
        "lr": 6e-3,
        "scheduler": "onecycle",
        "epochs": 3,
        "save_frequency": 0,
    }
    performance = " ".join((REPO_ROOT / "docs" / "performance.md").read_text().split())  # line breaks as spaces
    assert (
        "fashion91 (`--model-option version=3 --model-option width=16 --no-augment --batch-size 128 --lr 6e-3 "
        "--scheduler onecycle --epochs 3`)"
    ) in performance


# -- one source of truth -------------------------------------------------------------
def test_file_keys_are_exactly_the_options_the_flags_set():
    assert set(CONFIG_FILE_KEYS) == set(train.OPTIONS.values()) | set(train.SPECIAL_OPTIONS)
    assert "data_fingerprint" not in CONFIG_FILE_KEYS  # recorded by the run, never chosen
    help_text = train.build_parser().format_help()
    for flag in ("--config", "--name", "--notes"):
        assert flag in help_text


# -- reading a file ---------------------------------------------------------------------
def test_yaml_and_json_read_the_same(tmp_path):
    yaml_values = read_config_file(
        write(tmp_path / "a.yaml", "epochs: 3\nlr: 1e-3\nmodel_options: {width: 8}\nimports: [x.py]\nname: base\n")
    )
    json_values = read_config_file(
        write(
            tmp_path / "a.json",
            json.dumps({"epochs": 3, "lr": 0.001, "model_options": {"width": 8}, "imports": ["x.py"], "name": "base"}),
        )
    )
    assert (
        yaml_values
        == json_values
        == {"epochs": 3, "lr": 1e-3, "model_options": {"width": 8}, "imports": ["x.py"], "name": "base"}
    )
    assert read_config_file(write(tmp_path / "empty.yaml", "# only a comment\n")) == {}


def test_unknown_keys_are_named_with_the_valid_ones(tmp_path):
    path = write(tmp_path / "c.yaml", "epochs: 3\nbatch-size: 32\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError) as caught:
        read_config_file(path)
    message = str(caught.value)
    assert "batch-size (did you mean batch_size?)" in message and "learning_rate" in message
    assert str(path) in message and "known keys: " in message and "weight_decay" in message


@pytest.mark.parametrize(
    "text, named",
    [
        ("lr: fast\n", "lr must be a finite number, got 'fast'"),
        ("epochs: 2.5\n", "epochs must be a whole number, got 2.5"),
        ("augment: 'yes'\n", "augment must be true or false"),
        ("amp: off\n", "quote it"),
        ("model_options: [1, 2]\n", "model_options must be a mapping"),
        ("imports: 7\n", "imports must be a list"),
        ("lr: .nan\n", "lr must be a finite number"),
    ],
)
def test_a_value_of_the_wrong_type_names_file_and_key(tmp_path, text, named):
    path = write(tmp_path / "c.yaml", text)
    with pytest.raises(ConfigError) as caught:
        read_config_file(path)
    assert named in str(caught.value) and str(path) in str(caught.value)


@pytest.mark.parametrize(
    "text, named",
    [
        ("epochs: 0\n", "epochs: epochs must be a positive integer"),
        ("lr: -1\n", "lr: lr must be a positive"),
        ("optimizer: lbfgs\n", "optimizer: Unknown optimizer 'lbfgs'"),
        ("model: nosuchnet\n", "model: Unknown model"),
        ("name: exp4\n", "name: Name 'exp4' looks like an experiment directory"),
        ("dataset: ./missing-folder\n", "dataset: --dataset ./missing-folder: no such directory"),
    ],
)
def test_a_bad_value_names_file_and_key(tmp_path, text, named):
    path = write(tmp_path / "c.yaml", text)
    with pytest.raises(ConfigError) as caught:
        check_config_values(path, read_config_file(path))
    assert str(caught.value).startswith(f"--config {path}: ") and named in str(caught.value), str(caught.value)


@pytest.mark.parametrize(
    "name, text, expected",
    [
        ("list.yaml", "- epochs\n- 3\n", "must hold a mapping"),
        ("bad.yaml", "epochs: [3\n", "is not valid YAML at line"),
        ("bad.json", '{"epochs": 3,}', "is not valid JSON"),
        ("keys.yaml", "1: 2\n", "are not option names"),
        ("binary.yaml", None, "is not UTF-8 text"),
        ("alias.yaml", "a: &x [1, 2]\nmodel_options: {w: *x}\n", "uses YAML aliases"),
    ],
)
def test_damaged_files_are_one_error(tmp_path, name, text, expected):
    path = tmp_path / name
    path.write_bytes(b"\xff\xfe\x00junk" if text is None else text.encode())
    with pytest.raises(ConfigError, match=expected):
        read_config_file(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        read_config_file(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="is a directory"):
        read_config_file(tmp_path)


def test_flags_win_and_option_mappings_merge_key_by_key():
    merged = merge_config_values(
        {"lr": 0.1, "epochs": 9, "model_options": {"width": 8, "dropout": 0.1}, "imports": ["x.py"]},
        {"lr": 0.5, "model_options": {"width": 16}},
    )
    assert merged == {"lr": 0.5, "epochs": 9, "model_options": {"width": 16, "dropout": 0.1}}


# -- end to end, in process -----------------------------------------------------------------
def test_config_file_run_records_the_resolved_configuration(cli, tmp_path):
    write(
        tmp_path / "run.yaml",
        "dataset: synthetic\ndataset_options: {num_samples: 64}\nmodel: mlp\n"
        "model_options: {hidden_sizes: [8]}\nepochs: 5\nlr: 2e-3\nseed: 7\n"
        "name: small\nnotes: from a file\n",
    )
    result = cli(
        "--config",
        "run.yaml",
        "--epochs",
        "1",
        "--model-option",
        "hidden_sizes=[4]",
        "--quiet",
        "--checkpoint-interval",
        "0",
    )
    assert result.returncode == 0, result.stderr
    config = json.loads((tmp_path / "runs" / "exp1" / "config.json").read_text())
    assert config["epochs"] == 1 and config["lr"] == 2e-3 and config["seed"] == 7  # the flag wins, the file fills in
    assert config["model_options"] == {"hidden_sizes": [4]} and config["dataset_options"] == {"num_samples": 64}
    assert config["name"] == "small" and config["notes"] == "from a file"

    # The same command resumes: unchanged values are no change.
    again = cli(
        "--config",
        "run.yaml",
        "--resume",
        "small",
        "--epochs",
        "2",
        "--model-option",
        "hidden_sizes=[4]",
        "--quiet",
        "--notes",
        "second look",
    )
    assert again.returncode == 0 and "Resuming exp1" in again.stdout, again.stderr
    config = json.loads((tmp_path / "runs" / "exp1" / "config.json").read_text())
    assert config["epochs"] == 2 and config["notes"] == "second look" and config["name"] == "small"


def test_a_bad_config_file_writes_nothing(cli, tmp_path):
    write(tmp_path / "bad.yaml", "epochs: 2\nbatch_size: -4\n")
    message = one_line_error(cli("--config", "bad.yaml", *TINY))
    assert "--config bad.yaml: batch_size: batch_size must be a positive integer, got -4." in message
    assert not (tmp_path / "runs").exists()
    write(tmp_path / "typo.yaml", "epoch: 2\n")
    assert "Unknown configuration key(s) epoch in typo.yaml" in one_line_error(cli("--config", "typo.yaml", *TINY))
    assert not (tmp_path / "runs").exists()


# -- names ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["", "  ", "exp3", "EXP12", "a/b", "..\\x", "-lr", " pad", "two\nlines", "x" * 101])
def test_names_that_are_refused(name):
    assert name_problem(name) is not None
    with pytest.raises(ConfigError):
        RunConfig(name=name).validate()


@pytest.mark.parametrize("name", ["baseline", "lr 3e-3, no aug", "exp3-retry", "résumé", "x" * 100])
def test_names_that_are_accepted(name):
    assert name_problem(name) is None and RunConfig(name=name).validate().name == name


def test_names_are_unique_and_stand_for_the_run(cli, tmp_path):
    runs = tmp_path / "runs"
    assert cli(*TINY, "--epochs", "1", "--name", "base").returncode == 0
    before = sorted(p.name for p in runs.iterdir())
    duplicate = one_line_error(cli(*TINY, "--epochs", "1", "--name", "base"))
    assert "The name 'base' is already used by exp1" in duplicate
    assert sorted(p.name for p in runs.iterdir()) == before, "a duplicate is refused before anything is created"

    forked = cli("--fork", "base", "--epochs", "2", "--quiet", "--name", "branch")
    assert forked.returncode == 0 and "Forked exp1" in forked.stdout, forked.stderr
    assert json.loads((runs / "exp2" / "config.json").read_text())["name"] == "branch"
    unnamed = cli("--fork", "branch", "--epochs", "3", "--quiet")
    assert unnamed.returncode == 0, unnamed.stderr
    assert json.loads((runs / "exp3" / "config.json").read_text())["name"] is None, "a fork does not inherit the label"

    assert "cannot change name" in one_line_error(cli("--resume", "base", "--epochs", "2", "--name", "other"))
    assert "does not exist" in one_line_error(cli("--resume", "nobody"))

    # Two runs recording one name (edited by hand): ambiguous, refused, nothing touched.
    config = json.loads((runs / "exp3" / "config.json").read_text())
    (runs / "exp3" / "config.json").write_text(json.dumps({**config, "name": "branch"}))
    assert "recorded by exp2 and exp3" in one_line_error(cli("--resume", "branch", "--epochs", "4"))
    with pytest.raises(ValueError, match="recorded by exp2 and exp3"):
        resolve_experiment(runs, "branch")
    assert resolve_experiment(runs, "base") == "exp1" and resolve_experiment(runs, "exp2") == "exp2"


def test_tools_accept_a_name(tmp_path):
    from src.cli.common import ToolError, find_experiment
    from src.cli.listing import cells, summarize

    run = tmp_path / "runs" / "exp4"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"name": "winner", "dataset": "mnist", "model": "mynet"}))
    assert find_experiment(tmp_path / "runs", "winner") == run
    assert cells(summarize(run))["name"] == "exp4 (winner)"
    with pytest.raises(ToolError, match="does not exist"):
        find_experiment(tmp_path / "runs", "loser")

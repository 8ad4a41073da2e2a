"""train.py end to end, in subprocesses, as a user runs it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT, load_checkpoint, run_cli, tree_hashes

FAST = ("--dataset", "mnist-sample", "--model", "mlp", "--quiet")


def log_records(experiment: Path):
    return [json.loads(line) for line in (experiment / "training_log.jsonl").read_text().splitlines()]


def test_help_documents_every_flag():
    result = run_cli("--help", cwd=REPO_ROOT)
    for flag in (
        "--dataset",
        "--model",
        "--epochs",
        "--batch-size",
        "--lr",
        "--weight-decay",
        "--optimizer",
        "--scheduler",
        "--patience",
        "--save-frequency",
        "--keep-last",
        "--seed",
        "--device",
        "--data-dir",
        "--runs-dir",
        "--resume",
        "--fork",
        "--reapply-transforms",
        "--no-augment",
        "--quiet",
        "--amp",
        "--compile",
        "--channels-last",
        "--grad-accum",
        "--grad-clip",
        "--tensorboard",
        "--no-tensorboard",
        "--tensorboard-every",
        "--threads",
    ):
        assert flag in result.stdout
    options_page = (REPO_ROOT / "docs" / "training-options.md").read_text()  # the manual's flag table
    for flag in (
        "--keep-last",
        "--reapply-transforms",
        "--no-augment",
        "--runs-dir",
        "--amp",
        "--compile",
        "--channels-last",
        "--grad-accum",
        "--grad-clip",
        "--tensorboard",
        "--no-tensorboard",
        "--tensorboard-every",
        "--threads",
    ):
        assert f"`{flag}" in options_page, f"docs/training-options.md's flag table lacks {flag}"


def test_fresh_run_then_resume_extends_history(tmp_path):
    first = run_cli(*FAST, "--epochs", "2", "--save-frequency", "1", cwd=tmp_path)
    experiment = tmp_path / "runs" / "exp1"
    assert "Epoch 1/2" in first.stdout and "Epoch 2/2" in first.stdout and "Done: 2 epochs" in first.stdout
    config = json.loads((experiment / "config.json").read_text())
    assert config["dataset"] == "mnist-sample" and config["model"] == "mlp" and config["batch_size"] == 64
    assert [r["epoch"] for r in log_records(experiment)] == [1, 2]
    first_records = log_records(experiment)

    resumed = run_cli("--resume", "exp1", "--epochs", "4", "--quiet", cwd=tmp_path)
    assert "Resuming exp1 from latest_checkpoint.pt at epoch 2" in resumed.stdout
    assert "Epoch 3/4" in resumed.stdout and "Epoch 1/" not in resumed.stdout
    records = log_records(experiment)
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]
    assert records[:2] == first_records, "history continues, it does not restart"
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["exp1"], "resume writes in place"
    assert json.loads((experiment / "status.json").read_text())["state"] == "completed"
    assert json.loads((experiment / "config.json").read_text())["epochs"] == 4
    assert load_checkpoint(experiment / "checkpoints" / "latest_checkpoint.pt")["epoch"] == 4


def test_fork_branches_with_new_lr_and_leaves_parent_untouched(tmp_path):
    run_cli(*FAST, "--epochs", "2", cwd=tmp_path)
    parent = tmp_path / "runs" / "exp1"
    before = tree_hashes(parent)
    parent_checkpoint = hashlib.sha256((parent / "checkpoints" / "latest_checkpoint.pt").read_bytes()).hexdigest()
    forked = run_cli("--fork", "exp1", "--lr", "0.0002", "--epochs", "4", "--quiet", cwd=tmp_path)
    assert "Forked exp1 (epoch 2" in forked.stdout
    child = tmp_path / "runs" / "exp2"
    assert tree_hashes(parent) == before, "forking must not modify the parent"
    lineage = json.loads((child / "lineage.json").read_text())
    assert lineage["parent"] == "exp1" and lineage["epoch"] == 2 and lineage["sha256"] == parent_checkpoint
    records = log_records(child)
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]
    assert [r["learning_rate"] for r in records] == [0.001, 0.001, 0.0002, 0.0002], "the new lr really applies"
    config = json.loads((child / "config.json").read_text())
    assert config["lr"] == 0.0002 and config["model"] == "mlp" and config["dataset"] == "mnist-sample"
    state = load_checkpoint(child / "checkpoints" / "latest_checkpoint.pt")
    assert state["optimizer_state_dict"]["param_groups"][0]["lr"] == 0.0002


def test_patience_stops_early(tmp_path):
    result = run_cli(*FAST, "--epochs", "20", "--patience", "2", "--lr", "1e-12", "--no-augment", cwd=tmp_path)
    assert "Early stopping" in result.stdout and "(stopped early)" in result.stdout
    experiment = tmp_path / "runs" / "exp1"
    assert len(log_records(experiment)) == 3
    status = json.loads((experiment / "status.json").read_text())
    assert status["state"] == "stopped_early" and status["best_epoch"] == 1
    before = tree_hashes(experiment)
    again = run_cli("--resume", "exp1", "--quiet", cwd=tmp_path, check=False)
    # A requeued job with the same command succeeds without changing anything.
    assert again.returncode == 0 and "stopped early" in again.stdout and "--patience" in again.stdout
    assert tree_hashes(experiment) == before


def fingerprints(experiment: Path, epochs):
    return [
        load_checkpoint(experiment / "checkpoints" / f"epoch_{e}.pt")["dataset"]["augmentation_fingerprint"]
        for e in epochs
    ]


def test_reapply_transforms_new_draw_each_epoch_and_same_after_resume(tmp_path):
    args = (*FAST, "--reapply-transforms", "--save-frequency", "1")
    run_cli(*args, "--epochs", "4", cwd=tmp_path)
    straight = fingerprints(tmp_path / "runs" / "exp1", range(1, 5))
    assert len(set(straight)) == 4, "each epoch gets a fresh augmentation draw"
    run_cli(*args, "--epochs", "2", cwd=tmp_path)
    run_cli("--resume", "exp2", "--epochs", "4", "--quiet", cwd=tmp_path)
    assert fingerprints(tmp_path / "runs" / "exp2", range(1, 5)) == straight
    # Without the flag the first draw is kept for the whole run.
    run_cli(*FAST, "--save-frequency", "1", "--epochs", "2", cwd=tmp_path)
    state = load_checkpoint(tmp_path / "runs" / "exp3" / "checkpoints" / "epoch_2.pt")
    assert state["dataset"] is None


@pytest.mark.parametrize(
    "args,message",
    [
        (("--dataset", "imagenet"), "Unknown dataset 'imagenet'; choose one of: "),
        (("--model", "gpt5"), "Unknown model 'gpt5'; choose one of: "),
        (("--epochs", "0"), "epochs must be a positive integer, got 0"),
        (("--batch-size", "-3"), "batch_size must be a positive integer, got -3"),
        (("--optimizer", "lion"), "Unknown optimizer 'lion'"),
        (("--grad-accum", "0"), "grad_accum must be a positive integer, got 0"),
        (("--grad-clip", "-1"), "grad_clip must be a non-negative finite number"),
        (("--resume", "exp7"), "'exp7' does not exist"),
        (("--resume", "../../etc"), "Invalid experiment name '../../etc'"),
        (("--fork", "/tmp"), "Invalid experiment name '/tmp'"),
        (("--dataset", "mnist", "--data-dir", "BROKEN"), "truncated or corrupt"),
    ],
)
def test_bad_input_is_one_clear_error(tmp_path, args, message):
    broken = tmp_path / "BROKEN" / "MNIST" / "raw"
    broken.mkdir(parents=True)
    from src.datasets.idx import IDX_FILES

    for name in IDX_FILES:
        (broken / name[:-3]).write_bytes(
            b"\x00\x00\x08\x03\x00\x00\x00\x05\x00\x00\x00\x1c\x00\x00\x00\x1c" + b"\x00" * 10
        )
    result = run_cli(*FAST, *args, cwd=tmp_path, check=False)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir()), "nothing created"


def test_resume_and_fork_together_is_refused(tmp_path):
    result = run_cli("--resume", "exp1", "--fork", "exp1", cwd=tmp_path, check=False)
    assert result.returncode == 2 and "not allowed with argument" in result.stderr


def test_resume_refuses_changed_settings(tmp_path):
    run_cli(*FAST, "--epochs", "1", cwd=tmp_path)
    before = tree_hashes(tmp_path / "runs" / "exp1")
    result = run_cli("--resume", "exp1", "--lr", "0.5", "--epochs", "3", cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert "cannot change lr (run has 0.001, given 0.5)" in result.stderr and "--fork exp1" in result.stderr
    assert tree_hashes(tmp_path / "runs" / "exp1") == before


def test_resume_of_finished_run_is_a_success_that_changes_nothing(tmp_path):
    run_cli(*FAST, "--epochs", "1", cwd=tmp_path)
    experiment = tmp_path / "runs" / "exp1"
    before = tree_hashes(experiment)
    for extra in ((), ("--epochs", "1")):
        result = run_cli("--resume", "exp1", *extra, cwd=tmp_path, check=False)
        assert result.returncode == 0, result.stderr
        assert "exp1 is complete at epoch 1" in result.stdout and "--epochs N with N > 1" in result.stdout
        assert tree_hashes(experiment) == before, "nothing is written"


def test_threads_is_recorded_kept_on_resume_and_changeable(tmp_path):
    """--threads N sets torch's CPU threads (the start-up line says so); the count is recorded,
    so a resume without the flag uses it again (results may depend on it); a resume may change it."""
    tiny = ("--dataset", "synthetic", "--dataset-option", "num_samples=64", "--model", "mlp", "--quiet")
    first = run_cli(*tiny, "--epochs", "1", "--threads", "1", cwd=tmp_path)
    assert "on cpu, 1 CPU thread," in first.stdout
    config = tmp_path / "runs" / "exp1" / "config.json"
    assert json.loads(config.read_text())["threads"] == 1
    assert "on cpu, 1 CPU thread," in run_cli("--resume", "exp1", "--epochs", "2", cwd=tmp_path).stdout
    changed = run_cli("--resume", "exp1", "--epochs", "3", "--threads", "2", cwd=tmp_path)
    assert "on cpu, 2 CPU threads," in changed.stdout and json.loads(config.read_text())["threads"] == 2


def test_model_options_given_to_fork_or_resume_add_to_the_runs_own(tmp_path):
    """--model-option on --fork/--resume adds to the run's recorded options instead of
    replacing them (a fork naming one option used to reset the others to their defaults)."""
    tiny = ("--dataset", "synthetic", "--dataset-option", "num_samples=64", "--model", "mynet", "--quiet")
    run_cli(*tiny, "--model-option", "width=8", "--model-option", "dropout=0.0", "--epochs", "1", cwd=tmp_path)
    recorded = json.loads((tmp_path / "runs" / "exp1" / "config.json").read_text())["model_options"]
    assert recorded["width"] == 8
    resumed = run_cli("--resume", "exp1", "--model-option", "width=8", "--epochs", "2", cwd=tmp_path)
    assert "Done: 2 epochs" in resumed.stdout
    forked = run_cli("--fork", "exp1", "--model-option", "dropout=0.0", "--lr", "1e-4", "--epochs", "3", cwd=tmp_path)
    assert "Done: 3 epochs" in forked.stdout
    assert json.loads((tmp_path / "runs" / "exp2" / "config.json").read_text())["model_options"] == recorded
    changed = run_cli("--fork", "exp1", "--model-option", "width=16", cwd=tmp_path, check=False)
    assert changed.returncode == 2 and "width: 8 vs 16" in changed.stderr

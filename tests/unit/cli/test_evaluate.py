"""exptrain evaluate: the run's own numbers, the files it writes, and what it refuses."""

from __future__ import annotations

import json

import pytest

from src.cli.evaluate import class_metrics, evaluate_experiment
from tests.helpers import log_records, run_tool
from tests.helpers import tree_hashes_with_lock as tree_hashes


@pytest.mark.parametrize("checkpoint, epoch", [("epoch_1", 1), ("latest", 2), ("best", 2)])
def test_numbers_equal_the_runs_own_validation(checkpoint, epoch, copy_runs):
    record = evaluate_experiment(str(copy_runs), "exp1", checkpoint=checkpoint, mistakes=0)
    logged = log_records(copy_runs / "exp1")[epoch - 1]
    assert record["checkpoint"]["epoch"] == epoch
    assert record["accuracy"] == logged["val_accuracy"]
    assert record["loss"] == pytest.approx(logged["val_loss"], rel=1e-6)
    assert record["samples"] == 1000 and record["data_matches_training"] is True


def test_writes_metrics_confusion_matrix_and_mistakes_into_the_experiment(copy_runs, capsys):
    code, out, err = run_tool(capsys, "evaluate", "exp2", "--runs-dir", str(copy_runs), "--mistakes", "6")
    assert code == 0, err
    folder = copy_runs / "exp2" / "evaluation" / "best-test"
    record = json.loads((folder / "evaluation.json").read_text())
    assert record["class_names"] == [str(d) for d in range(10)] and len(record["per_class"]) == 10
    assert sum(row["support"] for row in record["per_class"]) == 1000
    assert sum(map(sum, record["confusion_matrix"])) == 1000
    assert sum(record["confusion_matrix"][i][i] for i in range(10)) / 10 == record["accuracy"]
    mistakes = record["most_confident_mistakes"]
    assert len(mistakes) == 6 and all(m["true"] != m["predicted"] for m in mistakes)
    assert [m["confidence"] for m in mistakes] == sorted((m["confidence"] for m in mistakes), reverse=True)
    for name in ("confusion_matrix.png", "mistakes.png"):
        assert (folder / name).read_bytes()[:4] == b"\x89PNG"
    assert f"accuracy {record['accuracy']:.2f}%" in out and "macro avg" in out


def test_flip_tta_is_recorded(copy_runs):
    record = evaluate_experiment(str(copy_runs), "exp1", checkpoint="latest", tta=True, mistakes=0)
    assert record["tta"] is True and 0 < record["accuracy"] <= 100
    assert (copy_runs / "exp1" / "evaluation" / "latest-test-tta" / "evaluation.json").is_file()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["exp1", "--checkpoint", "worst"], "Unknown checkpoint 'worst'"),
        (
            ["exp1", "--checkpoint", "epoch_7"],
            "has no epoch_7.pt; available checkpoints: best, latest, epoch_1, epoch_2",
        ),
        (["exp9"], "'exp9' does not exist"),
        (["exp1", "--mistakes", "-1"], "--mistakes must be"),
        (["exp1", "--device", "tpu"], "tpu"),
    ],
)
def test_bad_input(argv, message, real_runs, capsys):
    before = tree_hashes(real_runs)
    code, out, err = run_tool(capsys, "evaluate", *argv, "--runs-dir", str(real_runs))
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and message in err
    assert tree_hashes(real_runs) == before


def test_damaged_checkpoint_is_one_line(copy_runs, capsys):
    best = copy_runs / "exp1" / "checkpoints" / "best_model.pt"
    data = bytearray(best.read_bytes())
    data[len(data) // 2] ^= 0xFF
    best.write_bytes(bytes(data))
    code, _, err = run_tool(capsys, "evaluate", "exp1", "--runs-dir", str(copy_runs))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "best_model.pt is corrupt (checksum mismatch)" in err
    assert not (copy_runs / "exp1" / "evaluation").exists()
    # latest passes over damaged files: here the damaged one is best, latest is intact
    code, _, err = run_tool(
        capsys, "evaluate", "exp1", "--runs-dir", str(copy_runs), "--checkpoint", "latest", "--mistakes", "0"
    )
    assert code == 0, err


def test_class_metrics_with_an_empty_class():
    import torch

    confusion = torch.tensor([[2, 0, 0], [1, 1, 0], [0, 0, 0]])
    rows = class_metrics(confusion, ["a", "b", "c"])
    assert rows[0]["precision"] == pytest.approx(2 / 3) and rows[0]["recall"] == 1.0
    assert rows[1]["precision"] == 1.0 and rows[1]["recall"] == 0.5 and rows[1]["f1"] == pytest.approx(2 / 3)
    assert rows[2] == {"class": 2, "name": "c", "precision": None, "recall": None, "f1": None, "support": 0}


def test_checkpoint_without_a_model_config_is_refused(copy_runs, capsys):
    import torch.nn as nn

    from src.training.checkpoint import CheckpointManager

    manager = CheckpointManager(copy_runs / "exp1" / "checkpoints", save_frequency=0)
    manager.save_checkpoint(nn.Linear(784, 10), None, 9, 0.5, 50.0, manager.epoch_path(9))
    code, _, err = run_tool(capsys, "evaluate", "exp1", "--runs-dir", str(copy_runs), "--checkpoint", "epoch_9")
    assert code == 2 and "epoch_9.pt records no model configuration" in err

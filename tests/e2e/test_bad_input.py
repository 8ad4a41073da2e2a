"""Bad input through train.py, end to end: damaged labels, a resume on other data, and
every option value checked before an experiment exists (issue 7, cases 3, 4 and 14).

Each case runs train.py in a subprocess, as a user would, and checks the exit code, the
one line on stderr and what is (not) left on disk.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from src.datasets.mnist import SAMPLE_DIR
from tests.helpers import load_checkpoint, run_cli
from tests.helpers import tree_hashes

TINY_MODEL = ("--model", "mlp", "--model-option", "hidden_sizes=[16]", "--quiet")
SYNTHETIC = ("--dataset", "synthetic", "--dataset-option", "num_samples=64", "--quiet")
MLP, MYNET = (
    ("--model", "mlp", "--model-option", "hidden_sizes=[16]"),
    ("--model", "mynet", "--model-option", "width=2"),
)
IMAGE_HEADER, LABEL_HEADER = 16, 8  # IDX header bytes of the image and label files


def mnist_copy(root: Path) -> Path:
    """``root`` holding the bundled mnist-sample files as ``MNIST/raw`` (what --dataset mnist reads)."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for source in SAMPLE_DIR.glob("*-ubyte.gz"):
        shutil.copyfile(source, raw / source.name)
    assert len(list(raw.iterdir())) == 4
    return root


def edit_idx(path: Path, edit) -> None:
    """Rewrite the gzipped IDX file ``path`` with ``edit(bytearray)`` applied."""
    data = bytearray(gzip.decompress(path.read_bytes()))
    edit(data)
    path.write_bytes(gzip.compress(bytes(data)))


def stderr_lines(result) -> list:
    return [line for line in result.stderr.splitlines() if line.strip()]


def assert_one_clear_line(result, *needles: str) -> str:
    lines = stderr_lines(result)
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def assert_no_experiment(runs: Path) -> None:
    assert not runs.exists() or list(runs.iterdir()) == [], sorted(p.name for p in runs.iterdir())


# -- case 3: a label outside the class range ------------------------------------------


def test_out_of_range_label_is_one_line_naming_file_count_and_index(tmp_path):
    data = mnist_copy(tmp_path / "data")
    labels = data / "MNIST" / "raw" / "train-labels-idx1-ubyte.gz"

    def damage(raw: bytearray) -> None:
        raw[LABEL_HEADER + 17] = 255
        raw[LABEL_HEADER + 2000] = 10  # one past the last class counts too

    edit_idx(labels, damage)
    result = run_cli(
        "--dataset", "mnist", "--data-dir", str(data), "--epochs", "1", *TINY_MODEL, cwd=tmp_path, check=False
    )
    assert result.returncode == 2, result.stdout + result.stderr
    line = assert_one_clear_line(result, str(labels), "2 labels", "index 17", "0..9")
    assert line.startswith("Error:")
    assert_no_experiment(tmp_path / "runs")


# -- case 4: a resume must train on the data it started with ---------------------------


@pytest.mark.slow
def test_resume_refuses_changed_data_fork_records_both_identical_copy_resumes(tmp_path):
    a, b, c = (mnist_copy(tmp_path / name) for name in ("A", "B", "C"))

    def flip_one_pixel(raw: bytearray) -> None:
        raw[IMAGE_HEADER + 300] ^= 0xFF

    edit_idx(b / "MNIST" / "raw" / "train-images-idx3-ubyte.gz", flip_one_pixel)
    common = ("--dataset", "mnist", "--no-augment", *TINY_MODEL)
    run_cli(*common, "--data-dir", str(a), "--epochs", "1", cwd=tmp_path)
    exp1 = tmp_path / "runs" / "exp1"
    recorded = json.loads((exp1 / "config.json").read_text())["data_fingerprint"]
    assert recorded["train_samples"] == 4000 and len(recorded["sha256"]) == 64
    before = tree_hashes(exp1)

    refused = run_cli("--resume", "exp1", "--epochs", "2", "--data-dir", str(b), cwd=tmp_path, check=False)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    line = assert_one_clear_line(refused, "different data", recorded["sha256"][:12], "--fork exp1")
    assert line.count("sha256") == 2, line  # both fingerprints shown
    assert tree_hashes(exp1) == before, "a refused resume changed exp1"
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["exp1"]

    forked = run_cli("--fork", "exp1", "--data-dir", str(b), cwd=tmp_path)
    assert "Done: 2 epochs" in forked.stdout
    lineage = json.loads((tmp_path / "runs" / "exp2" / "lineage.json").read_text())
    assert lineage["parent"] == "exp1"
    assert lineage["parent_data_fingerprint"] == recorded
    assert lineage["data_fingerprint"]["sha256"] != recorded["sha256"]
    assert (
        lineage["data_fingerprint"]
        == json.loads((tmp_path / "runs" / "exp2" / "config.json").read_text())["data_fingerprint"]
    )
    assert tree_hashes(exp1) == before, "a fork changed its parent"
    assert line.count(lineage["data_fingerprint"]["sha256"][:12]) == 1

    resumed = run_cli("--resume", "exp1", "--epochs", "2", "--data-dir", str(c), cwd=tmp_path)
    assert "Done: 2 epochs" in resumed.stdout
    assert [json.loads(r)["epoch"] for r in (exp1 / "training_log.jsonl").read_text().splitlines()] == [1, 2]
    assert json.loads((exp1 / "config.json").read_text())["data_fingerprint"] == recorded


# -- case 14: every option is checked before an experiment is created ------------------

BAD_OPTIONS = {
    "width=-3": (("--model", "mynet", "--model-option", "width=-3"), ("width", ">= 1", "-3")),
    "width=0": (("--model", "mynet", "--model-option", "width=0"), ("width", ">= 1", "got 0")),
    "hidden_sizes=[-3]": (("--model", "mlp", "--model-option", "hidden_sizes=[-3]"), ("hidden_sizes", ">= 1", "[-3]")),
    "hidden_sizes=abc": (
        ("--model", "mlp", "--model-option", "hidden_sizes=abc"),
        ("hidden_sizes", "list of integers", "'abc'"),
    ),
    "input_shape=[1,28,14]": ((*MLP, "--dataset-option", "input_shape=[1,28,14]"), ("mlp", "28x14", "square")),
    "num_samples=100.5": ((*MLP, "--dataset-option", "num_samples=100.5"), ("num_samples", ">= 1", "100.5")),
    "num_samples=100000000": (
        (*MLP, "--dataset-option", "num_samples=100000000"),
        ("num_samples", "limit", "num_samples <="),
    ),
    "seed=2**64": ((*MLP, "--seed", "18446744073709551616"), ("seed", "2**63-1", "18446744073709551616")),
    "--threads 0": ((*MLP, "--threads", "0"), ("threads", "1 to 1024", "got 0")),
    "--augment crop-flip --no-augment": (
        (*MLP, "--augment", "crop-flip", "--no-augment"),
        ("--no-augment", "crop-flip", "contradict"),
    ),
    "seed=-1": ((*MLP, "--seed", "-1"), ("seed", "non-negative", "-1")),
    # Beyond the list: options that collide with what the run sets itself.
    "dataset seed": ((*MLP, "--dataset-option", "seed=5"), ("--dataset-option seed", "--seed")),
    "model num_classes": ((*MLP, "--model-option", "num_classes=3"), ("--model-option num_classes", "data")),
    "dropout=NaN": ((*MLP, "--model-option", "dropout=NaN"), ("dropout", "finite")),
    # mynet version 2 pools three times: 8x8 at least
    "input_shape=[1,2,2] mynet": ((*MYNET, "--dataset-option", "input_shape=[1,2,2]"), ("input_size", ">= 8")),
}


@pytest.mark.parametrize("args, needles", list(BAD_OPTIONS.values()), ids=list(BAD_OPTIONS))
def test_bad_option_is_one_line_exit_2_and_no_experiment(tmp_path, args, needles):
    result = run_cli(*SYNTHETIC, "--epochs", "1", *args, cwd=tmp_path, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert_one_clear_line(result, "Error:", *needles)
    assert_no_experiment(tmp_path / "runs")


# -- beyond the issue: a fork onto other data never continues the parent's data order ----


def test_fork_of_a_mid_epoch_parent_onto_other_data_trains_a_whole_epoch_of_it(tmp_path, monkeypatch):
    """The parent stopped inside epoch 1 at batch 50 of 63 (4,000 images); the fork's
    --data-dir holds 2,000 (32 batches). The fork must train those 32 batches, not resume
    at batch 50 of a 32-batch epoch (training nothing and reporting the parent's numbers)."""
    from src.run import run_training
    from src.training.trainer_saves import Saver

    mnist_copy(tmp_path / "A")
    smaller = mnist_copy(tmp_path / "B") / "MNIST" / "raw"
    for name, header, size in (
        ("train-images-idx3-ubyte.gz", IMAGE_HEADER, 784),
        ("train-labels-idx1-ubyte.gz", LABEL_HEADER, 1),
    ):

        def keep_2000(raw: bytearray, header=header, size=size) -> None:
            raw[4:8] = (2000).to_bytes(4, "big")
            del raw[header + 2000 * size :]

        edit_idx(smaller / name, keep_2000)
    original, saves = Saver.save_mid_epoch, []

    def save_then_crash(self, epoch):
        original(self, epoch)
        saves.append(self.trainer.global_step)
        if len(saves) == 50:
            raise RuntimeError("crash inside epoch 1")

    monkeypatch.setattr(Saver, "save_mid_epoch", save_then_crash)
    runs, quiet = str(tmp_path / "runs"), {"show_progress": False, "log": lambda *a: None}
    overrides = {
        "dataset": "mnist",
        "data_dir": str(tmp_path / "A"),
        "model": "mlp",
        "model_options": {"hidden_sizes": [16]},
        "epochs": 1,
        "device": "cpu",
        "checkpoint_interval": 1e-9,
    }
    with pytest.raises(RuntimeError, match="crash"):
        run_training(overrides, runs_dir=runs, **quiet)
    monkeypatch.setattr(Saver, "save_mid_epoch", original)
    parent = load_checkpoint(tmp_path / "runs" / "exp1" / "checkpoints" / "latest_checkpoint.pt")
    assert parent["mid_epoch"] and parent["train_loader"]["position"] == 50 == parent["global_step"]

    run_training({"data_dir": str(tmp_path / "B"), "checkpoint_interval": 0}, runs_dir=runs, fork="exp1", **quiet)
    fork = load_checkpoint(tmp_path / "runs" / "exp2" / "checkpoints" / "latest_checkpoint.pt")
    assert fork["epoch"] == 1 and fork["global_step"] == 50 + 32, "the fork did not train a whole epoch of its data"

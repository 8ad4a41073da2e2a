"""exptrain predict: image files in, top-k classes out."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from src.cli.checkpoints import load_model
from src.cli.evaluate import build_dataset, predict_split, split_loader
from src.cli.predict import predict_images
from tests.helpers import run_tool


@pytest.fixture(scope="module")
def confident_digit(real_runs, tmp_path_factory):
    """A PNG of a test image the model classifies correctly and confidently, and its label."""
    dataset = build_dataset(json.loads((real_runs / "exp2" / "config.json").read_text()))
    model = load_model(real_runs / "exp2", "best").model
    device = torch.device("cpu")
    probabilities, predictions, _ = predict_split(model, split_loader(dataset, "test", 256, device), device)
    confidence = torch.where(predictions == dataset.test_labels, probabilities.max(1).values, torch.zeros(()))
    index = int(confidence.argmax())
    path = tmp_path_factory.mktemp("images") / "digit.png"
    Image.fromarray(dataset.test_images[index, 0].numpy(), mode="L").save(path)
    return path, str(int(dataset.test_labels[index])), float(confidence[index])


def test_predicts_the_right_class_for_a_png(real_runs, confident_digit, capsys):
    path, label, confidence = confident_digit
    code, out, err = run_tool(capsys, "predict", "exp2", str(path), "--runs-dir", str(real_runs))
    assert code == 0, err
    first = out.strip().split(": ", 1)[1].split(", ")[0]
    assert first == f"{label} {100 * confidence:.1f}%", "the same probability as the data set's own pipeline"
    assert len(out.strip().split(", ")) == 3


def test_rgb_and_other_sizes_are_converted(real_runs, confident_digit, tmp_path):
    path, label, _ = confident_digit
    rgb = tmp_path / "digit.jpg"
    Image.open(path).convert("RGB").resize((56, 56), Image.Resampling.NEAREST).save(rgb, quality=95)
    inverted = tmp_path / "paper.png"
    Image.eval(Image.open(path), lambda v: 255 - v).save(inverted)
    results = predict_images(str(real_runs), "exp2", [str(rgb), str(inverted)], top_k=10, invert=False)
    assert results[0]["predictions"][0]["name"] == label
    assert sum(p["probability"] for p in results[0]["predictions"]) == pytest.approx(1.0, abs=1e-5)
    again = predict_images(str(real_runs), "exp2", [str(inverted)], top_k=1, invert=True)
    assert again[0]["predictions"][0]["name"] == label, "--invert turns dark ink on white back into MNIST's look"


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing.png", "missing.png does not exist"),
        (lambda d: d, "does not exist (it is a directory)"),
        (lambda d: (d / "notes.png").write_text("not an image") and d / "notes.png", "cannot be read as an image"),
    ],
)
def test_bad_images_are_one_line(make, message, real_runs, tmp_path, capsys):
    code, out, err = run_tool(capsys, "predict", "exp2", str(make(tmp_path)), "--runs-dir", str(real_runs))
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and message in err


def test_top_k_must_be_positive(real_runs, confident_digit, capsys):
    code, _, err = run_tool(
        capsys, "predict", "exp2", str(confident_digit[0]), "--top-k", "0", "--runs-dir", str(real_runs)
    )
    assert code == 2 and "--top-k must be a whole number >= 1" in err


def test_without_the_data_the_recorded_normalisation_is_used(real_runs, confident_digit, tmp_path, capsys):
    import shutil

    path, label, confidence = confident_digit
    runs = tmp_path / "runs"
    shutil.copytree(real_runs / "exp2", runs / "exp2")
    config_file = runs / "exp2" / "config.json"
    config = json.loads(config_file.read_text())
    (tmp_path / "no-data").mkdir()
    # full MNIST, same normalisation as the sample, whose files are not here (never downloaded by predict)
    config.update(dataset="mnist", data_dir=str(tmp_path / "no-data"))
    config_file.write_text(json.dumps(config))
    code, out, err = run_tool(capsys, "predict", "exp2", str(path), "--runs-dir", str(runs), "--top-k", "1")
    assert code == 0, err
    assert "Warning: the mnist data is not available here, so its recorded normalisation is used" in err
    assert out.strip().endswith(f"{label} {100 * confidence:.1f}%")
    assert not any((tmp_path / "no-data").iterdir()), "nothing was downloaded"

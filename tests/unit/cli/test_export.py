"""exptrain export: round trips that give identical outputs, and what is refused."""

from __future__ import annotations

import json
import zipfile

import pytest
import torch

from src.cli.checkpoints import load_model
from src.cli.evaluate import build_dataset
from src.cli.export import export_experiment, load_exported
from src.cli.common import ToolError
from tests.helpers import run_tool


@pytest.fixture(scope="module")
def test_images(real_runs):
    """200 real validation images of the run, normalised as the run's loader does."""
    dataset = build_dataset(json.loads((real_runs / "exp1" / "config.json").read_text()))
    _, loader = dataset.get_dataloaders(batch_size=200, shuffle=False)
    return next(iter(loader))[0]


def test_safetensors_round_trip_rebuilds_the_model_without_pickle(copy_runs, test_images, capsys):
    code, out, err = run_tool(capsys, "export", "exp1", "--runs-dir", str(copy_runs))
    assert code == 0, err
    assert "reloaded: identical outputs" in out
    folder = copy_runs / "exp1" / "export" / "best"
    record = json.loads((folder / "model.json").read_text())
    assert record["model_config"]["name"] == "mlp" and record["input_shape"] == [1, 28, 28]
    assert record["class_names"] == [str(d) for d in range(10)] and record["check"]["identical"] is True
    assert not zipfile.is_zipfile(folder / "model.safetensors"), "not a torch.save (pickle) archive"
    original = load_model(copy_runs / "exp1", "best").model
    with torch.inference_mode():
        assert torch.equal(load_exported(str(folder))(test_images), original(test_images))


@pytest.mark.filterwarnings("ignore:`torch.jit")
def test_torchscript_round_trip_gives_identical_outputs(copy_runs, test_images, tmp_path):
    record = export_experiment(str(copy_runs), "exp2", "latest", "torchscript", out=str(tmp_path / "ts"))
    assert record["check"]["identical"] is True and record["checkpoint"]["epoch"] == 3
    scripted = torch.jit.load(str(tmp_path / "ts" / "model.torchscript.pt"))
    original = load_model(copy_runs / "exp2", "latest").model
    with torch.inference_mode():
        assert torch.equal(scripted(test_images), original(test_images))


def test_onnx_round_trip_with_onnxruntime(copy_runs, test_images, tmp_path):
    pytest.importorskip("onnx", reason="onnx is not installed: ONNX export is not tested here")
    onnxruntime = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed: ONNX outputs not checked")
    record = export_experiment(str(copy_runs), "exp1", "best", "onnx", out=str(tmp_path / "onnx"))
    assert record["check"]["checked"] is True
    session = onnxruntime.InferenceSession(str(tmp_path / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": test_images.numpy()})[0]
    with torch.inference_mode():
        expected = load_model(copy_runs / "exp1", "best").model(test_images)
    assert torch.allclose(torch.from_numpy(got), expected, atol=1e-4)


def test_onnx_without_the_onnx_package_is_one_clear_line(copy_runs, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a))
    code, _, err = run_tool(capsys, "export", "exp1", "--runs-dir", str(copy_runs), "--format", "onnx")
    assert code == 2 and "needs the onnx package (pip install onnx)" in err
    assert not (copy_runs / "exp1" / "export").exists()


def test_damaged_export_is_refused_on_load(copy_runs, tmp_path):
    export_experiment(str(copy_runs), "exp1", out=str(tmp_path / "st"))
    weights = tmp_path / "st" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ToolError, match="model.safetensors cannot be read"):
        load_exported(str(tmp_path / "st"))
    (tmp_path / "st" / "model.json").write_text("[]")
    with pytest.raises(ToolError, match="model.json is missing or not an export record"):
        load_exported(str(tmp_path / "st"))


def test_bad_format_is_refused(real_runs, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_tool(capsys, "export", "exp1", "--runs-dir", str(real_runs), "--format", "pickle")
    assert exit_info.value.code == 2 and "invalid choice: 'pickle'" in capsys.readouterr().err

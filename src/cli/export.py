"""``exptrain export``: a checkpoint's model as safetensors + JSON, TorchScript or ONNX.

``safetensors`` (the default) writes ``model.safetensors`` (the weights, no pickle) and
``model.json`` (the ``model_config`` ``build_model`` rebuilds the model from, the input
shape, normalisation and class names); ``load_exported`` rebuilds the model from the two
without unpickling anything. ``torchscript`` writes ``model.torchscript.pt``, ``onnx``
writes ``model.onnx`` (needs the ``onnx`` package), each with the same record beside it
(``model.torchscript.json``, ``model.onnx.json``). Every export is loaded back and run
on a fixed batch before the command reports success: safetensors and TorchScript must
give identical outputs, ONNX (checked when onnxruntime is installed) agree to 1e-4.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import warnings
from pathlib import Path
from typing import Any, Dict, Optional

import torch
import torch.nn as nn

from ..errors import write_error
from ..models import build_model
from ..utils.io import atomic_write_bytes
from .checkpoints import describe, input_shape, load_model
from .common import (
    EXPORT_DIR,
    ToolError,
    checkpoint_file_name,
    find_experiment,
    output_directory,
    print_warning,
    read_config,
    refuse_if_running,
)
from .predict import data_description

FORMATS = ("safetensors", "torchscript", "onnx")
CONFIG_NAME = "model.json"
FILE_NAMES = {"safetensors": "model.safetensors", "torchscript": "model.torchscript.pt", "onnx": "model.onnx"}
# The record beside the weights: model.json is the rebuild recipe of the safetensors export.
RECORD_NAMES = {"safetensors": CONFIG_NAME, "torchscript": "model.torchscript.json", "onnx": "model.onnx.json"}
EXPORT_VERSION = 1
ONNX_TOLERANCE = 1e-4


def load_exported(directory: str) -> nn.Module:
    """Rebuild a model exported as safetensors (``model.json`` + ``model.safetensors``),
    in eval mode; nothing is unpickled.

    Raises:
        ToolError: a missing or damaged file, or weights that do not fit the model.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    try:
        record = json.loads((directory / CONFIG_NAME).read_text(encoding="utf-8"))
        model_config = record["model_config"]
        model = build_model(model_config)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ToolError(
            f"{directory / CONFIG_NAME} is missing or not an export record ({type(exc).__name__}: {exc})."
        ) from None
    try:
        state = load_file(str(directory / FILE_NAMES["safetensors"]))
    except (OSError, SafetensorError) as exc:
        raise ToolError(f"{directory / FILE_NAMES['safetensors']} cannot be read ({exc}).") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ToolError(
            f"{directory / FILE_NAMES['safetensors']} does not fit {model_config.get('name')!r}: "
            f"{str(exc).splitlines()[0]}"
        ) from None
    return model.eval()


def _serialize(model: nn.Module, fmt: str, example: torch.Tensor) -> bytes:
    if fmt == "safetensors":
        from safetensors.torch import save

        return save({k: v.detach().contiguous() for k, v in model.state_dict().items()}, metadata={"format": "pt"})
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / FILE_NAMES[fmt]
        with warnings.catch_warnings():  # torch.jit and the TorchScript ONNX exporter warn that they are deprecated
            warnings.simplefilter("ignore")
            if fmt == "torchscript":
                try:
                    scripted = torch.jit.script(model)
                except Exception:  # a model scripting cannot compile: record one traced path
                    scripted = torch.jit.trace(model, example)
                torch.jit.save(scripted, str(path))
            else:
                _export_onnx(model, example, path)
        return path.read_bytes()


def _export_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    from importlib.util import find_spec

    if find_spec("onnx") is None:
        raise ToolError(
            "ONNX export needs the onnx package (pip install onnx); nothing was written. "
            "The default --format safetensors needs no extra package."
        )
    dynamo = find_spec("onnxscript") is not None  # else the TorchScript-based exporter, which needs only onnx
    torch.onnx.export(
        model,
        (example,),
        str(path),
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        dynamo=dynamo,
    )


def _check_round_trip(model: nn.Module, fmt: str, data: bytes, example: torch.Tensor, target: Path) -> Dict[str, Any]:
    """Load the exported bytes back and compare outputs on ``example``."""
    with torch.inference_mode():
        expected = model(example)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        (scratch / FILE_NAMES[fmt]).write_bytes(data)
        if fmt == "safetensors":
            (scratch / CONFIG_NAME).write_text(json.dumps({"model_config": model.model_config}))
            with torch.inference_mode():
                got = load_exported(str(scratch))(example)
        elif fmt == "torchscript":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                reloaded = torch.jit.load(str(scratch / FILE_NAMES[fmt]), map_location="cpu")
            with torch.inference_mode():
                got = reloaded(example)
        else:
            try:
                import onnxruntime
            except ImportError:
                return {"checked": False, "why": "onnxruntime is not installed"}
            session = onnxruntime.InferenceSession(str(scratch / FILE_NAMES[fmt]), providers=["CPUExecutionProvider"])
            got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: example.numpy()})[0])
    difference = float((got.float() - expected.float()).abs().max())
    identical = bool(torch.equal(got, expected))
    limit = ONNX_TOLERANCE if fmt == "onnx" else 0.0
    if difference > limit:
        raise ToolError(
            f"The {fmt} export of {target} does not reproduce the model (largest output difference "
            f"{difference:.3g}); it was not written."
        )
    return {"checked": True, "identical": identical, "max_abs_difference": difference}


def export_experiment(
    runs_dir: str, name: str, checkpoint: str = "best", fmt: str = "safetensors", out: Optional[str] = None
) -> Dict[str, Any]:
    """Export checkpoint ``checkpoint`` of experiment ``name``; returns the record
    written as ``model.json`` (with ``files`` and the round-trip ``check``).

    Raises:
        ToolError: a bad name or format, a running experiment (without ``out``), ONNX
            without the onnx package, an export that does not reproduce the model.
        CheckpointError: a damaged checkpoint. WriteError: the files could not be written.
    """
    if fmt not in FORMATS:
        raise ToolError(f"Unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}.")
    experiment_dir = find_experiment(Path(runs_dir), name)
    checkpoint_file_name(checkpoint)
    target, inside = output_directory(experiment_dir, out, experiment_dir / EXPORT_DIR / checkpoint)
    config = read_config(experiment_dir)
    loaded = load_model(experiment_dir, checkpoint)
    shape = input_shape(config, loaded.model_config)
    description = data_description(config, warn=print_warning)
    example = torch.randn((2, *shape), generator=torch.Generator().manual_seed(0))
    data = _serialize(loaded.model, fmt, example)
    check = _check_round_trip(loaded.model, fmt, data, example, target)
    record = {
        "format_version": EXPORT_VERSION,
        "format": fmt,
        "weights": FILE_NAMES[fmt],
        "weights_sha256": hashlib.sha256(data).hexdigest(),
        "model_config": loaded.model_config,
        "input_shape": list(shape),
        "normalisation": {"mean": description["mean"], "std": description["std"], "formula": "(x / 255 - mean) / std"},
        "class_names": description["class_names"],
        "dataset": config.get("dataset"),
        "experiment": name,
        "checkpoint": {"name": checkpoint, **describe(loaded)},
        "check": check,
    }
    record["files"] = [str(target / FILE_NAMES[fmt]), str(target / RECORD_NAMES[fmt])]
    if inside:
        refuse_if_running(experiment_dir)  # a resume may have started meanwhile
    try:
        target.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target / FILE_NAMES[fmt], data)
        atomic_write_bytes(target / RECORD_NAMES[fmt], (json.dumps(record, indent=2) + "\n").encode())
    except OSError as exc:
        raise write_error(target, exc, "write the export into") from None
    return record


def run(args) -> int:
    """``exptrain export``: export, verify, report."""
    record = export_experiment(args.runs_dir, args.experiment, args.checkpoint, args.format, args.out)
    check = record["check"]
    if not check["checked"]:
        verdict = f"not checked: {check['why']}"
    elif check["identical"]:
        verdict = "reloaded: identical outputs"
    else:
        verdict = f"reloaded: outputs agree to {check['max_abs_difference']:.1e}"
    source = record["checkpoint"]
    print(
        f"Exported {record['experiment']} {Path(source['file']).name} (epoch {source['epoch']}) as {record['format']} "
        f"({verdict})."
    )
    for path in record["files"]:
        print(f"Wrote {path}")
    return 0

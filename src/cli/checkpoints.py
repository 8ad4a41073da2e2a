"""Rebuild an experiment's model from one checkpoint alone, read-only and verified.

The checkpoint's ``model_config`` names the registered model and its arguments, so
``build_model`` rebuilds it without the training code; the weights are loaded with the
project's verified loader (``CheckpointManager(read_only=True)``: bytes checked against
the manifest, ``weights_only`` unpickling). Nothing in the experiment is written.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import torch.nn as nn

from ..models import build_model
from ..training import state_keys as keys
from ..training.checkpoint import CheckpointManager, load_model_state
from .common import CHECKPOINTS_DIR, ToolError, checkpoint_file_name, number, print_warning


class LoadedModel(NamedTuple):
    """A model rebuilt from a checkpoint, in eval mode on the CPU, and where it came from."""

    model: nn.Module
    model_config: Dict[str, Any]
    path: Path
    sha256: Optional[str]  # of the very bytes loaded (None for a file without a manifest)
    epoch: int
    step: int
    mid_epoch: bool  # saved inside an epoch: its recorded accuracy is not a validation one
    accuracy: Optional[float]


def available_checkpoints(checkpoints_dir: Path) -> List[str]:
    """The ``--checkpoint`` names that have a file: best, latest, epoch_N (by epoch)."""
    names = []
    if (checkpoints_dir / "best_model.pt").is_file():
        names.append("best")
    if (checkpoints_dir / "latest_checkpoint.pt").is_file():
        names.append("latest")
    epochs = sorted(int(p.stem[6:]) for p in checkpoints_dir.glob("epoch_*.pt") if p.stem[6:].isdigit())
    return names + [f"epoch_{e}" for e in epochs]


def read_checkpoint(
    experiment_dir: Path, choice: str, warn=print_warning
) -> Tuple[Path, Dict[str, Any], Optional[str]]:
    """``(path, payload, sha256)`` of checkpoint ``choice`` of an experiment, verified.

    ``latest`` is the newest valid checkpoint by recorded (epoch, step), passing over
    damaged files with a warning. A file without a manifest (saved by other code) is
    loaded unverified with a warning.

    Raises:
        ToolError: a bad name, a missing file (the available ones are listed).
        CheckpointError: the file is damaged, does not match its manifest, or holds
            objects safe loading refuses.
    """
    file_name = checkpoint_file_name(choice)
    directory = Path(experiment_dir) / CHECKPOINTS_DIR
    if not directory.is_dir():
        raise ToolError(
            f"Experiment {Path(experiment_dir).name!r} has no {CHECKPOINTS_DIR}/ directory; "
            "it saved no checkpoint to use."
        )
    manager = CheckpointManager(directory, read_only=True)
    if file_name is None:
        found = manager.latest_valid()
        for problem in found.problems:
            warn(f"skipping damaged checkpoint {problem}")
        if found.path is None:
            raise ToolError(
                f"Experiment {Path(experiment_dir).name!r} has no valid checkpoint"
                + (f" ({'; '.join(found.problems)})." if found.problems else ".")
            )
        return found.path, found.payload, found.entry["sha256"]
    path = directory / file_name
    if not path.is_file():
        known = available_checkpoints(directory)
        raise ToolError(
            f"Experiment {Path(experiment_dir).name!r} has no {file_name}; available checkpoints: "
            f"{', '.join(known) if known else 'none'}."
        )
    for _ in range(3):  # the lock holder may replace the file between the check and the load
        ok, reason, entry = manager.verify(path)
        if not ok and "no manifest" in reason:
            warn(f"{path} has no manifest; it was loaded unverified.")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return path, manager.read(path, verify=False), None
        payload = manager.read(path)  # verifies again; raises CheckpointCorruptError for damage
        if entry is not None and (entry["epoch"], entry["step"]) == (
            payload.get(keys.EPOCH),
            payload.get(keys.GLOBAL_STEP, 0),
        ):
            return path, payload, entry["sha256"]
    raise ToolError(f"{path} kept changing while it was read (the run is saving); try again.")


def load_model(experiment_dir: Path, choice: str, warn=print_warning) -> LoadedModel:
    """Rebuild the model of checkpoint ``choice`` (best, latest, epoch_N) of an experiment.

    Raises:
        ToolError: a bad or missing checkpoint name, or a checkpoint without a recorded
            model configuration.
        CheckpointError: a damaged checkpoint, or weights that do not fit the model.
    """
    path, payload, sha256 = read_checkpoint(experiment_dir, choice, warn)
    model_config = payload.get(keys.MODEL_CONFIG)
    if not isinstance(model_config, dict) or not isinstance(model_config.get("name"), str):
        raise ToolError(
            f"{path} records no model configuration (the model was not built from ModelRegistry), "
            "so it cannot be rebuilt from the checkpoint alone."
        )
    try:
        model = build_model(model_config)
    except KeyError as exc:  # an unregistered model name
        raise ToolError(f"{path} needs {str(exc).strip(chr(39))}") from None
    load_model_state(model, payload[keys.MODEL], strict=True, source=str(path))
    model.eval()
    return LoadedModel(
        model,
        dict(model_config),
        path,
        sha256,
        int(payload.get(keys.EPOCH, 0)),
        int(payload.get(keys.GLOBAL_STEP, 0)),
        bool(payload.get(keys.MID_EPOCH, False)),
        number(payload.get(keys.ACCURACY)),
    )


def input_shape(config: Dict[str, Any], model_config: Dict[str, Any]) -> Tuple[int, int, int]:
    """``(channels, height, width)`` the model takes: the recorded data's, else the model's."""
    recorded = (
        (config.get("data_fingerprint") or {}).get("input_shape")
        if isinstance(config.get("data_fingerprint"), dict)
        else None
    )
    if isinstance(recorded, list) and len(recorded) == 3 and all(isinstance(v, int) and v > 0 for v in recorded):
        return tuple(recorded)
    channels, size = model_config.get("in_channels"), model_config.get("input_size")
    if isinstance(channels, int) and isinstance(size, int):
        return channels, size, size
    raise ToolError("Neither the configuration nor the checkpoint records the input shape of the model.")


def describe(loaded: LoadedModel) -> Dict[str, Any]:
    """The provenance of a loaded checkpoint, for the JSON records the tools write."""
    return {
        "file": str(loaded.path),
        "epoch": loaded.epoch,
        "step": loaded.step,
        "mid_epoch": loaded.mid_epoch,
        "sha256": loaded.sha256,
        "recorded_accuracy": loaded.accuracy,
    }

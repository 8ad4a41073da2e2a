"""``exptrain predict``: the top-k classes of image files, with probabilities.

Each image is converted to the model's channels (grey or RGB) and input size, then
normalised with the data set's mean and std exactly as the training loader does. The
data set itself is not loaded; nothing is written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Sequence

import torch

from ..datasets import DatasetRegistry
from .checkpoints import input_shape, load_model
from .common import ToolError, class_names_for, find_experiment, number, read_config

MODES = {1: "L", 3: "RGB"}


def normalisation(config: Dict[str, Any]):
    """``(mean, std, data set class)`` of the configuration's data set (class attributes)."""
    name = config.get("dataset")
    if not isinstance(name, str) or name not in DatasetRegistry:
        raise ToolError(f"The configuration's dataset {name!r} is not available: {DatasetRegistry.unknown_message(name)}")
    factory = DatasetRegistry.get(name)
    mean, std = number(getattr(factory, "mean", None)), number(getattr(factory, "std", None))
    if mean is None or std is None or std <= 0:
        raise ToolError(f"Data set {name!r} declares no mean and std, so its normalisation is unknown.")
    return mean, std, factory


def load_images(paths: Sequence[str], shape, invert: bool = False) -> torch.Tensor:
    """uint8 ``(N, C, H, W)`` from image files, converted and resized to ``shape``.

    Raises:
        ToolError: a missing or unreadable file, or a model with neither 1 nor 3 channels.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    channels, height, width = shape
    if channels not in MODES:
        raise ToolError(f"The model takes {channels}-channel images; predict reads grey (1) or RGB (3) images only.")
    arrays = []
    for path in paths:
        if not Path(path).is_file():
            raise ToolError(f"Image {path} does not exist" + (" (it is a directory)." if Path(path).is_dir() else "."))
        try:
            with Image.open(path) as image:
                image.load()
                converted = image.convert(MODES[channels])
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
            raise ToolError(f"Image {path} cannot be read as an image ({type(exc).__name__}); "
                            "give PNG, JPEG or another format Pillow reads.") from None
        if converted.size != (width, height):
            converted = converted.resize((width, height), Image.Resampling.BILINEAR)
        if invert:
            converted = ImageOps.invert(converted)
        tensor = torch.frombuffer(bytearray(converted.tobytes()), dtype=torch.uint8)
        arrays.append(tensor.reshape(height, width, channels).permute(2, 0, 1))
    return torch.stack(arrays).contiguous()


def normalise(images: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """The training loader's formula, ``(x / 255 - mean) / std`` as one fused operation."""
    offset = torch.tensor(-mean / std, dtype=torch.float32)
    return torch.add(offset, images, alpha=1.0 / (255.0 * std))


def predict_images(runs_dir: str, name: str, images: Sequence[str], checkpoint: str = "best", top_k: int = 3,
                   invert: bool = False) -> List[Dict[str, Any]]:
    """Top-``top_k`` classes of each image: ``[{"image", "predictions": [{"class",
    "name", "probability"}]}]``.

    Raises:
        ToolError: a bad experiment, checkpoint, image or ``top_k``; CheckpointError.
    """
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise ToolError(f"--top-k must be a whole number >= 1, got {top_k!r}.")
    experiment_dir = find_experiment(Path(runs_dir), name)
    config = read_config(experiment_dir)
    mean, std, factory = normalisation(config)
    for path in images:  # a typo is found before the model is loaded
        if not Path(path).is_file():
            raise ToolError(f"Image {path} does not exist" + (" (it is a directory)." if Path(path).is_dir() else "."))
    loaded = load_model(experiment_dir, checkpoint)
    pixels = load_images(images, input_shape(config, loaded.model_config), invert)
    with torch.inference_mode():
        probabilities = loaded.model(normalise(pixels, mean, std)).float().softmax(1)
    classes = probabilities.shape[1]
    names = class_names_for(config.get("dataset"), classes, factory)
    values, indices = probabilities.topk(min(top_k, classes), dim=1)
    return [{"image": str(path), "predictions": [
        {"class": int(i), "name": names[int(i)], "probability": float(p)} for p, i in zip(row_p, row_i)]}
        for path, row_p, row_i in zip(images, values, indices)]


def run(args) -> int:
    """``exptrain predict``: print each image's top classes."""
    results = predict_images(args.runs_dir, args.experiment, args.images, args.checkpoint, args.top_k, args.invert)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for result in results:
        shown = ", ".join(f"{p['name']} {100 * p['probability']:.1f}%" for p in result["predictions"])
        print(f"{result['image']}: {shown}")
    return 0

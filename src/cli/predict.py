"""``exptrain predict``: the top-k classes of image files, with probabilities.

Each image is converted to the model's channels (grey or RGB) and input size, then
normalised with the data set's mean and std (per channel where it has them) by the
training loader itself. Nothing is written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Sequence

import torch

from ..datasets import DatasetRegistry, TensorLoader
from .checkpoints import input_shape, load_model
from .common import print_warning, ToolError, class_names_for, find_experiment, read_config

MODES = {1: "L", 3: "RGB"}


def data_description(config: Dict[str, Any], warn=None) -> Dict[str, Any]:
    """``{"mean", "std", "class_names", "num_classes"}`` of the run's data set.

    The data set is built (read-only, no download) for its exact normalisation (which
    may be computed from the data) and class names; when its files are not here, the
    normalisation recorded in ``config.json``'s data fingerprint or declared by the data
    set's class is used, with a warning.

    Raises:
        ToolError: the data set is unknown, or unavailable with no recorded normalisation.
    """
    from ..datasets import DataError
    from .evaluate import build_dataset

    name = config.get("dataset")
    try:
        dataset = build_dataset(config)
    except DataError as exc:
        if not isinstance(name, str) or name not in DatasetRegistry:
            raise
        factory = DatasetRegistry.get(name)
        fingerprint = config.get("data_fingerprint") if isinstance(config.get("data_fingerprint"), dict) else {}
        mean = fingerprint.get("mean", getattr(factory, "mean", None))
        std = fingerprint.get("std", getattr(factory, "std", None))
        classes = fingerprint.get("num_classes")
        if mean is None or std is None or not isinstance(classes, int):
            raise ToolError(
                f"The {name} data is not available here, and its normalisation was not recorded: {exc}"
            ) from None
        if warn is not None:
            warn(f"the {name} data is not available here, so its recorded normalisation is used ({exc})")
        return {
            "mean": mean,
            "std": std,
            "num_classes": classes,
            "class_names": class_names_for(name, classes, factory),
        }
    return {
        "mean": dataset.mean,
        "std": dataset.std,
        "num_classes": int(dataset.num_classes),
        "class_names": class_names_for(name, int(dataset.num_classes), dataset),
    }


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
            raise ToolError(
                f"Image {path} cannot be read as an image ({type(exc).__name__}); "
                "give PNG, JPEG or another format Pillow reads."
            ) from None
        if converted.size != (width, height):
            converted = converted.resize((width, height), Image.Resampling.BILINEAR)
        if invert:
            converted = ImageOps.invert(converted)
        tensor = torch.frombuffer(bytearray(converted.tobytes()), dtype=torch.uint8)
        arrays.append(tensor.reshape(height, width, channels).permute(2, 0, 1))
    return torch.stack(arrays).contiguous()


def normalise(images: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 ``images`` as the training loader serves them, ``(x / 255 - mean) / std``
    (by the loader itself, so the float operations are the same)."""
    loader = TensorLoader(images, torch.zeros(images.shape[0], dtype=torch.long), images.shape[0], mean, std)
    return next(iter(loader))[0]


def predict_images(
    runs_dir: str, name: str, images: Sequence[str], checkpoint: str = "best", top_k: int = 3, invert: bool = False
) -> List[Dict[str, Any]]:
    """Top-``top_k`` classes of each image: ``[{"image", "predictions": [{"class",
    "name", "probability"}]}]``.

    Raises:
        ToolError: a bad experiment, checkpoint, image or ``top_k``; CheckpointError.
    """
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise ToolError(f"--top-k must be a whole number >= 1, got {top_k!r}.")
    experiment_dir = find_experiment(Path(runs_dir), name)
    config = read_config(experiment_dir)
    for path in images:  # a typo is found before the model is loaded
        if not Path(path).is_file():
            raise ToolError(f"Image {path} does not exist" + (" (it is a directory)." if Path(path).is_dir() else "."))
    loaded = load_model(experiment_dir, checkpoint)
    pixels = load_images(images, input_shape(config, loaded.model_config), invert)
    data = data_description(config, warn=print_warning)
    with torch.inference_mode():
        probabilities = loaded.model(normalise(pixels, data["mean"], data["std"])).float().softmax(1)
    classes = probabilities.shape[1]
    names = data["class_names"] if len(data["class_names"]) == classes else [str(i) for i in range(classes)]
    values, indices = probabilities.topk(min(top_k, classes), dim=1)
    return [
        {
            "image": str(path),
            "predictions": [
                {"class": int(i), "name": names[int(i)], "probability": float(p)} for p, i in zip(row_p, row_i)
            ],
        }
        for path, row_p, row_i in zip(images, values, indices)
    ]


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

"""A plug-in: your own model and data set, trained from the command line.

    python train.py --import examples/plugin_example.py --model tiny_cnn --dataset stripes --epochs 2

``--import`` runs this file before the run is configured, so the two decorators below
make ``tiny_cnn`` and ``stripes`` names that ``--model`` and ``--dataset`` accept. The run
records the file (its path and a SHA-256 of its bytes) in ``config.json``:
``--resume`` imports it again by itself, and refuses if it changed; ``--fork`` accepts
the changed file and records its new hash.

Options reach the constructors from the command line, for example
``--model-option width=16`` or ``--dataset-option num_samples=4096``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from src.datasets import BaseDataset, DatasetRegistry
from src.errors import ConfigError  # bad input: exit 2, one line (any other exception is reported as a bug)
from src.models import ModelRegistry


# -- a data set: subclass BaseDataset and implement __init__ --------------------------------
@DatasetRegistry.register("stripes")
class StripesDataset(BaseDataset):
    """Class 0: horizontal stripes; class 1: vertical stripes (random period, phase and noise).

    The run calls the constructor with ``augment`` and ``seed`` (and ``data_dir`` only when
    ``--data-dir`` is given); every other argument is a ``--dataset-option``. BaseDataset
    does the rest: normalisation, the seeded augmentation, the loaders, the fingerprint.

    Args:
        num_samples: training images (the validation split gets a quarter as many).
        image_size: height and width of the square images.
        augment, seed: passed on to ``BaseDataset``.
        data_dir: accepted and ignored (the images are generated, not read).
    """

    name = "stripes"  # used in messages and in describe()
    classes_count = 2  # (or pass num_classes=2 to _set_data)

    def __init__(
        self, num_samples: int = 2048, image_size: int = 16, augment: bool = True, seed: int = 42, data_dir=None
    ):
        super().__init__(augment=augment, seed=seed)  # checks augment and seed, sets self.seed
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ConfigError(f"stripes: --dataset-option num_samples must be an integer >= 1, got {num_samples!r}.")
        if isinstance(image_size, bool) or not isinstance(image_size, int) or not 4 <= image_size <= 256:
            raise ConfigError(
                f"stripes: --dataset-option image_size must be an integer from 4 to 256, got {image_size!r}."
            )
        rng = np.random.default_rng(self.seed)  # the same seed gives the same data

        def make(count: int):
            labels = rng.integers(0, 2, size=count)  # 0 horizontal, 1 vertical
            period = rng.integers(2, 5, size=(count, 1, 1))
            phase = rng.integers(0, 4, size=(count, 1, 1))
            rows = np.arange(image_size).reshape(1, -1, 1)
            cols = np.arange(image_size).reshape(1, 1, -1)
            position = np.where(labels.reshape(-1, 1, 1) == 0, rows, cols)  # (count, size, size)
            stripes = ((position + phase) // period) % 2 * 200.0
            pixels = stripes + rng.normal(0, 30, size=stripes.shape)
            return np.clip(pixels, 0, 255).astype(np.uint8), labels

        train_images, train_labels = make(num_samples)
        test_images, test_labels = make(max(1, num_samples // 4))
        # uint8 images, (N, H, W) or (N, C, H, W), and integer labels 0 .. classes_count - 1;
        # the validation split is the test split.
        self._set_data(train_images, train_labels, test_images, test_labels)


# -- a model: any nn.Module taking num_classes, in_channels and input_size ------------------
@ModelRegistry.register("tiny_cnn")
class TinyCNN(nn.Module):
    """Two convolutions, a global average pool and a linear classifier.

    The run passes ``num_classes``, ``in_channels`` and ``input_size`` (image height) from
    the data set; every other argument is a ``--model-option``. ``forward`` maps a batch
    ``(N, in_channels, H, W)`` of normalised images to logits ``(N, num_classes)``.

    Args:
        width: channels of the first convolution (the second has twice as many).
    """

    def __init__(self, num_classes: int, in_channels: int, input_size: int, width: int = 8):
        super().__init__()
        self.width = width
        self.num_classes, self.in_channels, self.input_size = num_classes, in_channels, input_size
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(2 * width, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)

    # Optional: with model_config, every checkpoint records how to rebuild the model
    # (src.models.build_model(checkpoint["model_config"])), and a resume or fork checks that
    # the checkpoint was saved from the same architecture. Without it, both still work.
    @property
    def model_config(self) -> dict:
        return {
            "name": "tiny_cnn",
            "num_classes": self.num_classes,
            "in_channels": self.in_channels,
            "input_size": self.input_size,
            "width": self.width,
        }

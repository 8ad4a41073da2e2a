"""A random but learnable data set of any shape and class count (smoke tests, benchmarks)."""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from .base import BaseDataset
from .registry import DatasetRegistry


@DatasetRegistry.register("synthetic")
class SyntheticDataset(BaseDataset):
    """Each class is a random uint8 prototype image; samples are noisy copies of it.

    Args:
        num_samples: training samples (the validation split gets a quarter as many, at least 1).
        num_classes: number of classes.
        input_shape: ``(C, H, W)``.
        noise: standard deviation of the pixel noise (0-255 scale); larger is harder.
        data_dir: accepted for a uniform interface and ignored.
    """

    name = "synthetic"

    def __init__(
        self,
        num_samples: int = 2048,
        num_classes: int = 10,
        input_shape: Sequence[int] = (1, 28, 28),
        noise: float = 60.0,
        augment: bool = False,
        seed: int = 42,
        data_dir: Optional[str] = None,
    ):
        super().__init__(augment=augment, seed=seed)
        if num_samples <= 0 or num_classes <= 1:
            raise ValueError(f"synthetic needs num_samples > 0 and num_classes > 1, got {num_samples} and {num_classes}.")
        shape = tuple(int(d) for d in input_shape)
        if len(shape) != 3 or min(shape) <= 0:
            raise ValueError(f"input_shape must be (channels, height, width), got {input_shape!r}.")
        generator = torch.Generator().manual_seed(seed)
        prototypes = torch.rand((num_classes, *shape), generator=generator) * 255

        def make(n: int):
            labels = torch.arange(n) % num_classes
            labels = labels[torch.randperm(n, generator=generator)]
            pixels = prototypes[labels] + torch.randn((n, *shape), generator=generator) * noise
            return pixels.round().clamp(0, 255).to(torch.uint8), labels

        train_images, train_labels = make(num_samples)
        test_images, test_labels = make(max(1, num_samples // 4))
        self._set_data(train_images, train_labels, test_images, test_labels)
        self._num_classes = num_classes

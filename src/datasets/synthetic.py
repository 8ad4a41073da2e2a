"""A random but learnable data set of any shape and class count (smoke tests, benchmarks)."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from ..errors import ConfigError
from .base import BaseDataset
from .. import checks
from ..checks import BUDGET_TEXT, check_int, check_int_list, check_number, format_bytes, product
from .registry import DatasetRegistry

FLAG = "--dataset-option"
# Rows of the float working buffer that get their class prototype added at a time: bounds
# the temporary copy of the prototypes to about this many bytes.
_CHUNK_BYTES = 16 << 20


@DatasetRegistry.register("synthetic")
class SyntheticDataset(BaseDataset):
    """Each class is a random uint8 prototype image; samples are noisy copies of it.

    Args:
        num_samples: training samples, an integer >= 1 (the validation split gets a
            quarter as many, at least 1).
        num_classes: number of classes, an integer >= 2.
        input_shape: ``(C, H, W)``, three integers >= 1; height and width may differ.
        noise: standard deviation of the pixel noise (0-255 scale), a finite number >= 0;
            larger is harder.
        data_dir: accepted for a uniform interface and ignored.

    Raises:
        ConfigError: a bad option, or one whose arrays would not fit the memory budget
            (the smaller of 1 GiB and a quarter of physical memory, counting the uint8
            images, the labels and the float working buffer).
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
        augmentation: Optional[str] = None,
    ):
        super().__init__(augment=augment, seed=seed, augmentation=augmentation)
        num_samples = check_int(num_samples, self.name, "num_samples", 1, flag=FLAG)
        num_classes = check_int(num_classes, self.name, "num_classes", 2, flag=FLAG)
        shape = tuple(
            check_int_list(
                input_shape,
                self.name,
                "input_shape",
                length=3,
                flag=FLAG,
                example="[1, 28, 28] (channels, height, width)",
            )
        )
        noise = check_number(noise, self.name, "noise", 0, flag=FLAG)
        num_test = max(1, num_samples // 4)
        _check_memory(num_samples, num_test, num_classes, shape)

        generator = torch.Generator().manual_seed(self.seed)
        prototypes = torch.rand((num_classes, *shape), generator=generator) * 255
        chunk = max(1, _CHUNK_BYTES // (4 * product(shape)))

        def make(n: int):
            labels = torch.arange(n) % num_classes
            labels = labels[torch.randperm(n, generator=generator)]
            # prototype + noise, computed in place (the same floats as the plain expression,
            # at a fifth of its peak memory).
            pixels = torch.randn((n, *shape), generator=generator).mul_(noise)
            for start in range(0, n, chunk):
                pixels[start : start + chunk].add_(prototypes[labels[start : start + chunk]])
            return pixels.round_().clamp_(0, 255).to(torch.uint8), labels

        train_images, train_labels = make(num_samples)
        test_images, test_labels = make(num_test)
        self._set_data(train_images, train_labels, test_images, test_labels, num_classes=num_classes)


def _peak_bytes(num_train: int, num_test: int, num_classes: int, shape: Sequence[int]) -> int:
    """Peak memory of generation: the uint8 images and int64 labels (a few copies while
    shuffling) of both splits, the float working buffer of the larger split, the prototypes
    and one chunk of prototype copies."""
    pixels = product(shape)
    chunk_rows = min(num_train, max(1, _CHUNK_BYTES // (4 * pixels)))
    return (
        (num_train + num_test) * (pixels + 3 * 8)
        + num_train * pixels * 4
        + num_classes * pixels * 4
        + chunk_rows * pixels * 4
    )


def _check_memory(num_train: int, num_test: int, num_classes: int, shape: Sequence[int]) -> None:
    budget = checks.memory_budget_bytes()
    needed = _peak_bytes(num_train, num_test, num_classes, shape)
    if needed <= budget:
        return
    low, high = 0, num_train  # the largest num_samples that fits, for the message
    while low < high:
        middle = (low + high + 1) // 2
        if _peak_bytes(middle, max(1, middle // 4), num_classes, shape) <= budget:
            low = middle
        else:
            high = middle - 1
    limit = f"over the {format_bytes(budget)} limit ({BUDGET_TEXT})"
    if low >= 1:
        raise ConfigError(
            f"{FLAG} num_samples={num_train} for synthetic with input_shape {list(shape)} would need "
            f"{format_bytes(needed)} to generate, {limit}; use num_samples <= {low:,} or a smaller input_shape."
        )
    if _peak_bytes(1, 1, 2, shape) > budget:
        raise ConfigError(
            f"{FLAG} input_shape={list(shape)} for synthetic would need {format_bytes(_peak_bytes(1, 1, 2, shape))} "
            f"even for one sample, {limit}; use a smaller input_shape."
        )
    raise ConfigError(
        f"{FLAG} num_classes={num_classes} for synthetic with input_shape {list(shape)} would need "
        f"{format_bytes(needed)}, most of it for one prototype image per class, {limit}; use fewer classes."
    )

"""What validation evaluates: the loss it reports and the forward pass it runs.

* The validation loss is plain cross-entropy even when training smooths its labels
  (``--label-smoothing``): a smoothed loss never reaches 0 and would not be comparable
  between runs with different smoothing.
* ``--tta-flip`` evaluates each image and its horizontal mirror image and averages the
  two logits (test-time augmentation). Only data whose training augmentation policy
  flips images (``crop-flip``: natural images) allows it: a mirrored digit is another
  symbol, so digit and ``affine``-policy data sets refuse it.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn as nn

from ..errors import ConfigError
from .protocols import augmentation_policy

FLIP_POLICIES = ("crop-flip",)  # augmentation policies under which a mirrored image is the same class


def evaluation_criterion(criterion: nn.Module) -> nn.Module:
    """``criterion`` for validation: a ``CrossEntropyLoss`` with label smoothing becomes the
    same loss without it (same weights, ignore index, reduction); anything else is kept."""
    if isinstance(criterion, nn.CrossEntropyLoss) and criterion.label_smoothing:
        return nn.CrossEntropyLoss(
            weight=criterion.weight, ignore_index=criterion.ignore_index, reduction=criterion.reduction
        )
    return criterion


Forward = Callable[[torch.Tensor], torch.Tensor]


def evaluation_forward(model: Forward, tta_flip: bool) -> Forward:
    """The forward pass of validation: ``model`` itself, or with ``tta_flip`` the mean of
    its logits on the images and on their mirror images (flipped along the width)."""
    if not tta_flip:
        return model

    def flip_averaged(images: torch.Tensor) -> torch.Tensor:
        return (model(images) + model(images.flip(-1))) * 0.5

    return flip_averaged


def check_tta_flip(dataset: Any, dataset_name: str) -> None:
    """Refuse ``--tta-flip`` for a data set whose images must not be mirrored.

    Raises:
        ConfigError: the data set's augmentation policy is not ``crop-flip`` (digits,
            ``affine`` or ``none``), naming the policy and what to do.
    """
    policy = augmentation_policy(dataset)
    if policy not in FLIP_POLICIES:
        raise ConfigError(
            f"--tta-flip averages predictions over mirrored images, but {dataset_name!r} uses the "
            f"{policy or 'no'} augmentation policy, which never flips (a mirrored digit is another symbol). "
            "Leave out --tta-flip, or choose --augment crop-flip if mirror images are valid for this data."
        )

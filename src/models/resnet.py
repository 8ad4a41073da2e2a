"""ResNets for small images: ``resnet18`` (the CIFAR variant) and ``resnet20`` / ``resnet56``
(He et al., "Deep Residual Learning for Image Recognition", 2016, section 4.2).

``resnet18`` is the ImageNet ResNet-18 (four stages of two basic blocks, widths 64-512)
with the stem usual for 32x32 images: one 3x3 convolution at stride 1 and no max pool
(as in github.com/kuangliu/pytorch-cifar); a shortcut that changes shape is a 1x1
convolution with batch norm. About 11.2M parameters.

``resnet20`` / ``resnet56`` are the paper's CIFAR networks: a 3x3 stem of 16 channels,
three stages of 3 (resp. 9) basic blocks with 16, 32 and 64 channels, and the paper's
parameter-free shortcut (option A: subsample, then pad the new channels with zeros).
About 0.27M and 0.85M parameters.

All end in global average pooling, so any image of at least ``MIN_INPUT_SIZE`` pixels a
side works, square or not (``input_size`` only sets that check). Convolutions use He
initialisation (fan-out); every operation is deterministic on the CPU.
"""

from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..checks import check_int, check_parameter_budget
from .registry import MODEL_FLAG, ConfigurableModel, ModelRegistry, check_data_arguments


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers and a shortcut; ReLU after the sum.

    Args:
        projection: for a shortcut that changes shape, a 1x1 conv + BN (True) or the
            paper's subsample-and-zero-pad (False, option A; only for doubling widths).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, projection: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.stride = stride
        self.pad_channels = 0
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            if projection:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                    nn.BatchNorm2d(out_channels),
                )
            else:
                self.pad_channels = out_channels - in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        if self.pad_channels:  # option A: a strided 1x1 "conv" that keeps channels, zeros after
            x = F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, 0, self.pad_channels))
        else:
            x = self.shortcut(x)
        return F.relu(out + x, inplace=True)


def block_parameters(in_channels: int, out_channels: int, stride: int, projection: bool) -> int:
    """The exact parameter count of ``BasicBlock(in_channels, out_channels, stride, projection)``."""
    count = 9 * in_channels * out_channels + 9 * out_channels * out_channels + 4 * out_channels
    if projection and (stride != 1 or in_channels != out_channels):
        count += in_channels * out_channels + 2 * out_channels
    return count


class _ResNet(ConfigurableModel):
    """stem (3x3 conv-BN-ReLU) -> stages of basic blocks -> global average pool -> linear.

    Subclasses set ``NAME``, ``BLOCKS`` (blocks per stage; the width doubles and the
    resolution halves at each stage after the first), ``PROJECTION`` and ``DEFAULT_WIDTH``.
    """

    NAME = ""
    BLOCKS: Sequence[int] = ()
    PROJECTION = True
    accepts_non_square_inputs = True

    def __init__(self, num_classes: int, in_channels: int, input_size: int, width: int):
        super().__init__()
        name = self.NAME
        min_input_size = 2 ** (len(self.BLOCKS) - 1)  # the last stage sees at least 1x1
        num_classes, in_channels, input_size = check_data_arguments(
            name, num_classes, in_channels, input_size, min_input_size=min_input_size
        )
        width = check_int(width, name, "width", 1, flag=MODEL_FLAG)
        plan = self._plan(width)
        parameters = 9 * in_channels * width + 2 * width + (plan[-1][1] + 1) * num_classes
        parameters += sum(block_parameters(*step, self.PROJECTION) for step in plan)
        check_parameter_budget(
            parameters,
            name,
            f"{MODEL_FLAG} width={width} and {num_classes} classes",
            "use a smaller width",
        )
        self._record_config(name, num_classes=num_classes, in_channels=in_channels, input_size=input_size, width=width)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        self.blocks = nn.Sequential(*(BasicBlock(*step, self.PROJECTION) for step in plan))
        self.classifier = nn.Linear(plan[-1][1], num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def _plan(self, width: int) -> List[tuple]:
        """``(in_channels, out_channels, stride)`` of every block, in order."""
        plan, channels = [], width
        for stage, blocks in enumerate(self.BLOCKS):
            out_channels = width * 2**stage
            for index in range(blocks):
                plan.append((channels, out_channels, 2 if stage > 0 and index == 0 else 1))
                channels = out_channels
        return plan

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # mean over the pixels, not nn.AdaptiveAvgPool2d: its CUDA backward is not deterministic
        return self.classifier(self.blocks(self.stem(x)).mean(dim=(2, 3)))


@ModelRegistry.register("resnet18")
class ResNet18(_ResNet):
    """ResNet-18, CIFAR variant (3x3 stem, no max pool): four stages of 2 blocks.

    Args:
        num_classes, in_channels: integers >= 1.
        input_size: the image's (smaller) side, an integer >= 8 (three halvings).
        width: channels of the first stage (then x2, x4, x8), an integer >= 1.

    Raises:
        ConfigError: a bad argument, or weights over the memory budget (see
            ``src.datasets.options``).
    """

    NAME, BLOCKS, PROJECTION = "resnet18", (2, 2, 2, 2), True

    def __init__(self, num_classes: int = 10, in_channels: int = 3, input_size: int = 32, width: int = 64):
        super().__init__(num_classes, in_channels, input_size, width)


@ModelRegistry.register("resnet20")
class ResNet20(_ResNet):
    """He et al.'s CIFAR ResNet-20: three stages of 3 blocks, option-A shortcuts.

    Args:
        num_classes, in_channels: integers >= 1.
        input_size: the image's (smaller) side, an integer >= 4 (two halvings).
        width: channels of the first stage (then x2, x4), an integer >= 1.

    Raises:
        ConfigError: a bad argument, or weights over the memory budget (see
            ``src.datasets.options``).
    """

    NAME, BLOCKS, PROJECTION = "resnet20", (3, 3, 3), False

    def __init__(self, num_classes: int = 10, in_channels: int = 3, input_size: int = 32, width: int = 16):
        super().__init__(num_classes, in_channels, input_size, width)


@ModelRegistry.register("resnet56")
class ResNet56(_ResNet):
    """He et al.'s CIFAR ResNet-56: three stages of 9 blocks, option-A shortcuts.

    Args:
        num_classes, in_channels: integers >= 1.
        input_size: the image's (smaller) side, an integer >= 4 (two halvings).
        width: channels of the first stage (then x2, x4), an integer >= 1.

    Raises:
        ConfigError: a bad argument, or weights over the memory budget (see
            ``src.datasets.options``).
    """

    NAME, BLOCKS, PROJECTION = "resnet56", (9, 9, 9), False

    def __init__(self, num_classes: int = 10, in_channels: int = 3, input_size: int = 32, width: int = 16):
        super().__init__(num_classes, in_channels, input_size, width)

"""FastNet: a small, fast, residual-free CIFAR network after the fastest public CIFAR-10
training scripts.

The architecture is Keller Jordan's airbench94 network (github.com/KellerJordan/
cifar10-airbench, itself built on David Page's "How to train your ResNet" DAWNBench net
and tysam-code's hlb-CIFAR10): a 2x2 convolution stem with ``2 x in_channels x 4``
channels and GELU, then three groups of conv3x3 -> max pool 2 -> BN -> GELU -> conv3x3
-> BN -> GELU (widths 64, 256, 256), a global max pool, and a bias-free linear head whose
output is scaled by 1/9. Its 3x3 convolutions start as identity maps on their first input
channels (``dirac_`` on the first ``in`` filters), as airbench's do. About 1.97M
parameters.

Left out, as training-side tricks or needing the data: the stem is learned from its
default initialisation rather than set to the patch-whitening transform of the training
images (and not frozen); batch norm is PyTorch's standard one (airbench freezes the scale
and uses momentum 0.4), so checkpoints, optimizers and resume treat it like any other
model's. Airbench's label smoothing, lookahead, flip/translate augmentation and test-time
augmentation belong to the training recipe, not the model.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from ..checks import check_int_list, check_parameter_budget
from .registry import MODEL_FLAG, ConfigurableModel, ModelRegistry, check_data_arguments

STEM_KERNEL = 2
MIN_INPUT_SIZE = 9  # the 2x2 stem takes one pixel, then three halvings leave 1x1
HEAD_SCALE = 1 / 9  # airbench94's output scaling: keeps early logits small


def _conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
    with torch.no_grad():  # airbench: the first `in_channels` filters start as the identity
        nn.init.dirac_(conv.weight[: min(in_channels, out_channels)])
    return conv


class ConvGroup(nn.Sequential):
    """conv3x3 -> max pool 2 -> BN -> GELU -> conv3x3 -> BN -> GELU (halves the resolution)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            _conv3x3(in_channels, out_channels),
            nn.MaxPool2d(2),
            nn.BatchNorm2d(out_channels),
            nn.GELU(),
            _conv3x3(out_channels, out_channels),
            nn.BatchNorm2d(out_channels),
            nn.GELU(),
        )


@ModelRegistry.register("fastnet")
class FastNet(ConfigurableModel):
    """The airbench94-style network described above.

    Args:
        num_classes, in_channels: integers >= 1.
        input_size: the image's (smaller) side, an integer >= 9 (a 2x2 stem, then three
            halvings); any larger size works, square or not (global max pooling).
        widths: channels of the three groups, three integers >= 1.

    Raises:
        ConfigError: a bad argument, or weights over the memory budget (see
            ``src.datasets.options``).
    """

    accepts_non_square_inputs = True

    def __init__(
        self, num_classes: int = 10, in_channels: int = 3, input_size: int = 32, widths: Sequence[int] = (64, 256, 256)
    ):
        super().__init__()
        num_classes, in_channels, input_size = check_data_arguments(
            "fastnet", num_classes, in_channels, input_size, min_input_size=MIN_INPUT_SIZE
        )
        widths = check_int_list(widths, "fastnet", "widths", length=3, flag=MODEL_FLAG, example="[64, 256, 256]")
        stem_width = 2 * in_channels * STEM_KERNEL**2  # airbench: + and - of each whitening direction
        channels = [stem_width, *widths]
        parameters = (in_channels * STEM_KERNEL**2 + 1) * stem_width + widths[-1] * num_classes
        parameters += sum(9 * a * b + 9 * b * b + 4 * b for a, b in zip(channels, channels[1:]))
        check_parameter_budget(
            parameters,
            "fastnet",
            f"{MODEL_FLAG} widths={widths}, {in_channels} input channels and {num_classes} classes",
            "use smaller widths",
        )
        self._record_config(
            "fastnet", num_classes=num_classes, in_channels=in_channels, input_size=input_size, widths=widths
        )
        self.stem = nn.Sequential(nn.Conv2d(in_channels, stem_width, STEM_KERNEL, bias=True), nn.GELU())
        self.groups = nn.Sequential(*(ConvGroup(a, b) for a, b in zip(channels, channels[1:])))
        self.head = nn.Linear(widths[-1], num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # amax over the pixels, not nn.AdaptiveMaxPool2d: its CUDA backward is not deterministic
        return self.head(self.groups(self.stem(x)).amax(dim=(2, 3))) * HEAD_SCALE

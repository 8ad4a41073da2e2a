"""LeNet-5 (LeCun et al., 1998) with ReLU and max pooling, for inputs of 16x16 and up
(28x28 inputs are padded to 32x32, as in the classic MNIST set-up)."""

from __future__ import annotations

import torch
import torch.nn as nn

from ..checks import check_parameter_budget
from .registry import ConfigurableModel, ModelRegistry, check_data_arguments

MIN_INPUT_SIZE = 16  # conv 5 -> pool 2 -> conv 5 -> pool 2 leaves 1x1 of a 16x16 input


@ModelRegistry.register("lenet5")
class LeNet5(ConfigurableModel):
    """LeNet-5 for ``in_channels x input_size x input_size`` images.

    Args:
        num_classes, in_channels: integers >= 1.
        input_size: image height (= width), an integer >= 16.

    Raises:
        ConfigError: a bad argument, or weights over the memory budget (see
            ``src.datasets.options``).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, input_size: int = 28):
        super().__init__()
        num_classes, in_channels, input_size = check_data_arguments(
            "lenet5", num_classes, in_channels, input_size, min_input_size=MIN_INPUT_SIZE
        )
        # 28x28 inputs get padding 2 on the first conv, as in the classic MNIST set-up.
        padding = 2 if input_size == 28 else 0
        side = ((input_size + 2 * padding - 4) // 2 - 4) // 2
        parameters = (
            (in_channels * 25 + 1) * 6
            + (6 * 25 + 1) * 16
            + (16 * side * side + 1) * 120
            + (120 + 1) * 84
            + (84 + 1) * num_classes
        )
        check_parameter_budget(
            parameters, "lenet5", f"{in_channels}x{input_size}x{input_size} inputs", "use smaller images"
        )
        self._record_config("lenet5", num_classes=num_classes, in_channels=in_channels, input_size=input_size)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=padding),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * side * side, 120),
            nn.ReLU(inplace=True),
            nn.Linear(120, 84),
            nn.ReLU(inplace=True),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

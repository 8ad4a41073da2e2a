"""LeNet-5 (LeCun et al., 1998) with ReLU and max pooling, for 28x28 or 32x32 inputs."""

from __future__ import annotations

import torch
import torch.nn as nn

from .registry import ConfigurableModel, ModelRegistry


@ModelRegistry.register("lenet5")
class LeNet5(ConfigurableModel):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, input_size: int = 28):
        super().__init__()
        self._record_config("lenet5", num_classes=num_classes, in_channels=in_channels, input_size=input_size)
        # 28x28 inputs get padding 2 on the first conv, as in the classic MNIST set-up.
        padding = 2 if input_size == 28 else 0
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=padding), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        side = ((input_size + 2 * padding - 4) // 2 - 4) // 2
        if side <= 0:
            raise ValueError(f"lenet5 needs inputs of at least 28x28 (with padding), got {input_size}.")
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * side * side, 120), nn.ReLU(inplace=True),
            nn.Linear(120, 84), nn.ReLU(inplace=True),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

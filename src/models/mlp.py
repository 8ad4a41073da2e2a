"""A multi-layer perceptron over flattened images."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from .registry import ConfigurableModel, ModelRegistry


@ModelRegistry.register("mlp")
class MLP(ConfigurableModel):
    """``input -> hidden... -> num_classes`` with ReLU; the default is 784-256-10."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, input_size: int = 28,
                 hidden_sizes: Sequence[int] = (256,), dropout: float = 0.0):
        super().__init__()
        hidden_sizes = [int(h) for h in hidden_sizes]
        self._record_config("mlp", num_classes=num_classes, in_channels=in_channels,
                            input_size=input_size, hidden_sizes=hidden_sizes, dropout=dropout)
        layers = [nn.Flatten()]
        width = in_channels * input_size * input_size
        for hidden in hidden_sizes:
            layers += [nn.Linear(width, hidden), nn.ReLU(inplace=True)]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

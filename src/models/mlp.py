"""A multi-layer perceptron over flattened images."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from ..checks import check_int_list, check_number, check_parameter_budget
from .registry import MODEL_FLAG, ConfigurableModel, ModelRegistry, check_data_arguments


@ModelRegistry.register("mlp")
class MLP(ConfigurableModel):
    """``input -> hidden... -> num_classes`` with ReLU; the default is 784-256-10.

    Args:
        num_classes, in_channels, input_size: integers >= 1 (inputs are
            ``in_channels x input_size x input_size``).
        hidden_sizes: widths of the hidden layers, a list of integers >= 1; an empty list
            is allowed and gives a linear model (``input -> num_classes``).
        dropout: after each hidden layer, a number from 0 to below 1 (unused without
            hidden layers).

    Raises:
        ConfigError: a bad argument, or weights over the memory budget (see
            ``src.datasets.options``).
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        input_size: int = 28,
        hidden_sizes: Sequence[int] = (256,),
        dropout: float = 0.0,
    ):
        super().__init__()
        num_classes, in_channels, input_size = check_data_arguments("mlp", num_classes, in_channels, input_size)
        hidden_sizes = check_int_list(hidden_sizes, "mlp", "hidden_sizes", flag=MODEL_FLAG)
        dropout = check_number(dropout, "mlp", "dropout", 0, below=1, flag=MODEL_FLAG)
        widths = [in_channels * input_size * input_size, *hidden_sizes, num_classes]
        check_parameter_budget(
            sum((a + 1) * b for a, b in zip(widths, widths[1:])),
            "mlp",
            f"{MODEL_FLAG} hidden_sizes={hidden_sizes} on {in_channels}x{input_size}x{input_size} inputs",
            "use smaller hidden_sizes",
        )
        self._record_config(
            "mlp",
            num_classes=num_classes,
            in_channels=in_channels,
            input_size=input_size,
            hidden_sizes=hidden_sizes,
            dropout=dropout,
        )
        layers = [nn.Flatten()]
        width = widths[0]
        for hidden in hidden_sizes:
            layers += [nn.Linear(width, hidden), nn.ReLU(inplace=True)]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

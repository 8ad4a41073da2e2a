"""MyNet: a compact CNN for small single-channel images (MNIST-like, 28x28).

Three architectures, told apart by ``version`` (recorded in ``model_config``, so a
checkpoint always rebuilds the network it was trained as):

* version 2 (the default): three blocks of conv3x3-BN-ReLU, each followed by a 2x2 max
  pool (``width``, ``2*width``, ``4*width`` channels), then dropout (0.1) and a linear
  classifier. At width 32 about 104k parameters and 7.4M multiply-adds per 28x28 image,
  2.5x fewer than version 1: it takes the bundled 5,000-digit sample to >= 98% in 10
  epochs at about half the cost.
* version 1: two blocks of (conv-BN-ReLU x2, max pool) with ``width`` and ``2*width``
  channels, then dropout (0.25) and a linear classifier (about 97k parameters, 18.3M
  multiply-adds). A ``model_config`` without a ``version`` key (every checkpoint written
  before version 2 existed) is version 1, and version 1 still records none, so those
  checkpoints rebuild and resume exactly.
* version 3 (opt-in: ``--model-option version=3``): version 2's three blocks with the
  pooling moved before batch norm and ReLU (conv3x3, 2x2 max pool, BN, ReLU), so those
  two work on 4x fewer values, and a hidden layer in the classifier (``hidden`` units,
  default 128, then ReLU and dropout; ``hidden=0``: one linear layer). The same
  multiply-adds in the convolutions; on a CPU with native bf16 a training step at
  width 16 costs about 25% less than version 2's, and it reaches a higher accuracy in a
  2-epoch Fashion-MNIST run (docs/performance.md, recipe ``fashion91``). Dropout
  defaults to 0 (measured: short runs need none).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from ..errors import ConfigError
from ..checks import check_int, check_number, check_parameter_budget
from .registry import MODEL_FLAG, ConfigurableModel, ModelRegistry, check_data_arguments

VERSIONS = (1, 2, 3)
DEFAULT_VERSION = 2  # what a new run records; version 3 is opt-in


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def _conv_pool_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Version 3's block: the max pool comes before batch norm and ReLU, which then work
    on a quarter of the values (on a bf16 CPU those memory-bound passes cost as much as
    the convolution itself)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.MaxPool2d(2),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


@ModelRegistry.register("mynet")
class MyNet(ConfigurableModel):
    """The CNN described above.

    Args:
        num_classes, in_channels: integers >= 1.
        input_size: image height (= width), an integer >= 8 for version 2 (three 2x2
            poolings), >= 4 for version 1 (two).
        width: channels of the first block (later blocks double it), an integer >= 1.
        dropout: before the (last) linear layer, a number from 0 to below 1 (default 0
            for version 3, 0.1 for version 2, 0.25 for version 1).
        hidden: version 3 only: units of the classifier's hidden layer, an integer >= 0
            (default 128; 0: no hidden layer).
        version: the architecture, 2 (default), 1 or 3 (see the module docstring).

    Raises:
        ConfigError: a bad argument, or weights over the memory budget (see
            ``src.datasets.options``).
    """

    latest_version = DEFAULT_VERSION  # what a new run records; a record without a version is 1
    fast_cpu_path = True  # --amp auto: bf16 + channels-last measured as accurate (src/training/fast_path.py)

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        input_size: int = 28,
        width: int = 32,
        dropout: Optional[float] = None,
        version: int = DEFAULT_VERSION,
        hidden: Optional[int] = None,
    ):
        super().__init__()
        version = check_int(version, "mynet", "version", 1, flag=MODEL_FLAG)
        if version not in VERSIONS:
            raise ConfigError(
                f"mynet has versions {', '.join(map(str, VERSIONS))}; got --model-option "
                f"version={version}. Leave it out for version {DEFAULT_VERSION}, the default."
            )
        if hidden is not None and version != 3:
            raise ConfigError(
                f"--model-option hidden is a mynet version 3 option; got hidden={hidden!r} with "
                f"version {version}. Add --model-option version=3, or leave out hidden."
            )
        poolings = 2 if version == 1 else 3
        num_classes, in_channels, input_size = check_data_arguments(
            "mynet", num_classes, in_channels, input_size, min_input_size=2**poolings
        )
        width = check_int(width, "mynet", "width", 1, flag=MODEL_FLAG)
        if dropout is None:  # measured: 0.1 converges faster for version 2 in a 10-epoch run
            dropout = {1: 0.25, 2: 0.1, 3: 0.0}[version]
        dropout = check_number(dropout, "mynet", "dropout", 0, below=1, flag=MODEL_FLAG)
        if version == 3:
            hidden = check_int(128 if hidden is None else hidden, "mynet", "hidden", 0, flag=MODEL_FLAG)
        if version >= 2:
            channels = [in_channels, width, 2 * width, 4 * width]
            features = 4 * width * (input_size // 8) ** 2
            parameters = sum(9 * a * b + 2 * b for a, b in zip(channels, channels[1:]))
            if hidden:
                parameters += (features + 1) * hidden + (hidden + 1) * num_classes
            else:
                parameters += (features + 1) * num_classes
        else:
            features = 2 * width * (input_size // 4) ** 2
            parameters = 9 * (in_channels * width + 7 * width * width) + 12 * width + (features + 1) * num_classes
        shape = f"on {in_channels}x{input_size}x{input_size} inputs"
        check_parameter_budget(
            parameters,
            "mynet",
            f"{MODEL_FLAG} width={width}" + (f" hidden={hidden} {shape}" if hidden else f" {shape}"),
            "use a smaller width" + (" or hidden" if hidden else ""),
        )
        recorded = {"version": version} if version != 1 else {}  # version 1 records what it always did
        if version == 3:
            recorded["hidden"] = hidden
        self._record_config(
            "mynet",
            num_classes=num_classes,
            in_channels=in_channels,
            input_size=input_size,
            width=width,
            dropout=dropout,
            **recorded,
        )
        if version == 3:
            self.features = nn.Sequential(*(_conv_pool_block(a, b) for a, b in zip(channels, channels[1:])))
        elif version == 2:
            blocks = []
            for a, b in zip(channels, channels[1:]):
                blocks += [_conv_block(a, b), nn.MaxPool2d(2)]
            self.features = nn.Sequential(*blocks)
        else:
            self.features = nn.Sequential(
                _conv_block(in_channels, width),
                _conv_block(width, width),
                nn.MaxPool2d(2),
                _conv_block(width, 2 * width),
                _conv_block(2 * width, 2 * width),
                nn.MaxPool2d(2),
            )
        if hidden:
            self.classifier = nn.Sequential(
                nn.Flatten(),
                nn.Linear(features, hidden),
                nn.ReLU(inplace=True),
                nn.Dropout(dropout),
                nn.Linear(hidden, num_classes),
            )
        else:
            self.classifier = nn.Sequential(
                nn.Flatten(),
                nn.Dropout(dropout),
                nn.Linear(features, num_classes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

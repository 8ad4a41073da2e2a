"""The model registry, rebuilding a model from its recorded configuration, and the checks
of the arguments every model takes from the data (class count, channels, image size)."""

from __future__ import annotations

from typing import Any, Dict, Tuple

import torch.nn as nn

from ..datasets.options import check_int
from ..registry import Registry

ModelRegistry = Registry("model")

MODEL_FLAG = "--model-option"  # how a command-line user sets a model's own options


def check_data_arguments(owner: str, num_classes: Any, in_channels: Any, input_size: Any,
                         min_input_size: int = 1) -> Tuple[int, int, int]:
    """``(num_classes, in_channels, input_size)`` as ints when each is an integer >= 1 (the
    size >= ``min_input_size``); a run takes them from the data set, so the message names
    the argument, not a command-line option.

    Raises:
        ConfigError: naming the model, the argument, the value and the accepted range.
    """
    why = f" (images of at least {min_input_size}x{min_input_size} pixels)" if min_input_size > 1 else ""
    return (
        check_int(num_classes, owner, "num_classes", 1),
        check_int(in_channels, owner, "in_channels", 1),
        check_int(input_size, owner, "input_size", min_input_size, why=why),
    )


class ConfigurableModel(nn.Module):
    """A model that records the constructor arguments needed to rebuild it.

    Subclasses call ``self._record_config(name, **kwargs)`` in ``__init__``; the result
    is ``model_config`` (stored in every checkpoint).
    """

    def _record_config(self, name: str, **kwargs: Any) -> None:
        self._model_config = {"name": name, **kwargs}

    @property
    def model_config(self) -> Dict[str, Any]:
        return dict(self._model_config)


def build_model(model_config: Dict[str, Any]) -> nn.Module:
    """Rebuild a model from ``model_config`` (``{"name": ..., **constructor kwargs}``)."""
    config = dict(model_config)
    name = config.pop("name", None)
    if name is None:
        raise ValueError(f"model_config {model_config!r} has no 'name'; it cannot be rebuilt.")
    return ModelRegistry.create(name, **config)

"""Models: ``ModelRegistry`` and the built-in models (importing registers them).

Every model records its constructor arguments as ``model_config`` so that
``build_model(checkpoint["model_config"])`` rebuilds it from a checkpoint file alone.
``create_model_for(name, dataset, **options)`` builds a model sized for a data set.
"""

from .registry import (
    ConfigurableModel,
    ModelRegistry,
    build_model,
    create_model_for,
    inherit_model_version,
    model_data_arguments,
    new_model_options,
    recorded_model_options,
)
from . import fastnet as _fastnet  # noqa: F401
from . import lenet5 as _lenet5  # noqa: F401
from . import mlp as _mlp  # noqa: F401
from . import mynet as _mynet  # noqa: F401
from . import resnet as _resnet  # noqa: F401

__all__ = [
    "ConfigurableModel",
    "ModelRegistry",
    "build_model",
    "create_model_for",
    "model_data_arguments",
    "inherit_model_version",
    "new_model_options",
    "recorded_model_options",
]

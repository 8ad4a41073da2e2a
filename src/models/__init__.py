"""Models: ``ModelRegistry`` and the built-in models (importing registers them).

Every model records its constructor arguments as ``model_config`` so that
``build_model(checkpoint["model_config"])`` rebuilds it from a checkpoint file alone.
"""

from .registry import ConfigurableModel, ModelRegistry, build_model
from . import lenet5 as _lenet5  # noqa: F401
from . import mlp as _mlp  # noqa: F401
from . import mynet as _mynet  # noqa: F401

__all__ = ["ConfigurableModel", "ModelRegistry", "build_model"]

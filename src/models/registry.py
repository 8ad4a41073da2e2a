"""The model registry and rebuilding a model from its recorded configuration."""

from __future__ import annotations

from typing import Any, Dict

import torch.nn as nn

from ..registry import Registry

ModelRegistry = Registry("model")


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

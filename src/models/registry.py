"""The model registry, rebuilding a model from its recorded configuration, and the
arguments every model takes from the data (class count, channels, image size): their
checks, and filling them in from a data set (``create_model_for``)."""

from __future__ import annotations

import inspect
from typing import Any, Dict, Optional, Tuple

import torch.nn as nn
from ..errors import ConfigError
from ..checks import check_int, is_integer
from ..registry import Registry

ModelRegistry = Registry("model")

MODEL_FLAG = "--model-option"  # how a command-line user sets a model's own options


def check_data_arguments(
    owner: str, num_classes: Any, in_channels: Any, input_size: Any, min_input_size: int = 1
) -> Tuple[int, int, int]:
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

    A model whose layers work on any image shape (global pooling before the classifier)
    sets ``accepts_non_square_inputs = True``; its ``input_size`` is then the smaller side
    and only sets the minimum. Others (a flattening classifier) need square images.

    A model with several architectures takes a ``version`` argument and sets
    ``latest_version``: a new model (and a new run) gets the latest, while a recorded
    configuration without a ``version`` is version 1 (``recorded_model_options``), so
    checkpoints written before a new version existed rebuild as what they were.
    """

    accepts_non_square_inputs = False
    latest_version: Optional[int] = None  # None: one architecture, no version argument

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
        raise ConfigError(f"model_config {model_config!r} has no 'name'; it cannot be rebuilt.")
    return ModelRegistry.create(name, **recorded_model_options(name, config))


def _latest_version(name: str) -> Optional[int]:
    return getattr(ModelRegistry.get(name), "latest_version", None) if name in ModelRegistry else None


def recorded_model_options(name: str, options: Dict[str, Any]) -> Dict[str, Any]:
    """The options to rebuild model ``name`` from a record (a run configuration or a
    ``model_config``): a versioned model recorded without a ``version`` is version 1."""
    if _latest_version(name) is not None and "version" not in options:
        return {**options, "version": 1}
    return dict(options)


def inherit_model_version(recorded: Dict[str, Any], given: Dict[str, Any]) -> Dict[str, Any]:
    """``--model-option`` values given to a resume or a fork of the same model, with the
    run's recorded ``version`` when they name none (so repeating a run's options does not
    switch its architecture); a run recorded without one stays without."""
    if "version" in recorded and "version" not in given:
        return {**given, "version": recorded["version"]}
    return dict(given)


def new_model_options(name: str, options: Dict[str, Any]) -> Dict[str, Any]:
    """The options a new run records for model ``name``: a versioned model gets its
    ``latest_version`` unless ``options`` name one (see ``recorded_model_options``)."""
    latest = _latest_version(name)
    if latest is not None and "version" not in options:
        return {**options, "version": latest}
    return dict(options)


DATA_ARGUMENTS = ("num_classes", "in_channels", "input_size")  # what a run takes from the data


def model_data_arguments(name: str, dataset: Any) -> Dict[str, int]:
    """``{"num_classes", "in_channels", "input_size"}`` for model ``name`` on ``dataset``
    (anything with ``num_classes`` and ``input_shape`` = ``(C, H, W)``).

    Images must be square (``H == W``) unless the model sets ``accepts_non_square_inputs``;
    then ``input_size`` is ``min(H, W)``. The model's own checks (minimum size, say) run
    when it is built.

    Raises:
        KeyError: an unknown model, listing the known ones.
        ConfigError: a data set without a ``(C, H, W)`` input shape, or non-square images
            for a model that needs square ones.
    """
    factory = ModelRegistry.get(name)
    shape = getattr(dataset, "input_shape", None)
    shape = tuple(shape) if isinstance(shape, (tuple, list)) else shape  # torch.Size is a tuple
    if not isinstance(shape, tuple) or len(shape) != 3 or not all(is_integer(side) for side in shape):
        raise ConfigError(
            f"Model {name!r} needs a data set whose input_shape is (channels, height, width), "
            f"got {shape!r} from {type(dataset).__name__}."
        )
    num_classes = getattr(dataset, "num_classes", None)
    if num_classes is None:  # never let the model's default class count stand in silently
        raise ConfigError(f"Model {name!r} needs a data set with num_classes; {type(dataset).__name__} has none.")
    channels, height, width = (int(side) for side in shape)
    if height != width and not getattr(factory, "accepts_non_square_inputs", False):
        takes_any = [
            other
            for other in ModelRegistry.names()
            if getattr(ModelRegistry.get(other), "accepts_non_square_inputs", False)
        ]
        raise ConfigError(
            f"Model {name!r} needs square images but the data set's are {height}x{width} (height x width); "
            f"crop or resize them to a square, or use a model that takes any shape: {', '.join(takes_any)}."
        )
    return {"num_classes": num_classes, "in_channels": channels, "input_size": min(height, width)}


def create_model_for(name: str, dataset: Any, **options: Any) -> nn.Module:
    """Model ``name`` sized for ``dataset``: its class count, channels and image size come
    from the data (see ``model_data_arguments``), ``options`` are the model's own.

    Example::

        model = create_model_for("resnet18", DatasetRegistry.create("synthetic"), width=32)

    Raises:
        KeyError: an unknown model, listing the known ones.
        ConfigError: an option the model does not have or one the data sets, a bad option
            value, or data the model cannot take (non-square, too small).
    """
    arguments = model_data_arguments(name, dataset)
    parameters = inspect.signature(ModelRegistry.get(name)).parameters.values()
    takes_any = any(p.kind is p.VAR_KEYWORD for p in parameters)  # a factory(**kwargs) checks its own
    accepted = [
        p.name
        for p in parameters
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in DATA_ARGUMENTS
    ]
    clash = sorted(set(options) & set(DATA_ARGUMENTS))
    if clash:
        raise ConfigError(
            f"create_model_for takes {', '.join(clash)} for model {name!r} from the data set; "
            f"do not pass {'it' if len(clash) == 1 else 'them'}."
        )
    unknown = sorted(set(options) - set(accepted))
    if unknown and not takes_any:
        raise ConfigError(
            f"Model {name!r} has no option {', '.join(unknown)}; its options: {', '.join(accepted) or 'none'}."
        )
    return ModelRegistry.create(name, **arguments, **options)

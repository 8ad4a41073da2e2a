"""The configuration record of a run built in Python, in the CLI's ``RunConfig`` schema.

A run made with the Python API (the specification's Quick Start) writes the same
``config.json`` as ``train.py``, so ``train.py --resume`` / ``--fork`` can rebuild it: the
model from its ``model_config``; the data from how its data set was made (the loader
points at its data set, whose ``origin`` ``DatasetRegistry.create`` records); the
optimizer and scheduler from their classes. A part ``train.py`` cannot rebuild (a custom
model, optimizer, scheduler or loader) is recorded as ``"custom:<ClassName>"``, which a
resume from the command line refuses with a message naming it.
"""

from __future__ import annotations

from typing import Any, Dict

import torch

from ..config import FIELDS, RunConfig
from ..models import ModelRegistry
from ..optim import OptimizerRegistry, SchedulerRegistry, entry_of
from .protocols import loader_batch_size, loader_dataset, unwrap
from .protocols import model_config as described_model_config

# Model constructor arguments that come from the data set, not from --model-option.
DERIVED_MODEL_ARGS = ("name", "num_classes", "in_channels", "input_size")
# Data set constructor arguments with their own RunConfig fields (or none at all).
DERIVED_DATASET_ARGS = ("name", "data_dir", "augment", "augmentation", "seed", "progress", "download", "mirrors")

# Options passed to the Trainer (``trainer=`` in their field metadata) that it does not
# keep as an attribute of that name: how to read each back. Every other one is read from
# ``trainer.<its Trainer argument>``.
_READ_BACK = {
    "compile": lambda trainer: trainer.forward_model is not trainer.model,
    "patience": lambda trainer: trainer.early_stopping.patience,
    "ema_decay": lambda trainer: trainer.ema.decay if trainer.ema is not None else 0.0,
}


def _custom(obj: Any) -> str:
    return f"custom:{type(obj).__name__}"


def _name_in(registry, obj: Any) -> str:
    """The registry name of ``obj``'s class (``src/optim.py`` entries' ``cls``), else custom."""
    found = entry_of(registry, obj)
    return found[0] if found is not None else _custom(obj)


def describe_run(trainer, epochs: int) -> Dict[str, Any]:
    """The ``RunConfig`` dict of a Trainer built in Python (see the module docstring)."""
    config = RunConfig().to_dict()
    config["epochs"] = int(epochs)
    model_config = described_model_config(trainer.model)
    if isinstance(model_config, dict) and model_config.get("name") in ModelRegistry:
        config["model"] = model_config["name"]
        config["model_options"] = {k: v for k, v in model_config.items() if k not in DERIVED_MODEL_ARGS}
    else:
        config["model"] = _custom(trainer.model)
    dataset = loader_dataset(unwrap(trainer.train_loader))
    origin = dataset.origin if dataset is not None else None
    if isinstance(origin, dict) and "name" in origin:
        config["dataset"] = origin["name"]
        config["dataset_options"] = {k: v for k, v in origin.items() if k not in DERIVED_DATASET_ARGS}
        config["data_dir"] = origin.get("data_dir")
        config["augment"] = bool(origin.get("augment", config["augment"]))
        config["augmentation"] = origin.get("augmentation")
        config["seed"] = int(origin.get("seed", config["seed"]))
        config["data_fingerprint"] = dataset.fingerprint()
    else:
        config["dataset"] = _custom(trainer.train_loader)
    batch_size = loader_batch_size(unwrap(trainer.train_loader))
    if isinstance(batch_size, int):
        config["batch_size"] = batch_size
    group = trainer.optimizer.param_groups[0]
    config["optimizer"] = _name_in(OptimizerRegistry, trainer.optimizer)
    # OneCycleLR keeps its peak (the configured rate) as max_lr; initial_lr is its start.
    config["lr"] = float(group["max_lr"] if "max_lr" in group else group.get("initial_lr", group["lr"]))
    config["weight_decay"] = float(group.get("weight_decay", 0.0))
    scheduler = trainer.scheduler
    config["scheduler"] = "none" if scheduler is None else _name_in(SchedulerRegistry, scheduler)
    manager = trainer.checkpoint_manager
    if manager is not None:
        config["save_frequency"], config["keep_last"] = manager.save_frequency, manager.keep_last
    config["device"] = trainer.device.type if trainer.device.index is None else str(trainer.device)
    config["reapply_transforms"] = trainer.dataset is not None
    config["amp"] = trainer.precision.amp
    config["channels_last"] = bool(trainer.channels_last)
    for name, info in FIELDS.items():  # the options the Trainer takes as they are
        if info["trainer"]:
            config[name] = _READ_BACK[name](trainer) if name in _READ_BACK else getattr(trainer, info["trainer"])
    criterion = trainer.criterion
    if isinstance(criterion, torch.nn.CrossEntropyLoss):
        config["label_smoothing"] = float(criterion.label_smoothing)
    logger = trainer.tensorboard
    config["tensorboard"] = logger is not None
    if logger is not None:
        config["tensorboard_every"] = logger.every
    return config

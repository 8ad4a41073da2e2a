"""Build a run from its plan: the seeded data set, model, loaders, optimizer and scheduler
(before anything is written: a model that cannot take the data is refused here), and the
Trainer inside the opened experiment."""

from __future__ import annotations

import inspect
from typing import Any, Dict, NamedTuple, Optional

import torch
import torch.nn as nn

from ..config import ConfigError, RunConfig, trainer_options
from ..datasets import DatasetRegistry
from ..models import ModelRegistry, model_data_arguments, recorded_model_options
from ..training.checkpoint import CheckpointManager
from ..training.distributed import Distributed
from ..training.evaluation import check_tta_flip
from ..training.experiment import ExperimentManager
from ..training.fast_path import resolve_fast_path
from ..training.protocols import augmentation_policy
from ..training.optim import build_optimizer, build_scheduler
from ..training.schedules import optimizer_steps_per_epoch
from ..training.tb_logger import TensorBoardLogger
from ..training.trainer import Trainer, loader_length
from ..utils import get_device, seed_everything


class Components(NamedTuple):
    dataset: Any
    model: nn.Module
    device: Any
    train_loader: Any
    val_loader: Any
    optimizer: Any
    scheduler: Any
    fast_path: Any = None  # FastPath: amp and channels-last as resolved for this model and device


def build_checked(config: RunConfig, progress: bool, log) -> Components:
    """The run's components for ``config`` (``--threads`` applied first), their start-up
    lines, and one dry forward pass; writes nothing to the runs directory."""
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    parts = build_components(config, progress=progress)
    log(f"Data: {parts.dataset.describe()}")
    threads = (
        f", {torch.get_num_threads()} CPU thread{'s' if torch.get_num_threads() > 1 else ''}"
        if parts.device.type == "cpu"
        else ""
    )
    log(
        f"Model: {config.model} ({sum(p.numel() for p in parts.model.parameters()):,} parameters) on {parts.device}"
        f"{threads}, {parts.fast_path.description}"
    )
    dry_forward(parts.model, parts.val_loader, config, parts.dataset.num_classes)
    return parts


def build_components(config: RunConfig, progress: bool = True) -> Components:
    """Seeded dataset, model (on its device), loaders, optimizer and scheduler."""
    seed_everything(config.seed)
    device = get_device(config.device)
    chosen = {"augmentation": config.augmentation} if config.augmentation is not None else {}
    parameters = inspect.signature(DatasetRegistry.get(config.dataset)).parameters
    if (
        chosen
        and "augmentation" not in parameters
        and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    ):
        chosen = {}  # a data set without the option: fine if its own policy is the one recorded (checked below)
    dataset = _create(
        DatasetRegistry,
        config.dataset,
        "--dataset-option",
        config.dataset_options,
        optional={"progress": progress},
        chosen=chosen,
        data_dir=config.data_dir,
        augment=config.augment,
        seed=config.seed,
    )
    policy = augmentation_policy(dataset)
    if config.augmentation is not None and not chosen and policy != config.augmentation:
        raise ConfigError(
            f"dataset {config.dataset!r} does not take --augment (its policy is {policy!r}); "
            "leave --augment out for this data set."
        )
    model = _create(
        ModelRegistry,
        config.model,
        "--model-option",
        recorded_model_options(config.model, config.model_options),
        **model_data_arguments(config.model, dataset),
    ).to(device)
    if config.tta_flip:
        check_tta_flip(dataset, config.dataset)
    train_loader, val_loader = dataset.get_dataloaders(batch_size=config.batch_size, device=device)
    optimizer = build_optimizer(config.optimizer, model.parameters(), config.lr, config.weight_decay)
    scheduler = build_scheduler(
        config.scheduler,
        optimizer,
        config.epochs,
        optimizer_steps_per_epoch(loader_length(train_loader), config.grad_accum),
    )
    fast_path = resolve_fast_path(config.amp, config.channels_last, model, device)
    return Components(dataset, model, device, train_loader, val_loader, optimizer, scheduler, fast_path)


def _create(
    registry,
    name: str,
    flag: str,
    options: Dict[str, Any],
    optional: Optional[Dict[str, Any]] = None,
    chosen: Optional[Dict[str, Any]] = None,
    **fixed: Any,
):
    """``registry.create(name, **fixed, **options)`` with a clear error for a bad option;
    ``optional`` arguments (a download progress bar, say) go only to factories taking them;
    ``chosen`` ones (``--augment``) are an error for a factory that does not take them."""
    factory = registry.get(name)
    accepted = inspect.signature(factory).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    for key, value in (chosen or {}).items():
        if key not in accepted and not takes_any:
            flag_of = {"augmentation": "--augment"}.get(key, key)
            raise ConfigError(f"{registry.kind} {name!r} does not take {flag_of}; leave it out for this data set.")
        fixed[key] = value
    fixed.update({k: v for k, v in (optional or {}).items() if k in accepted and k not in options})
    unknown = sorted(set(options) - set(accepted))
    if "image_size" in unknown and registry.kind == "dataset":
        raise ConfigError(
            f"--image-size is for image folders (--dataset PATH); {registry.kind} {name!r} has images "
            "of a fixed size, so leave it out."
        )
    if unknown:
        choices = ", ".join(k for k in accepted if k not in fixed and k not in ("self", "kwargs", "_ignored"))
        raise ConfigError(
            f"{registry.kind} {name!r} has no option {', '.join(unknown)} ({flag}); its options: {choices}."
        )
    clash = sorted(set(options) & set(fixed))
    if clash:  # e.g. --dataset-option seed=5: the run passes seed itself
        set_by = {"seed": "--seed", "data_dir": "--data-dir", "augment": "--no-augment", "augmentation": "--augment"}
        how = ", ".join(f"{k} from {set_by[k]}" if k in set_by else f"{k} from the data" for k in clash)
        raise ConfigError(
            f"{flag} {', '.join(clash)} cannot be given for {registry.kind} {name!r}: the run sets {how}."
        )
    try:
        return registry.create(name, **fixed, **options)
    except TypeError as exc:
        raise ConfigError(f"Bad {flag} value for {registry.kind} {name!r}: {exc}.") from None


def dry_forward(model: nn.Module, val_loader, config: RunConfig, num_classes: int) -> None:
    """One forward pass on two validation images (eval mode, no gradients, no RNG
    draws), so a model that cannot take the data is found before anything is written."""
    images, _ = next(iter(val_loader))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            outputs = model(images[:2])
    except Exception as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(
            f"Model {config.model!r} cannot take the inputs of {config.dataset!r} (shape {tuple(images.shape[1:])}): "
            f"{first_line}. Choose --model-option values or a model that fit this data."
        ) from None
    finally:
        model.train(was_training)
    if not torch.is_tensor(outputs) or tuple(outputs.shape) != (images[:2].shape[0], num_classes):
        shape = tuple(outputs.shape) if torch.is_tensor(outputs) else type(outputs).__name__
        raise ConfigError(
            f"Model {config.model!r} returns outputs of shape {shape} for 2 images; "
            f"expected (2, {num_classes}) for the {num_classes} classes of {config.dataset!r}."
        )


def _prepare_trainer(
    experiment: ExperimentManager,
    config: RunConfig,
    parts: Components,
    show_progress: Optional[bool],
    dist: Optional[Distributed] = None,
) -> Trainer:
    """The Trainer of the (new or reopened, locked) experiment."""
    read_only = dist is not None and not dist.is_main  # only rank 0 writes
    return Trainer(
        parts.model,
        parts.train_loader,
        parts.val_loader,
        nn.CrossEntropyLoss(label_smoothing=config.label_smoothing),
        parts.optimizer,
        parts.device,
        experiment,
        checkpoint_manager=CheckpointManager(
            experiment.checkpoints_dir, config.save_frequency, config.keep_last, read_only=read_only
        ),
        scheduler=parts.scheduler,
        dataset=parts.dataset if config.reapply_transforms else None,
        config=config.to_dict(),
        show_progress=show_progress,
        amp=parts.fast_path.amp,
        channels_last=parts.fast_path.channels_last,
        distributed=dist,
        **trainer_options(config),
        tensorboard=TensorBoardLogger(experiment.tensorboard_dir, config.tensorboard_every)
        if config.tensorboard and not read_only
        else None,
    )

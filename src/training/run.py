"""A whole run from a configuration: new, ``--resume`` or ``--fork``.

Order matters for safety: the configuration is resolved and validated, the data and
model are built, and the checkpoint to start from is chosen and verified *before* a new
experiment directory is created or an existing one is written to. Bad input therefore
never leaves a half-made experiment or touches an existing one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, NamedTuple, Optional, Tuple

import torch.nn as nn

from ..config import RESUME_MUTABLE_KEYS, ConfigError, RunConfig
from ..datasets import DatasetRegistry
from ..models import ModelRegistry
from ..utils import get_device, seed_everything
from . import state_keys as keys
from .early_stopping import EarlyStopping
from .checkpoint import CheckpointError, CheckpointManager, sha256_file
from .experiment import (
    CHECKPOINTS_DIR, CONFIG_FILE, ExperimentError, ExperimentManager, existing_experiment_dir, read_experiment_config,
)
from .optim import build_optimizer, build_scheduler
from .trainer import Trainer

# Configuration keys that change what the data pipeline produces; a fork that changes
# one of them restarts the data order instead of continuing the parent's.
DATA_KEYS = ("dataset", "batch_size", "seed", "augment", "reapply_transforms", "dataset_options")


def _read_config(runs_dir: str, name: str) -> RunConfig:
    """The saved configuration of experiment ``name`` (name validated, nothing written)."""
    return RunConfig.from_dict(read_experiment_config(existing_experiment_dir(Path(runs_dir), name)))


def resolve_config(overrides: Dict[str, Any], runs_dir: str, resume: Optional[str], fork: Optional[str]) -> RunConfig:
    """The run's configuration: defaults + ``overrides`` for a new run; the saved config
    for ``resume`` (only keys in ``RESUME_MUTABLE_KEYS`` may change); the parent's config
    + ``overrides`` for ``fork``."""
    if resume is not None and fork is not None:
        raise ExperimentError("Give either --resume or --fork, not both.")
    if resume is not None:
        saved = _read_config(runs_dir, resume)
        changed = {k: v for k, v in overrides.items() if getattr(saved, k) != v}
        frozen = sorted(k for k in changed if k not in RESUME_MUTABLE_KEYS)
        if frozen:
            details = ", ".join(f"{k} (run has {getattr(saved, k)!r}, given {changed[k]!r})" for k in frozen)
            raise ConfigError(
                f"--resume {resume} cannot change {details}; resume with the same values, "
                f"or branch with --fork {resume} to use new ones."
            )
        return saved.replace(**changed).validate()
    if fork is not None:
        return _read_config(runs_dir, fork).replace(**overrides).validate()
    return RunConfig(**overrides).validate()


class Components(NamedTuple):
    dataset: Any
    model: nn.Module
    device: Any
    train_loader: Any
    val_loader: Any
    optimizer: Any
    scheduler: Any


def build_components(config: RunConfig, progress: bool = True) -> Components:
    """Seeded dataset, model (on its device), loaders, optimizer and scheduler."""
    seed_everything(config.seed)
    device = get_device(config.device)
    dataset = _create(DatasetRegistry, config.dataset, "--dataset-option", config.dataset_options,
                      optional={"progress": progress},
                      data_dir=config.data_dir, augment=config.augment, seed=config.seed)
    channels, height, _ = dataset.input_shape
    model = _create(ModelRegistry, config.model, "--model-option", config.model_options,
                    num_classes=dataset.num_classes, in_channels=channels, input_size=height).to(device)
    train_loader, val_loader = dataset.get_dataloaders(batch_size=config.batch_size, device=device)
    optimizer = build_optimizer(config.optimizer, model.parameters(), config.lr, config.weight_decay)
    scheduler = build_scheduler(config.scheduler, optimizer, config.epochs)
    return Components(dataset, model, device, train_loader, val_loader, optimizer, scheduler)


def _create(registry, name: str, flag: str, options: Dict[str, Any],
            optional: Optional[Dict[str, Any]] = None, **fixed: Any):
    """``registry.create(name, **fixed, **options)`` with a clear error for a bad option;
    ``optional`` arguments (a download progress bar, say) go only to factories taking them."""
    import inspect

    factory = registry.get(name)
    accepted = inspect.signature(factory).parameters
    fixed.update({k: v for k, v in (optional or {}).items() if k in accepted and k not in options})
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        choices = ", ".join(k for k in accepted if k not in fixed and k not in ("self", "kwargs", "_ignored"))
        raise ConfigError(f"{registry.kind} {name!r} has no option {', '.join(unknown)} ({flag}); its options: {choices}.")
    try:
        return registry.create(name, **fixed, **options)
    except TypeError as exc:
        raise ConfigError(f"Bad {flag} value for {registry.kind} {name!r}: {exc}.") from None


def _latest_valid_checkpoint(checkpoints_dir: str, experiment: str, log) -> Tuple[Any, Optional[Dict[str, Any]]]:
    manager = CheckpointManager(checkpoints_dir)
    path, payload, problems = manager.find_latest_valid()
    for problem in problems:
        log(f"Warning: skipping damaged checkpoint {experiment}/checkpoints/{problem}")
    if path is None and problems:
        raise CheckpointError(
            f"Experiment {experiment} has no valid checkpoint ({'; '.join(problems)}); "
            "it cannot be resumed, start a new run instead."
        )
    if path is not None and problems:
        log(f"Warning: using {path.name} (epoch {payload['epoch']}, step {payload.get('global_step', 0)}) instead.")
    return path, payload


def _check_compatible(payload: Dict[str, Any], model: nn.Module, what: str) -> None:
    """Refuse a checkpoint of another architecture, listing the differing config keys."""
    saved = payload.get(keys.MODEL_CONFIG)
    current = getattr(model, "model_config", None)
    if saved is not None and current is not None and saved != current:
        differing = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
        details = ", ".join(f"{k}: {saved.get(k)!r} vs {current.get(k)!r}" for k in differing)
        raise CheckpointError(f"{what} was saved from a different model ({details}); nothing was loaded.")


def run_training(
    overrides: Dict[str, Any],
    runs_dir: str = "runs",
    resume: Optional[str] = None,
    fork: Optional[str] = None,
    show_progress: Optional[bool] = None,
    log=print,
) -> Dict[str, Any]:
    """Run training as the CLI does; returns ``Trainer.train``'s results dict.

    Raises:
        ConfigError, ExperimentError, DataError, CheckpointError: bad input (nothing
            written); CheckpointSaveError: a save failed; TrainingInterrupted: a signal.
    """
    config = resolve_config(overrides, runs_dir, resume, fork)
    parts = build_components(config, progress=show_progress is not False)
    log(f"Data: {parts.dataset.describe()}")
    log(f"Model: {config.model} ({sum(p.numel() for p in parts.model.parameters()):,} parameters) on {parts.device}")

    source = resume or fork
    checkpoint_path, payload = None, None
    if source is not None:
        source_dir = existing_experiment_dir(Path(runs_dir), source)
        checkpoint_path, payload = _latest_valid_checkpoint(source_dir / CHECKPOINTS_DIR, source, log)
        if payload is None and fork is not None:
            raise CheckpointError(f"Experiment {fork} has no checkpoint yet; there is nothing to fork from.")
        if payload is not None:
            _check_compatible(payload, parts.model, str(checkpoint_path))
            if resume is not None:
                saved_config = payload.get(keys.CONFIG) or {}
                frozen = sorted(
                    k for k in saved_config if k not in RESUME_MUTABLE_KEYS and saved_config[k] != getattr(config, k, None)
                )
                if frozen:
                    raise CheckpointError(
                        f"{checkpoint_path} was written with a different configuration ({', '.join(frozen)}) "
                        f"than {runs_dir}/{resume}/{CONFIG_FILE}; restore the config file or fork instead."
                    )

    _check_work_left(payload, config, source, resume is not None)

    experiment = ExperimentManager(runs_dir, resume_exp=resume, fork_exp=fork)
    try:
        trainer = _prepare_trainer(experiment, config, parts, show_progress, log)
        if payload is not None and resume is not None:
            trainer.load_state_dict(payload)
            log(f"Resuming {experiment.name} from {checkpoint_path.name} at epoch {trainer.epoch}, "
                f"step {trainer.global_step}.")
        elif payload is not None:
            parent_config = RunConfig.from_dict(payload[keys.CONFIG]) if payload.get(keys.CONFIG) else config
            _load_fork(trainer, payload, parent_config, config, overrides)
            experiment.record_lineage(fork, int(payload[keys.EPOCH]), str(checkpoint_path), sha256_file(checkpoint_path))
            log(f"Forked {fork} (epoch {payload[keys.EPOCH]}, {checkpoint_path.name}) into {experiment.name}.")
        elif resume is not None:
            log(f"Resuming {experiment.name}: no checkpoint was saved yet, starting from epoch 0.")
        else:
            log(f"Experiment: {experiment.experiment_dir}")
    except Exception as exc:
        experiment.write_status("failed", error=f"{type(exc).__name__}: {exc}")
        experiment.release()
        raise
    try:
        return trainer.train(config.epochs, start_epoch=trainer.epoch)
    finally:
        experiment.release()


def _prepare_trainer(experiment: ExperimentManager, config: RunConfig, parts: Components,
                     show_progress: Optional[bool], log) -> Trainer:
    """Inside the (new or reopened, locked) experiment: report how a resumed run ended,
    record the config (first, so even a run killed at once can be resumed), build the Trainer."""
    previous = experiment.read_status() if experiment.resume_exp is not None else None
    if previous:
        detail = previous.get("error") or previous.get("signal") or ""
        log(f"{experiment.name} was last {previous['state']}" + (f" ({detail})" if detail else "")
            + (" - the process ended without recording why." if previous["state"] == "killed" else "."))
    experiment.save_config(config.to_dict())
    return Trainer(
        parts.model, parts.train_loader, parts.val_loader, nn.CrossEntropyLoss(), parts.optimizer, parts.device,
        experiment, checkpoint_manager=CheckpointManager(experiment.checkpoints_dir, config.save_frequency, config.keep_last),
        scheduler=parts.scheduler, dataset=parts.dataset if config.reapply_transforms else None,
        patience=config.patience, config=config.to_dict(), show_progress=show_progress, amp=config.amp,
        compile_model=config.compile, channels_last=config.channels_last, grad_accum_steps=config.grad_accum,
        grad_clip=config.grad_clip,
    )


def _check_work_left(payload: Optional[Dict[str, Any]], config: RunConfig, source: Optional[str], resuming: bool) -> None:
    """Refuse (before anything is written) a resume or fork with no epoch left to train."""
    if payload is None:
        return
    epoch = int(payload[keys.EPOCH])
    if resuming and payload.get(keys.EARLY_STOPPING):
        stopper = EarlyStopping(config.patience)
        stopper.load_state_dict(payload[keys.EARLY_STOPPING])
        if stopper.should_stop:
            raise ConfigError(
                f"{source} stopped early at epoch {epoch} (no improvement for {stopper.epochs_without_improvement} "
                "epochs); resume with a larger --patience (or 0) to train further."
            )
    if epoch >= config.epochs:
        raise ConfigError(
            f"{source} is at epoch {epoch} and --epochs is {config.epochs}; "
            f"pass --epochs N with N > {epoch} to train further."
        )


def _load_fork(trainer: Trainer, payload: Dict[str, Any], parent: RunConfig, config: RunConfig,
               overrides: Dict[str, Any]) -> None:
    """Start the fork from the parent's state; explicit overrides win over the parent's."""
    state = dict(payload)
    if parent.optimizer != config.optimizer:
        state[keys.OPTIMIZER] = None
    if parent.scheduler != config.scheduler:
        state[keys.SCHEDULER] = None
    if any(getattr(parent, k) != getattr(config, k) for k in DATA_KEYS):
        # A different data pipeline cannot continue the parent's data order mid-epoch.
        state.update({keys.TRAIN_LOADER: None, keys.DATASET: None, keys.MID_EPOCH: False})
    state.update({keys.EARLY_STOPPING: None, keys.CHECKPOINT_MANAGER: None})  # the branch tracks its own best
    trainer.load_state_dict(state)
    for group in trainer.optimizer.param_groups:
        if "lr" in overrides:
            group["lr"] = config.lr
            group["initial_lr"] = config.lr
        if "weight_decay" in overrides:
            group["weight_decay"] = config.weight_decay
    if trainer.scheduler is not None and "lr" in overrides and hasattr(trainer.scheduler, "base_lrs"):
        trainer.scheduler.base_lrs = [config.lr for _ in trainer.scheduler.base_lrs]

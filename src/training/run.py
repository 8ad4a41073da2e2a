"""A whole run from a configuration: new, ``--resume`` or ``--fork``.

Order matters for safety: the configuration is resolved and validated, the data and
model are built, and the checkpoint to start from is chosen and verified *before* a new
experiment directory is created or an existing one is written to. Bad input therefore
never leaves a half-made experiment or touches an existing one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, NamedTuple, Optional, Tuple

import torch
import torch.nn as nn

from ..config import RECORDED_KEYS, RESUME_MUTABLE_KEYS, ConfigError, RunConfig
from ..datasets import DatasetRegistry
from ..errors import WriteError, write_error
from ..models import ModelRegistry
from ..utils import get_device, seed_everything
from ..utils.io import atomic_write_bytes
from . import state_keys as keys
from .checkpoint import CheckpointError, CheckpointManager, LoadedCheckpoint
from .early_stopping import EarlyStopping
from .experiment import (
    CHECKPOINTS_DIR, CONFIG_FILE, LINEAGE_FILE, LOG_FILE, STATUS_FILE, ExperimentError, ExperimentManager, existing_experiment_dir,
    read_experiment_config, read_json_object, refuse_if_busy,
)
from .history import read_log, write_log
from .plots import plot_history
from .interrupts import StartupInterrupted, StopRequest
from .optim import build_optimizer, build_scheduler
from .trainer import Trainer

# Configuration keys that change what the data pipeline produces; a fork that changes
# one of them restarts the data order instead of continuing the parent's.
DATA_KEYS = ("dataset", "batch_size", "seed", "augment", "reapply_transforms", "dataset_options")


def _read_config(runs_dir: str, name: str) -> RunConfig:
    """The saved configuration of experiment ``name`` (name validated, nothing written)."""
    directory = existing_experiment_dir(Path(runs_dir), name)
    config = RunConfig.from_dict(read_experiment_config(directory), source=str(directory / CONFIG_FILE))
    try:
        return config.validate()
    except ConfigError as exc:
        raise ConfigError(f"{directory / CONFIG_FILE} is not a usable configuration: {exc}") from None


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
    clash = sorted(set(options) & set(fixed))
    if clash:  # e.g. --dataset-option seed=5: the run passes seed itself
        set_by = {"seed": "--seed", "data_dir": "--data-dir", "augment": "--no-augment"}
        how = ", ".join(f"{k} from {set_by[k]}" if k in set_by else f"{k} from the data" for k in clash)
        raise ConfigError(f"{flag} {', '.join(clash)} cannot be given for {registry.kind} {name!r}: the run sets {how}.")
    try:
        return registry.create(name, **fixed, **options)
    except TypeError as exc:
        raise ConfigError(f"Bad {flag} value for {registry.kind} {name!r}: {exc}.") from None


def _latest_valid_checkpoint(checkpoints_dir: Path, experiment: str, log) -> LoadedCheckpoint:
    """The newest valid checkpoint of ``experiment``, found read-only (no file touched)."""
    if Path(checkpoints_dir).exists() and not Path(checkpoints_dir).is_dir():
        raise ExperimentError(f"{checkpoints_dir} is a file, not a directory; move it away and try again.")
    found = CheckpointManager(checkpoints_dir, read_only=True).latest_valid()
    path, payload, problems = found.path, found.payload, found.problems
    for problem in problems:
        log(f"Warning: skipping damaged checkpoint {experiment}/checkpoints/{problem}")
    if path is None and problems:
        raise CheckpointError(
            f"Experiment {experiment} has no valid checkpoint ({'; '.join(problems)}); "
            "it cannot be resumed, start a new run instead."
        )
    if path is not None and problems:
        log(f"Warning: using {path.name} (epoch {payload['epoch']}, step {payload.get('global_step', 0)}) instead.")
    return found


def _check_compatible(payload: Dict[str, Any], model: nn.Module, what: str) -> None:
    """Refuse a checkpoint of another architecture, listing the differing config keys."""
    saved = payload.get(keys.MODEL_CONFIG)
    current = getattr(model, "model_config", None)
    if saved is not None and current is not None and saved != current:
        differing = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
        details = ", ".join(f"{k}: {saved.get(k)!r} vs {current.get(k)!r}" for k in differing)
        raise CheckpointError(f"{what} was saved from a different model ({details}); nothing was loaded.")


def check_runs_dir(runs_dir: str, must_exist: bool) -> Path:
    """Refuse a runs directory that is a file, unreachable or not writable, before any
    data is loaded (``ExperimentError``, exit code 2)."""
    if not isinstance(runs_dir, (str, os.PathLike)) or not str(runs_dir).strip():
        raise ExperimentError(f"--runs-dir must name a directory, got {runs_dir!r}.")
    try:
        return _check_runs_dir(runs_dir, must_exist)
    except OSError as exc:  # a name too long, an I/O error while looking: the path cannot be used
        raise ExperimentError(f"--runs-dir {runs_dir} cannot be used ({exc.strerror or exc}); "
                              "pass a directory you can write to.") from None


def _check_runs_dir(runs_dir: str, must_exist: bool) -> Path:
    path = Path(runs_dir)
    if path.exists() and not path.is_dir():
        raise ExperimentError(f"--runs-dir {runs_dir} is a file, not a directory; pass a directory.")
    if must_exist and not path.is_dir():
        return path  # existing_experiment_dir names what is missing
    probe = path
    while not probe.exists():
        if probe.is_symlink():
            raise ExperimentError(f"--runs-dir {runs_dir} goes through a broken symbolic link ({probe}); fix or remove it.")
        probe = probe.parent
    if not probe.is_dir():
        raise ExperimentError(f"--runs-dir {runs_dir} cannot be created: {probe} is a file, not a directory.")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ExperimentError(f"--runs-dir {runs_dir} is not writable ({probe} is read-only or not permitted); "
                              "pass a directory you can write to.")
    return path


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
        raise ConfigError(f"Model {config.model!r} returns outputs of shape {shape} for 2 images; "
                          f"expected (2, {num_classes}) for the {num_classes} classes of {config.dataset!r}.")


def _describe_fingerprint(fingerprint: Optional[Dict[str, Any]]) -> str:
    if not fingerprint:
        return "none recorded"
    return (f"{fingerprint.get('train_samples')} train / {fingerprint.get('val_samples')} validation samples, "
            f"sha256 {str(fingerprint.get('sha256'))[:12]}")


def _check_same_data(saved: Optional[Dict[str, Any]], current: Optional[Dict[str, Any]], name: str, data_dir) -> None:
    if saved and current and saved != current:
        where = f" in {data_dir}" if data_dir else ""
        raise ConfigError(
            f"--resume {name} would train on different data: the run recorded {_describe_fingerprint(saved)}, "
            f"the data found{where} is {_describe_fingerprint(current)}; resume with the original data, "
            f"or use --fork {name} to continue on this data (the fork records both)."
        )


def _recorded_progress(experiment_dir: Path) -> Tuple[int, str]:
    """The furthest epoch the log or status of an experiment records, and where."""
    best, where = 0, ""
    try:
        epochs = read_log(experiment_dir / LOG_FILE)["epoch"]
        if epochs:
            best, where = int(max(epochs)), LOG_FILE
    except ValueError:
        if (experiment_dir / LOG_FILE).stat().st_size > 0:
            best, where = max(best, 1), f"{LOG_FILE} (damaged)"
    try:
        status = read_json_object(experiment_dir / STATUS_FILE, "status")
        epoch = status.get("epoch")
        if isinstance(epoch, int) and not isinstance(epoch, bool) and epoch > best:
            best, where = epoch, STATUS_FILE
    except (FileNotFoundError, ExperimentError):
        pass
    return best, where


def run_training(
    overrides: Dict[str, Any],
    runs_dir: str = "runs",
    resume: Optional[str] = None,
    fork: Optional[str] = None,
    show_progress: Optional[bool] = None,
    log=print,
    stop: Optional[StopRequest] = None,
) -> Dict[str, Any]:
    """Run training as the CLI does; returns ``Trainer.train``'s results dict, or
    ``{"nothing_to_do": True, "message": ...}`` for a resume of a finished run.

    Args:
        stop: the caller's ``StopRequest`` (in immediate mode during start-up); it is
            switched to deferred mode before anything is written.

    Raises:
        BadInputError (ConfigError, ExperimentError, DataError, CheckpointError): bad
            input, nothing written; WriteError / CheckpointSaveError: a write failed;
            NonFiniteLossError: the loss diverged; TrainingInterrupted: a signal.
    """
    check_runs_dir(runs_dir, must_exist=resume is not None or fork is not None)
    if resume is not None or fork is not None:
        existing_experiment_dir(Path(runs_dir), resume or fork)
    if resume is not None:  # a running experiment is refused before anything is loaded (or judged finished)
        refuse_if_busy(Path(runs_dir) / resume)
    into = None  # a fork that saved no checkpoint of its own (a full disk, a kill) restarts from its parent, in place
    lineage = _unsaved_fork(Path(runs_dir), resume) if resume is not None else None
    if lineage is not None:
        own = resolve_config(overrides, runs_dir, resume, None).to_dict()
        parent_config = _read_config(runs_dir, lineage["parent"]).to_dict()
        overrides = {k: v for k, v in own.items() if parent_config.get(k) != v}
        into, resume, fork = resume, None, lineage["parent"]
        log(f"{into} is a fork of {fork} that saved no checkpoint of its own; it starts again from {fork}'s checkpoint.")
    config = resolve_config(overrides, runs_dir, resume, fork)
    parts = build_components(config, progress=show_progress is not False)
    log(f"Data: {parts.dataset.describe()}")
    log(f"Model: {config.model} ({sum(p.numel() for p in parts.model.parameters()):,} parameters) on {parts.device}")
    dry_forward(parts.model, parts.val_loader, config, parts.dataset.num_classes)
    fingerprint = parts.dataset.fingerprint() if hasattr(parts.dataset, "fingerprint") else None
    if resume is not None:
        _check_same_data(config.data_fingerprint, fingerprint, resume, config.data_dir)
    config = config.replace(data_fingerprint=fingerprint or config.data_fingerprint)

    source = resume or fork
    found = None
    if source is not None:
        source_dir = existing_experiment_dir(Path(runs_dir), source)
        found = _latest_valid_checkpoint(source_dir / CHECKPOINTS_DIR, source, log)
        payload = found.payload
        if payload is None and fork is not None:
            raise CheckpointError(f"Experiment {fork} has no checkpoint yet; there is nothing to fork from.")
        if into is not None and found.entry["sha256"] != lineage["sha256"]:
            raise CheckpointError(
                f"{into} was forked from a checkpoint of {fork} (sha256 {lineage['sha256'][:12]}) that is no longer "
                f"{fork}'s newest, and saved none of its own; nothing was changed. Fork again: python train.py --fork {fork}."
            )
        if payload is None:
            progress, where = _recorded_progress(source_dir)
            if progress > 0:
                raise CheckpointError(
                    f"Experiment {resume} records {progress} finished epoch(s) in {where} but no checkpoint holds them "
                    f"({source_dir / CHECKPOINTS_DIR} has none); nothing was changed. Restore the checkpoints, "
                    "or start a new run with the same options."
                )
        else:
            _check_compatible(payload, parts.model, str(found.path))
            if resume is not None:
                saved_config = payload.get(keys.CONFIG) or {}
                frozen = sorted(
                    k for k in saved_config
                    if k not in RESUME_MUTABLE_KEYS and k not in RECORDED_KEYS and saved_config[k] != getattr(config, k, None)
                )
                if frozen:
                    raise CheckpointError(
                        f"{found.path} was written with a different configuration ({', '.join(frozen)}) "
                        f"than {runs_dir}/{resume}/{CONFIG_FILE}; restore the config file or fork instead."
                    )
                _check_same_data(saved_config.get("data_fingerprint"), fingerprint, resume, config.data_dir)
    payload = found.payload if found is not None else None

    if resume is not None and payload is not None:
        finished = _finished_message(payload, config, resume)
        if finished is not None:
            log(finished)
            if stop is not None:
                stop.defer()  # the records may be rewritten: a signal must not tear a write
            _settle_finished_records(runs_dir, resume, payload, config, log)
            return {"nothing_to_do": True, "message": finished, "experiment_dir": str(Path(runs_dir) / resume)}
        _check_schedule_extension(payload, config, resume)
    if fork is not None:
        config = _fork_epochs(payload, config, fork, overrides)

    if stop is not None:
        if stop.requested:  # noted during start-up, but its exception was lost (raised inside compile())
            raise StartupInterrupted(stop.signum)
        stop.defer()  # from here on files are written: a signal is noted, not obeyed mid-write
    experiment = ExperimentManager(runs_dir, resume_exp=resume or into, fork_exp=fork if into is None else None,
                                   config=config.to_dict(), parent=found)
    try:
        trainer = _prepare_trainer(experiment, config, parts, show_progress, log, payload)
        if payload is not None and resume is not None:
            trainer.load_state_dict(payload)
            log(f"Resuming {experiment.name} from {found.path.name} at epoch {trainer.epoch}, "
                f"step {trainer.global_step}.")
        elif payload is not None:
            # A checkpoint written from Python holds no config: the parent's config.json
            # describes it (never the fork's own, which would hide a changed optimizer).
            parent_config = (RunConfig.from_dict(payload[keys.CONFIG]) if payload.get(keys.CONFIG)
                             else _read_config(runs_dir, fork))
            _load_fork(trainer, payload, parent_config, config, overrides)
            log(f"Forked {fork} (epoch {payload[keys.EPOCH]}, {found.path.name}) into {experiment.name}.")
        elif resume is not None:
            log(f"Resuming {experiment.name}: no checkpoint was saved yet, starting from epoch 0.")
        else:
            log(f"Experiment: {experiment.experiment_dir}")
    except BaseException as exc:
        try:
            if isinstance(exc, (KeyboardInterrupt, StartupInterrupted)):
                experiment.write_status("interrupted", epoch=0)
            else:
                experiment.write_status("failed", error=f"{type(exc).__name__}: {exc}")
        except (WriteError, OSError):
            pass
        experiment.release()
        raise
    try:
        return trainer.train(config.epochs, start_epoch=trainer.epoch)
    finally:
        experiment.release()


def _unsaved_fork(runs_dir: Path, name: str) -> Optional[Dict[str, Any]]:
    """The lineage record of experiment ``name`` when it is a fork with no checkpoint file of
    its own and no recorded progress past its fork point (checkpoints deleted after the fork
    trained are lost progress: refused like any other run's)."""
    directory = existing_experiment_dir(runs_dir, name)
    checkpoints = directory / CHECKPOINTS_DIR
    if checkpoints.is_dir() and any(checkpoints.glob("*.pt")):
        return None
    try:
        lineage = read_json_object(directory / LINEAGE_FILE, "lineage")
    except (FileNotFoundError, ExperimentError):
        return None
    if not isinstance(lineage.get("parent"), str) or not isinstance(lineage.get("sha256"), str) \
            or not isinstance(lineage.get("epoch"), int) or _recorded_progress(directory)[0] > lineage["epoch"]:
        return None
    existing_experiment_dir(runs_dir, lineage["parent"])  # a named error if the parent is gone
    return lineage


def _finished_message(payload: Dict[str, Any], config: RunConfig, name: str) -> Optional[str]:
    """For a resume with nothing left to do, the message saying so (None otherwise)."""
    epoch = int(payload[keys.EPOCH])
    if payload.get(keys.MID_EPOCH):
        return None
    if payload.get(keys.EARLY_STOPPING):
        stopper = EarlyStopping(config.patience)
        stopper.load_state_dict(payload[keys.EARLY_STOPPING])
        if stopper.should_stop:
            return (f"{name} stopped early at epoch {epoch} (no improvement for {stopper.epochs_without_improvement} "
                    f"epochs, best {stopper.best_value or 0:.2f}% at epoch {stopper.best_epoch}); nothing to do. "
                    f"To go on, resume with a larger --patience (or 0): python train.py --resume {name} --patience N.")
    if epoch >= config.epochs:
        return (f"{name} is complete at epoch {epoch} (--epochs {config.epochs}); nothing to do. "
                f"To train further: python train.py --resume {name} --epochs N with N > {epoch}.")
    return None


def _settle_finished_records(runs_dir: str, name: str, payload: Dict[str, Any], config: RunConfig, log) -> None:
    """A finished run whose log or status lags its newest checkpoint (the disk filled, or
    the process died, after the last save): bring log, curves and status up to date from
    the checkpoint. A run whose records agree with it is not touched."""
    directory = Path(runs_dir) / name
    history = {k: list(v) for k, v in (payload.get(keys.HISTORY) or {}).items()}
    try:
        logged = read_log(directory / LOG_FILE)
    except ValueError:
        logged = None
    try:
        status = read_json_object(directory / STATUS_FILE, "status")
    except (FileNotFoundError, ExperimentError):
        status = {}
    epoch = int(payload[keys.EPOCH])
    log_lags = bool(history.get("epoch")) and logged != history
    if not log_lags and status.get("state") in ("completed", "stopped_early") and status.get("epoch") == epoch:
        return
    stopper = EarlyStopping(config.patience)
    if payload.get(keys.EARLY_STOPPING):
        stopper.load_state_dict(payload[keys.EARLY_STOPPING])
    try:
        experiment = ExperimentManager(runs_dir, resume_exp=name)
    except ExperimentError:
        return  # another process holds the run and writes its records itself
    try:
        if log_lags:
            write_log(Path(experiment.log_file), history)
        if history.get("epoch"):
            plot_history(history, Path(experiment.plot_file))
        experiment.write_status("stopped_early" if stopper.should_stop else "completed", epoch=epoch,
                                global_step=int(payload.get(keys.GLOBAL_STEP, 0)),
                                best_accuracy=stopper.best_value or 0.0, best_epoch=stopper.best_epoch)
    except OSError as exc:
        raise write_error(directory, exc, "bring the records up to date in") from None
    finally:
        experiment.release()
    was = status.get("state", "missing or damaged")
    log(f"Warning: the records of {name} lagged its checkpoint at epoch {epoch} (status was {was!r}"
        + (", the log was behind or damaged" if log_lags else "") + "); log, curves and status.json are brought up to date.")


def _check_schedule_extension(payload: Dict[str, Any], config: RunConfig, name: str) -> None:
    """Refuse to extend a cosine/step schedule past the length it was planned for: it
    would train at the end of the plan (lr ~0) and then climb back (cosine)."""
    planned = (payload.get(keys.CONFIG) or {}).get("epochs")
    schedule = payload.get(keys.SCHEDULER) or {}
    if config.scheduler == "cosine" and all(isinstance(schedule.get(k), int) for k in ("T_max", "last_epoch")):
        # The plan's own end (a resume with a smaller --epochs keeps it, so it may be extended back to it).
        planned = int(payload[keys.EPOCH]) - schedule["last_epoch"] + schedule["T_max"]
    if config.scheduler in ("cosine", "step") and isinstance(planned, int) and config.epochs > planned:
        raise ConfigError(
            f"{name}'s {config.scheduler} learning-rate schedule was planned for {planned} epochs; extending it to "
            f"{config.epochs} would train past its end. Fork to plan a new schedule over the extra epochs: "
            f"python train.py --fork {name} --epochs {config.epochs}."
        )


def _fork_epochs(payload: Dict[str, Any], config: RunConfig, fork: str, overrides: Dict[str, Any]) -> RunConfig:
    """A fork trains to ``--epochs`` (a total); without it, a parent that reached its
    budget is trained for that budget again."""
    epoch = int(payload[keys.EPOCH])
    if epoch < config.epochs:
        return config
    if "epochs" in overrides:
        raise ConfigError(
            f"{fork} is at epoch {epoch} and --epochs is {config.epochs}; "
            f"pass --epochs N with N > {epoch} (a total, counting the parent's epochs)."
        )
    return config.replace(epochs=epoch + config.epochs)


def _prepare_trainer(experiment: ExperimentManager, config: RunConfig, parts: Components,
                     show_progress: Optional[bool], log, payload: Optional[Dict[str, Any]]) -> Trainer:
    """Inside the (new or reopened, locked) experiment: report how a resumed run ended,
    keep a log that records more than the checkpoint, build the Trainer."""
    if experiment.resume_exp is not None:
        previous = experiment.read_status()
        if previous and previous["state"] == "damaged":
            log(f"Warning: {previous['error']} It is rewritten now.")
        elif previous:
            detail = previous.get("error") or previous.get("signal") or ""
            log(f"{experiment.name} was last {previous['state']}" + (f" ({detail})" if detail else "")
                + (" - the process ended without recording why." if previous["state"] == "killed" else "."))
        _keep_longer_log(experiment, payload, log)
    return Trainer(
        parts.model, parts.train_loader, parts.val_loader, nn.CrossEntropyLoss(), parts.optimizer, parts.device,
        experiment, checkpoint_manager=CheckpointManager(experiment.checkpoints_dir, config.save_frequency, config.keep_last),
        scheduler=parts.scheduler, dataset=parts.dataset if config.reapply_transforms else None,
        patience=config.patience, config=config.to_dict(), show_progress=show_progress, amp=config.amp,
        compile_model=config.compile, channels_last=config.channels_last, grad_accum_steps=config.grad_accum,
        grad_clip=config.grad_clip, checkpoint_interval=config.checkpoint_interval,
    )


def _keep_longer_log(experiment: ExperimentManager, payload: Optional[Dict[str, Any]], log) -> None:
    """When the newest valid checkpoint is older than the log (a damaged latest), the
    log is rewritten from the checkpoint's history: keep a copy of the longer one."""
    epoch = int(payload[keys.EPOCH]) if payload is not None else 0
    progress, _ = _recorded_progress(Path(experiment.experiment_dir))
    log_file = Path(experiment.log_file)
    try:
        read_log(log_file)
    except ValueError as exc:  # rewritten from the checkpoint's history by the next epoch: say so, keep it
        damaged = log_file.with_name(f"{LOG_FILE}.damaged")
        try:
            atomic_write_bytes(damaged, log_file.read_bytes())
        except OSError as error:
            raise write_error(damaged, error, "keep a copy of the damaged log as") from None
        log(f"Warning: {exc} It is rewritten from the checkpoint's history; the damaged copy is kept as {damaged.name}.")
    if progress > epoch and log_file.exists():
        backup = log_file.with_name(f"{LOG_FILE}.until-epoch-{progress}")
        try:
            atomic_write_bytes(backup, log_file.read_bytes())
        except OSError as exc:
            raise write_error(backup, exc, "keep a copy of the log as") from None
        log(f"Warning: the log records epoch {progress} but the newest valid checkpoint holds epoch {epoch}; "
            f"epochs {epoch + 1}-{progress} are trained again. The old log is kept as {backup.name}.")


def _load_fork(trainer: Trainer, payload: Dict[str, Any], parent: RunConfig, config: RunConfig,
               overrides: Dict[str, Any]) -> None:
    """Start the fork from the parent's state; explicit overrides win over the parent's.

    A ``cosine`` or ``step`` schedule is planned anew over the fork's remaining epochs
    (from the fork's ``lr``) when the fork changes the scheduler or the epoch count;
    otherwise the parent's schedule continues."""
    state = dict(payload)
    replan = config.scheduler in ("cosine", "step") and (
        parent.scheduler != config.scheduler or parent.epochs != config.epochs)
    if parent.optimizer != config.optimizer:
        state[keys.OPTIMIZER] = None
    if parent.scheduler != config.scheduler or replan:
        state[keys.SCHEDULER] = None
    other_data = parent.data_fingerprint and config.data_fingerprint and parent.data_fingerprint != config.data_fingerprint
    if other_data or any(getattr(parent, k) != getattr(config, k) for k in DATA_KEYS):
        # A different data pipeline (or other data: --data-dir) cannot continue the parent's data order mid-epoch.
        state.update({keys.TRAIN_LOADER: None, keys.DATASET: None, keys.MID_EPOCH: False})
    state.update({keys.EARLY_STOPPING: None, keys.CHECKPOINT_MANAGER: None})  # the branch tracks its own best
    trainer.load_state_dict(state)
    for group in trainer.optimizer.param_groups:
        if "lr" in overrides or replan:
            group["lr"] = config.lr
            group["initial_lr"] = config.lr
        if "weight_decay" in overrides:
            group["weight_decay"] = config.weight_decay
    if replan:
        trainer.scheduler = build_scheduler(config.scheduler, trainer.optimizer, config.epochs - trainer.epoch)
    elif trainer.scheduler is not None and "lr" in overrides and hasattr(trainer.scheduler, "base_lrs"):
        trainer.scheduler.base_lrs = [config.lr for _ in trainer.scheduler.base_lrs]

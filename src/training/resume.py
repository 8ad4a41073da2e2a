"""Resume and fork decisions: which checkpoint to start from, whether it fits, what is
left to do, and how a run's records are kept consistent with its checkpoints.

``run.py`` calls these before (read-only) and right after (as the lock holder) the
experiment is opened; none of them trains.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn as nn

from ..config import ConfigError, RunConfig
from ..errors import write_error
from ..utils.io import atomic_write_bytes
from . import state_keys as keys
from .checkpoint import CheckpointError, CheckpointManager, LoadedCheckpoint
from .early_stopping import EarlyStopping
from .protocols import model_config as described_model_config
from .experiment import (
    CHECKPOINTS_DIR,
    LINEAGE_FILE,
    LOG_FILE,
    STATUS_FILE,
    ExperimentError,
    ExperimentManager,
    existing_experiment_dir,
    read_json_object,
)
from .history import METRICS_FILE, read_log, read_metrics_epochs, write_history_files
from .optim import SchedulerRegistry, build_scheduler
from .schedules import schedule_steps_left
from .plots import plot_history, run_title
from .trainer import Trainer
from .run_keys import DATA_KEYS


def latest_valid_checkpoint(checkpoints_dir: Path, experiment: str, log) -> LoadedCheckpoint:
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


def check_compatible(payload: Dict[str, Any], model: nn.Module, what: str) -> None:
    """Refuse a checkpoint of another architecture, listing the differing config keys."""
    saved = payload.get(keys.MODEL_CONFIG)
    current = described_model_config(model)
    if saved is not None and current is not None and saved != current:
        differing = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
        details = ", ".join(f"{k}: {saved.get(k)!r} vs {current.get(k)!r}" for k in differing)
        raise CheckpointError(f"{what} was saved from a different model ({details}); nothing was loaded.")


def _describe_fingerprint(fingerprint: Optional[Dict[str, Any]]) -> str:
    if not fingerprint:
        return "none recorded"
    return (
        f"{fingerprint.get('train_samples')} train / {fingerprint.get('val_samples')} validation samples, "
        f"sha256 {str(fingerprint.get('sha256'))[:12]}"
    )


def check_same_data(saved: Optional[Dict[str, Any]], current: Optional[Dict[str, Any]], name: str, data_dir) -> None:
    if saved and current and saved != current:
        where = f" in {data_dir}" if data_dir else ""
        raise ConfigError(
            f"--resume {name} would train on different data: the run recorded {_describe_fingerprint(saved)}, "
            f"the data found{where} is {_describe_fingerprint(current)}; resume with the original data, "
            f"or use --fork {name} to continue on this data (the fork records both)."
        )


def recorded_progress(experiment_dir: Path) -> Tuple[int, str]:
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


def unsaved_fork(runs_dir: Path, name: str) -> Optional[Dict[str, Any]]:
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
    if (
        not isinstance(lineage.get("parent"), str)
        or not isinstance(lineage.get("sha256"), str)
        or not isinstance(lineage.get("epoch"), int)
        or recorded_progress(directory)[0] > lineage["epoch"]
    ):
        return None
    existing_experiment_dir(runs_dir, lineage["parent"])  # a named error if the parent is gone
    return lineage


def finished_message(payload: Dict[str, Any], config: RunConfig, name: str) -> Optional[str]:
    """For a resume with nothing left to do, the message saying so (None otherwise)."""
    epoch = int(payload[keys.EPOCH])
    if payload.get(keys.MID_EPOCH):
        return None
    if payload.get(keys.EARLY_STOPPING):
        stopper = EarlyStopping(config.patience)
        stopper.load_state_dict(payload[keys.EARLY_STOPPING])
        if stopper.should_stop:
            return (
                f"{name} stopped early at epoch {epoch} (no improvement for {stopper.epochs_without_improvement} "
                f"epochs, best {stopper.best_value or 0:.2f}% at epoch {stopper.best_epoch}); nothing to do. "
                f"To go on, resume with a larger --patience (or 0): python train.py --resume {name} --patience N."
            )
    if epoch >= config.epochs:
        return (
            f"{name} is complete at epoch {epoch} (--epochs {config.epochs}); nothing to do. "
            f"To train further: python train.py --resume {name} --epochs N with N > {epoch}."
        )
    return None


def settle_finished_records(runs_dir: str, name: str, payload: Dict[str, Any], config: RunConfig, log) -> None:
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
    # metrics.csv is written right after the log: a kill in between leaves it one epoch behind.
    log_lags = bool(history.get("epoch")) and (
        logged != history or read_metrics_epochs(directory / METRICS_FILE) not in (None, history["epoch"])
    )
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
            write_history_files(Path(experiment.log_file), history)
        if history.get("epoch"):
            plot_history(
                history,
                Path(experiment.plot_file),
                title=run_title(name, config.to_dict()),
                best_epoch=stopper.best_epoch or None,
                starts=payload.get(keys.STARTS) or (),
            )
        experiment.write_status(
            "stopped_early" if stopper.should_stop else "completed",
            epoch=epoch,
            global_step=int(payload.get(keys.GLOBAL_STEP, 0)),
            best_accuracy=stopper.best_value or 0.0,
            best_epoch=stopper.best_epoch,
        )
    except OSError as exc:
        raise write_error(directory, exc, "bring the records up to date in") from None
    finally:
        experiment.release()
    was = status.get("state", "missing or damaged")
    log(
        f"Warning: the records of {name} lagged its checkpoint at epoch {epoch} (status was {was!r}"
        + (", the log was behind or damaged" if log_lags else "")
        + "); log, curves and status.json are brought up to date."
    )


def check_schedule_extension(payload: Dict[str, Any], config: RunConfig, name: str) -> None:
    """Refuse to extend a cosine/step/onecycle schedule past the length it was planned for
    (before anything is opened or written): it would train at the end of the plan (lr ~0)
    and then climb back (cosine), or fail (onecycle counts its steps)."""
    planned = (payload.get(keys.CONFIG) or {}).get("epochs")
    schedule = payload.get(keys.SCHEDULER) or {}
    info = SchedulerRegistry.info(config.scheduler)  # planned, plan_end: see src/optim.py
    plan_end = info.get("plan_end") and info["plan_end"](int(payload[keys.EPOCH]), schedule)
    if plan_end is not None:
        planned = plan_end
    if info.get("planned") and isinstance(planned, int) and config.epochs > planned:
        raise ConfigError(
            f"{name}'s {config.scheduler} learning-rate schedule was planned for {planned} epochs; extending it to "
            f"{config.epochs} would train past its end. Fork to plan a new schedule over the extra epochs: "
            f"python train.py --fork {name} --epochs {config.epochs}."
        )


def fork_epochs(payload: Dict[str, Any], config: RunConfig, fork: str, overrides: Dict[str, Any]) -> RunConfig:
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


def keep_longer_log(experiment: ExperimentManager, payload: Optional[Dict[str, Any]], log) -> None:
    """When the newest valid checkpoint is older than the log (a damaged latest), the
    log is rewritten from the checkpoint's history: keep a copy of the longer one."""
    epoch = int(payload[keys.EPOCH]) if payload is not None else 0
    progress, _ = recorded_progress(Path(experiment.experiment_dir))
    log_file = Path(experiment.log_file)
    try:
        read_log(log_file)
    except ValueError as exc:  # rewritten from the checkpoint's history by the next epoch: say so, keep it
        damaged = log_file.with_name(f"{LOG_FILE}.damaged")
        try:
            atomic_write_bytes(damaged, log_file.read_bytes())
        except OSError as error:
            raise write_error(damaged, error, "keep a copy of the damaged log as") from None
        log(
            f"Warning: {exc} It is rewritten from the checkpoint's history; the damaged copy is kept as {damaged.name}."
        )
    if progress > epoch and log_file.exists():
        backup = log_file.with_name(f"{LOG_FILE}.until-epoch-{progress}")
        try:
            atomic_write_bytes(backup, log_file.read_bytes())
        except OSError as exc:
            raise write_error(backup, exc, "keep a copy of the log as") from None
        log(
            f"Warning: the log records epoch {progress} but the newest valid checkpoint holds epoch {epoch}; "
            f"epochs {epoch + 1}-{progress} are trained again. The old log is kept as {backup.name}."
        )


def load_fork(
    trainer: Trainer, payload: Dict[str, Any], parent: RunConfig, config: RunConfig, overrides: Dict[str, Any]
) -> None:
    """Start the fork from the parent's state; explicit overrides win over the parent's.

    A ``cosine``, ``step`` or ``onecycle`` schedule is planned anew over the fork's
    remaining epochs (``onecycle``: its remaining optimizer steps; from the fork's ``lr``)
    when the fork changes the scheduler or the epoch count, and a ``onecycle`` one also
    when its steps left no longer match the fork's (another batch size, ``--grad-accum``,
    data or process count); otherwise the parent's schedule continues."""
    state = dict(payload)
    info = SchedulerRegistry.info(config.scheduler)  # replan_on_fork, plans_steps: see src/optim.py
    replan = info.get("replan_on_fork", info.get("planned", False)) and (
        parent.scheduler != config.scheduler or parent.epochs != config.epochs
    )
    if parent.optimizer != config.optimizer:
        state[keys.OPTIMIZER] = None
    if parent.scheduler != config.scheduler or replan:
        state[keys.SCHEDULER] = None
    other_data = (
        parent.data_fingerprint and config.data_fingerprint and parent.data_fingerprint != config.data_fingerprint
    )
    other_world = int(payload.get(keys.WORLD_SIZE) or 1) != trainer.dist.world_size
    if other_data or other_world or any(getattr(parent, k) != getattr(config, k) for k in DATA_KEYS):
        # A different data pipeline (or other data: --data-dir, or another number of processes)
        # cannot continue the parent's data order mid-epoch.
        state.update({keys.TRAIN_LOADER: None, keys.DATASET: None, keys.MID_EPOCH: False, keys.RANKS: None})
    state.update({keys.EARLY_STOPPING: None, keys.CHECKPOINT_MANAGER: None})  # the branch tracks its own best
    trainer.load_state_dict(state, start_kind="fork")
    for group in trainer.optimizer.param_groups:
        if "lr" in overrides or replan:
            group["lr"] = config.lr
            group["initial_lr"] = config.lr
        if "weight_decay" in overrides:
            group["weight_decay"] = config.weight_decay
    needed = trainer.remaining_optimizer_steps(config.epochs)
    if (
        info.get("plans_steps")
        and not replan
        and needed is not None
        and schedule_steps_left(trainer.scheduler) != needed
    ):
        # Another batch size, --grad-accum, data or process count changes the steps left:
        # the parent's cycle would end early or run out, so the fork plans its own.
        replan = True
        for group in trainer.optimizer.param_groups:
            group["lr"] = group["initial_lr"] = config.lr
    if replan and info.get("plans_steps"):  # one cycle over exactly the steps left
        trainer.scheduler = build_scheduler(config.scheduler, trainer.optimizer, 1, needed)
    elif replan:
        trainer.scheduler = build_scheduler(config.scheduler, trainer.optimizer, config.epochs - trainer.epoch)
    elif _has_base_rates(trainer.scheduler) and "lr" in overrides:
        trainer.scheduler.base_lrs = [config.lr for _ in trainer.scheduler.base_lrs]


def _has_base_rates(scheduler: Any) -> bool:
    """A torch scheduler that keeps the rates it scales (``base_lrs``); plateau keeps none."""
    lr_scheduler = torch.optim.lr_scheduler
    return isinstance(scheduler, lr_scheduler.LRScheduler) and not isinstance(scheduler, lr_scheduler.ReduceLROnPlateau)

"""The Trainer's state as a checkpoint holds it: built by ``training_state`` (everything
but model and optimizer, which ``CheckpointManager`` adds) and restored by
``load_training_state``. The keys are ``state_keys.py``'s; a checkpoint of a newer
``FORMAT_VERSION`` than this code writes is refused with a clear error.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Optional

from ..utils.seed import capture_rng_state, restore_rng_state
from . import state_keys as keys
from .checkpoint import FORMAT_VERSION, CheckpointError
from .checkpoint import CheckpointSaveError
from .early_stopping import EarlyStopping
from .history import read_log, record_start
from ..errors import NonFiniteLossError

if TYPE_CHECKING:  # only for annotations
    from .trainer import Trainer


def training_state(trainer: "Trainer") -> Dict[str, Any]:
    """Under torchrun every rank's RNG and partial metrics are gathered (a collective
    step: call it on every rank)."""
    dist, optional = trainer.dist, _state_or_none
    ranks = None
    if dist.enabled:
        ranks = dist.gather_object(
            {keys.RNG: capture_rng_state(), keys.TRAIN_TRACKER: trainer.train_tracker.state_dict()}
        )
    return {
        keys.WORLD_SIZE: dist.world_size,
        keys.RANKS: ranks,
        keys.GLOBAL_STEP: trainer.global_step,
        keys.MID_EPOCH: trainer._mid_epoch,
        keys.TRAIN_TRACKER: trainer.train_tracker.state_dict(),
        keys.TRAIN_LOADER: trainer._train.state_dict(),
        keys.DATASET: optional(trainer.dataset),
        keys.SCHEDULER: optional(trainer.scheduler),
        keys.SCALER: trainer.precision.state_dict(),
        keys.EMA: trainer.ema.state_dict(trainer.model) if trainer.ema is not None else None,
        keys.WARMUP: optional(trainer.warmup),
        keys.EPOCH_LEARNING_RATE: trainer._epoch_lr if trainer._mid_epoch else None,
        keys.EARLY_STOPPING: trainer.early_stopping.state_dict(),
        keys.CHECKPOINT_MANAGER: trainer.checkpoint_manager.state_dict() if trainer.checkpoint_manager else None,
        keys.HISTORY: {k: list(v) for k, v in trainer.history.items()},
        keys.STARTS: [dict(s) for s in trainer.starts],
        keys.RNG: capture_rng_state(),
        keys.CONFIG: trainer.config,
    }


def _state_or_none(part) -> Optional[Dict[str, Any]]:
    return part.state_dict() if part is not None else None


def check_format(state: Dict[str, Any], source: str = "The checkpoint") -> None:
    """Refuse a checkpoint written by a newer exptrain (a missing version is version 1).
    The start plan checks it first (nothing written); ``load_state_dict`` again for Python callers."""
    version = state.get(keys.FORMAT_VERSION, 1)
    if not isinstance(version, int) or isinstance(version, bool) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{source} has format version {version!r}, newer than the {FORMAT_VERSION} this exptrain reads; "
            f"upgrade exptrain to load it."
        )


def load_training_state(
    trainer: "Trainer", state: Dict[str, Any], restore_optimizer: bool = True, start_kind: Optional[str] = "resume"
) -> None:
    check_format(state)
    trainer.model.load_state_dict(state[keys.MODEL])
    if trainer.ema is not None:  # the checkpoint's model is the average; the trained weights come back
        trainer.ema.load_state_dict(state.get(keys.EMA), trainer.model)
    if trainer.warmup is not None:
        trainer.warmup.load_state_dict(state.get(keys.WARMUP))
    if restore_optimizer and state.get(keys.OPTIMIZER):
        trainer.optimizer.load_state_dict(state[keys.OPTIMIZER])
    if trainer.scheduler is not None and state.get(keys.SCHEDULER):
        trainer.scheduler.load_state_dict(state[keys.SCHEDULER])
    trainer.precision.load_state_dict(state.get(keys.SCALER))
    if state.get(keys.EARLY_STOPPING):
        trainer.early_stopping.load_state_dict(state[keys.EARLY_STOPPING])
    if trainer.checkpoint_manager is not None and state.get(keys.CHECKPOINT_MANAGER):
        trainer.checkpoint_manager.load_state_dict(state[keys.CHECKPOINT_MANAGER])
    if state.get(keys.HISTORY):
        trainer._history = {k: list(v) for k, v in state[keys.HISTORY].items()}
    if trainer.dataset is not None and state.get(keys.DATASET):
        trainer.dataset.load_state_dict(state[keys.DATASET])
    if state.get(keys.TRAIN_LOADER):
        trainer._train.load_state_dict(state[keys.TRAIN_LOADER])
    trainer._mid_epoch = bool(state.get(keys.MID_EPOCH)) and state.get(keys.TRAIN_LOADER) is not None
    ranks = state.get(keys.RANKS)
    own = ranks[trainer.dist.rank] if ranks and len(ranks) == trainer.dist.world_size else None
    if trainer._mid_epoch:
        trainer.train_tracker.load_state_dict((own or state)[keys.TRAIN_TRACKER])
        trainer._epoch_lr = state.get(keys.EPOCH_LEARNING_RATE)
    if (own or state).get(keys.RNG):
        restore_rng_state((own or state)[keys.RNG])
    trainer.epoch = int(state.get(keys.EPOCH, 0))
    trainer.global_step = int(state.get(keys.GLOBAL_STEP, 0))
    trainer.starts = [dict(s) for s in state.get(keys.STARTS) or [] if isinstance(s, dict)]
    if start_kind is not None and (trainer.epoch or trainer.global_step):
        record_start(trainer.starts, start_kind, trainer.epoch, trainer.global_step, trainer._mid_epoch)


def history_from_log(trainer: "Trainer") -> int:
    """``Trainer.load_history_from_log``: the history, best and patience from the log."""
    trainer._history = read_log(Path(trainer.experiment_manager.log_file))
    old = trainer.early_stopping
    stopper = EarlyStopping(old.patience, old.mode, old.min_delta)
    for epoch, accuracy in zip(trainer.history["epoch"], trainer.history["val_accuracy"]):
        stopper.step(accuracy, epoch)
    trainer.early_stopping = stopper
    last = trainer.history["epoch"][-1] if trainer.history["epoch"] else 0
    trainer.epoch = max(trainer.epoch, int(last))
    return last


def unsaved_reason(failed: BaseException) -> str:
    """Why a Trainer whose save failed (or whose loss diverged) cannot continue."""
    return (
        "training diverged"
        if isinstance(failed, NonFiniteLossError)
        else "a checkpoint could not be written"
        if isinstance(failed, CheckpointSaveError)
        else "a file of the run could not be written"
    )

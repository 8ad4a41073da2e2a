"""The Trainer's saves: the epoch-end save handed to the background writer (with the
log, metrics.csv and status that describe it), the wait for it, and the mid-epoch saves
(``checkpoint_interval``, a stop signal, a fork's unsaved start). The Trainer holds one
``Saver``; ``background.py`` explains the writer and its guarantees.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Optional

from ..errors import write_error
from .background import BackgroundWrites, FrozenState, freeze
from .checkpoint import CheckpointManager
from .history import METRICS_FILE, write_log, write_metrics_csv
from .interrupts import TrainingInterrupted

if TYPE_CHECKING:  # only for annotations
    from .trainer import Trainer


class Saver:
    """Owns the checkpoint manager, the background writer and the save clock of one
    Trainer (``trainer``: its state is read through ``_training_state``, ``history``,
    ``epoch`` and its model and optimizer; a failed write sets its epoch back)."""

    def __init__(self, trainer: "Trainer", manager: Optional[CheckpointManager], interval: float, background: bool):
        self.trainer = trainer
        self.manager = manager
        self.interval = float(interval)  # seconds between mid-epoch saves (0: none)
        # Epoch-end saves overlap the next epoch on a writer thread (not under torchrun,
        # where a save is a collective step of every rank).
        self.writes = BackgroundWrites(enabled=background and not trainer.dist.enabled)
        self.committed_epoch = 0  # the newest epoch whose checkpoint and log are written
        self.last_save = time.monotonic()

    def commit_epoch(self, epoch: int, val_metrics: Dict[str, float], status: Dict[str, Any]) -> None:
        """Save the end of ``epoch`` and then record it (log, metrics.csv, status), as one
        job of the background writer: the training thread only copies the state.

        Under torchrun (or with ``background_writes=False``) the job runs here, the save
        being a collective step. The previous job has finished (``_run_epoch`` waited)."""
        trainer, manager, em = self.trainer, self.manager, self.trainer.experiment_manager
        loss, accuracy = val_metrics["loss"], val_metrics["accuracy"]
        history = {key: list(values) for key, values in trainer.history.items()}
        log_file = Path(em.log_file)
        frozen, inline = None, False
        if manager is not None and self.writes.enabled:
            try:
                frozen = (
                    FrozenState(trainer.saved_model),
                    FrozenState(trainer.optimizer),
                    freeze(trainer._training_state()),
                )
            except Exception:  # state that cannot be deep-copied (an exotic tensor type): save it here, as before
                inline = True

        def job():
            if frozen is not None:
                manager.save_epoch_end(frozen[0], frozen[1], epoch, loss, accuracy, frozen[2])
            elif manager is not None:
                trainer.torchrun.collective_write(
                    lambda state: manager.save_epoch_end(
                        trainer.saved_model, trainer.optimizer, epoch, loss, accuracy, state
                    )
                )
            # Only now is the epoch complete: a failed save records the last saved epoch in
            # status.json, so a resume does not see progress that no checkpoint holds.
            self.committed_epoch = epoch
            for path, write in ((log_file, write_log), (log_file.with_name(METRICS_FILE), write_metrics_csv)):
                try:
                    if trainer.dist.is_main:
                        write(path, history)
                except OSError as exc:
                    raise write_error(path, exc, "write the training log") from None
            em.write_status("running", **status)

        self.writes.submit(job, inline=inline)
        if manager is not None:
            self.last_save = time.monotonic()

    def wait_for_writes(self) -> None:
        """Wait for the background writer; a failed write is raised here, unchanged, and
        the epochs it did not save are forgotten (the run stops at the last saved one)."""
        error = self.writes.wait_quietly()
        if error is not None:
            self.writes_failed()
            raise error

    def writes_failed(self) -> None:
        """A write failed: the run's progress is what the last committed epoch holds."""
        trainer, committed = self.trainer, self.committed_epoch
        trainer.epoch = min(trainer.epoch, committed)
        keep = [i for i, e in enumerate(trainer.history["epoch"]) if e <= committed]
        if len(keep) < len(trainer.history["epoch"]):
            trainer._history = {key: [values[i] for i in keep] for key, values in trainer.history.items()}

    def mid_epoch_save_due(self) -> bool:
        return bool(self.interval) and time.monotonic() - self.last_save >= self.interval

    def save_position(self, epoch: int) -> Optional[Path]:
        """Save the exact position inside ``epoch`` to latest (None if it cannot be recorded)."""
        trainer, manager = self.trainer, self.manager
        if manager is None or not trainer.can_save_position:
            return None
        metrics = trainer.torchrun.epoch_metrics(trainer.train_tracker)  # the same numbers on every rank
        if not math.isfinite(metrics["loss"]):
            trainer._diverged("training", epoch, metrics["loss"])
        self.wait_for_writes()
        path = trainer.torchrun.collective_write(
            lambda state: manager.save_checkpoint(
                trainer.saved_model,
                trainer.optimizer,
                trainer.epoch,
                metrics["loss"],
                metrics["accuracy"],
                manager.latest_path,
                state,
            )
        )
        self.last_save = time.monotonic()
        return path

    def save_start_if_unsaved(self) -> bool:
        """Stopped before the first step: a run that starts from loaded progress (a fork)
        but has no checkpoint of its own saves that start, so --resume can continue it (its
        parent may have moved on from the checkpoint it was forked from)."""
        trainer = self.trainer
        if self.manager is None or (trainer.epoch == 0 and trainer.global_step == 0):
            return False
        if trainer.dist.broadcast_object(bool(self.manager.candidates())):  # rank 0's view
            return False
        return self.save_position(trainer.epoch + 1) is not None

    def save_mid_epoch(self, epoch: int) -> None:
        """The periodic ``checkpoint_interval`` save."""
        if self.save_position(epoch) is None:
            self.interval = 0.0  # this loader cannot record its position
            return
        # The same progress fields as at an epoch end, so a reader never sees them vanish mid-epoch.
        trainer = self.trainer
        trainer.experiment_manager.write_status(
            "running",
            epoch=trainer.epoch,
            global_step=trainer.global_step,
            target_epochs=trainer._target_epochs,
            best_accuracy=trainer.best_accuracy,
            best_epoch=trainer.best_epoch,
            epochs_without_improvement=trainer.epochs_without_improvement,
            mid_epoch_checkpoint=True,
        )

    def interrupt_mid_epoch(self) -> None:
        trainer = self.trainer
        path = self.save_position(trainer.epoch + 1)
        if path is not None:
            trainer._log(
                f"Saved {path} at step {trainer.global_step} (epoch {trainer.epoch + 1}, "
                f"batch {trainer._train.position})."
            )
        else:
            trainer._log("This loader cannot record its position; the last end-of-epoch checkpoint is kept.")
        raise TrainingInterrupted(trainer.stop_request.signum, path is not None)

"""The Trainer's saves: the epoch-end save handed to the background writer (with the
log, metrics.csv and status that describe it), the wait for it, and the mid-epoch saves
(``checkpoint_interval``, a stop signal, a fork's unsaved start). ``Trainer`` inherits
them; ``background.py`` explains the writer and its guarantees.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Dict, Optional

from ..errors import write_error
from .background import FrozenState, freeze
from .history import METRICS_FILE, write_log, write_metrics_csv
from .interrupts import TrainingInterrupted


class SaveSteps:
    """The saving parts of ``Trainer`` (a mixin: it uses the Trainer's attributes
    ``checkpoint_manager``, ``experiment_manager``, ``_writes``, ``_history`` ...)."""

    def _commit_epoch(self, epoch: int, val_metrics: Dict[str, float], status: Dict[str, Any]) -> None:
        """Save the end of ``epoch`` and then record it (log, metrics.csv, status), as one
        job of the background writer: the training thread only copies the state.

        Under torchrun (or with ``background_writes=False``) the job runs here, the save
        being a collective step. The previous job has finished (``_run_epoch`` waited)."""
        manager, em = self.checkpoint_manager, self.experiment_manager
        loss, accuracy = val_metrics["loss"], val_metrics["accuracy"]
        history = {key: list(values) for key, values in self._history.items()}
        log_file = Path(em.log_file)
        frozen, inline = None, False
        if manager is not None and self._writes.enabled:
            try:
                frozen = (FrozenState(self.saved_model), FrozenState(self.optimizer), freeze(self._training_state()))
            except Exception:  # state that cannot be deep-copied (an exotic tensor type): save it here, as before
                inline = True

        def job():
            if frozen is not None:
                manager.save_epoch_end(frozen[0], frozen[1], epoch, loss, accuracy, frozen[2])
            elif manager is not None:
                self._collective_write(lambda state: manager.save_epoch_end(
                    self.saved_model, self.optimizer, epoch, loss, accuracy, state))
            # Only now is the epoch complete: a failed save records the last saved epoch in
            # status.json, so a resume does not see progress that no checkpoint holds.
            self._committed_epoch = epoch
            for path, write in ((log_file, write_log), (log_file.with_name(METRICS_FILE), write_metrics_csv)):
                try:
                    if self.dist.is_main:
                        write(path, history)
                except OSError as exc:
                    raise write_error(path, exc, "write the training log") from None
            em.write_status("running", **status)

        self._writes.submit(job, inline=inline)
        if manager is not None:
            self._last_save = time.monotonic()

    def _wait_for_writes(self) -> None:
        """Wait for the background writer; a failed write is raised here, unchanged, and
        the epochs it did not save are forgotten (the run stops at the last saved one)."""
        error = self._writes.wait_quietly()
        if error is not None:
            self._writes_failed()
            raise error

    def _writes_failed(self) -> None:
        """A write failed: the run's progress is what the last committed epoch holds."""
        self.epoch = min(self.epoch, self._committed_epoch)
        keep = [i for i, e in enumerate(self._history["epoch"]) if e <= self._committed_epoch]
        if len(keep) < len(self._history["epoch"]):
            self._history = {key: [values[i] for i in keep] for key, values in self._history.items()}

    def _save_position(self, epoch: int) -> Optional[Path]:
        """Save the exact position inside ``epoch`` to latest (None if it cannot be recorded)."""
        if self.checkpoint_manager is None or not hasattr(self.train_loader, "state_dict"):
            return None
        metrics = self._epoch_metrics(self.train_tracker)  # the same numbers on every rank
        if not math.isfinite(metrics["loss"]):
            self._diverged("training", epoch, metrics["loss"])
        self._wait_for_writes()
        path = self._collective_write(lambda state: self.checkpoint_manager.save_checkpoint(
            self.saved_model, self.optimizer, self.epoch, metrics["loss"], metrics["accuracy"],
            self.checkpoint_manager.latest_path, state,
        ))
        self._last_save = time.monotonic()
        return path

    def _save_start_if_unsaved(self) -> bool:
        """Stopped before the first step: a run that starts from loaded progress (a fork)
        but has no checkpoint of its own saves that start, so --resume can continue it (its
        parent may have moved on from the checkpoint it was forked from)."""
        if self.checkpoint_manager is None or (self.epoch == 0 and self.global_step == 0):
            return False
        if self.dist.broadcast_object(bool(self.checkpoint_manager.candidates())):  # rank 0's view
            return False
        return self._save_position(self.epoch + 1) is not None

    def _save_mid_epoch(self, epoch: int) -> None:
        """The periodic ``checkpoint_interval`` save."""
        if self._save_position(epoch) is None:
            self.checkpoint_interval = 0.0  # this loader cannot record its position
            return
        # The same progress fields as at an epoch end, so a reader never sees them vanish mid-epoch.
        self.experiment_manager.write_status(
            "running", epoch=self.epoch, global_step=self.global_step, target_epochs=self._target_epochs,
            best_accuracy=self.best_accuracy, best_epoch=self.best_epoch,
            epochs_without_improvement=self.epochs_without_improvement, mid_epoch_checkpoint=True,
        )

    def _interrupt_mid_epoch(self) -> None:
        path = self._save_position(self.epoch + 1)
        if path is not None:
            self._log(f"Saved {path} at step {self.global_step} (epoch {self.epoch + 1}, batch {self.train_loader.position}).")
        else:
            self._log("This loader cannot record its position; the last end-of-epoch checkpoint is kept.")
        raise TrainingInterrupted(self.stop_request.signum, path is not None)

"""The Trainer's records outside the checkpoints: the run's config (adopted for a Trainer
built in Python), the training curves, the status of how the run ended, and its messages.
The Trainer holds one ``RunRecords``; only rank 0 draws and prints.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Optional

import signal

from ..errors import ExptrainError, NonFiniteLossError, WriteError, write_error
from .interrupts import TrainingInterrupted
from .plots import plot_history, run_title
from .run_config import describe_run

if TYPE_CHECKING:  # only for annotations
    from .trainer import Trainer


class RunRecords:
    def __init__(self, trainer: "Trainer", plot_interval: float):
        self.trainer = trainer
        self.plot_interval = float(plot_interval)
        self.last_plot, self.plotted_epoch = float("-inf"), None

    def adopt_config(self, epochs: int) -> None:
        """A Trainer built in Python has no config: describe the run in the CLI's schema
        (or adopt the experiment's, when resuming one), write it if missing, and store it
        in every checkpoint, so ``train.py --resume`` can check and rebuild the run."""
        trainer, em = self.trainer, self.trainer.experiment_manager
        exists = Path(em.config_file).exists()
        if not trainer.config:
            try:
                config = em.load_config() if exists else describe_run(trainer, epochs)
            except ValueError:  # a damaged config.json: describe the run instead
                config = describe_run(trainer, epochs)
            config["epochs"] = max(int(epochs), int(config.get("epochs") or 0))
            # As config.json will hold it (tuples become lists), so that the copy in the
            # checkpoints and the file agree when train.py --resume compares them.
            trainer.config = json.loads(json.dumps(config))
        if not exists:
            em.save_config(trainer.config)

    def record_status(self, state: str, **details: Any) -> None:
        """Record how the run ended without masking the error being raised (the disk
        may be the very thing that failed)."""
        try:
            self.trainer.experiment_manager.write_status(state, epoch=self.trainer.epoch, **details)
        except (OSError, ValueError, WriteError) as exc:  # write_status raises WriteError on a full disk
            self.log(f"Warning: could not record status {state!r} ({exc}).")

    def plot_due(self) -> bool:
        return time.monotonic() - self.last_plot >= self.plot_interval

    def plot(self) -> None:
        trainer = self.trainer
        path = Path(trainer.experiment_manager.plot_file)
        try:
            if trainer.dist.is_main:
                plot_history(
                    trainer.history,
                    path,
                    title=run_title(trainer.experiment_manager.name, trainer.config),
                    best_epoch=trainer.best_epoch or None,
                    starts=trainer.starts,
                )
        except OSError as exc:
            raise write_error(path, exc, "write the training curves") from None
        self.last_plot, self.plotted_epoch = time.monotonic(), trainer.epoch

    def plot_if_stale(self, quiet: bool = False) -> None:
        """Redraw if the plot lags the history; ``quiet``: on the way out of an error,
        a failure to draw is only reported."""
        if self.trainer.history["epoch"] and self.plotted_epoch != self.trainer.epoch:
            try:
                self.plot()
            except Exception as exc:
                if not quiet:
                    raise
                self.log(f"Warning: could not redraw the training curves ({exc}).")

    def log(self, message: str) -> None:
        if self.trainer.dist.is_main:
            print(message, flush=True)

    def log_epoch(self, record: Dict[str, Any], epochs: int, speed: float, improved: bool) -> None:
        self.log(
            f"Epoch {record['epoch']}/{epochs}  train loss {record['train_loss']:.4f} acc {record['train_accuracy']:.2f}%  "
            f"val loss {record['val_loss']:.4f} acc {record['val_accuracy']:.2f}%  lr {record['learning_rate']:.2e}  "
            f"{record['epoch_time']:.1f}s ({speed:.0f} it/s)" + ("  *best" if improved else "")
        )

    def record_end(self, stopped_early: bool) -> None:
        """The run ended normally: the curves and the status say so."""
        trainer = self.trainer
        self.plot_if_stale()
        trainer.experiment_manager.write_status(
            "stopped_early" if stopped_early else "completed",
            epoch=trainer.epoch,
            global_step=trainer.global_step,
            best_accuracy=trainer.best_accuracy,
            best_epoch=trainer.best_epoch,
        )
        stop = trainer.stop_request
        if stop.requested:
            self.log(f"{signal.Signals(stop.signum).name} arrived after the last epoch was saved; the run is complete.")

    def record_failure(self, exc: BaseException) -> None:
        """The status of a run that ``exc`` stopped (never masking ``exc``)."""
        if isinstance(exc, TrainingInterrupted):
            self.plot_if_stale(quiet=True)
            self.record_status(
                "interrupted", global_step=self.trainer.global_step, signal=signal.Signals(exc.signum).name
            )
        elif isinstance(exc, NonFiniteLossError):
            self.plot_if_stale(quiet=True)
            self.record_status("failed", reason="non-finite loss", error=str(exc))
        else:
            self.record_status("failed", error=f"{type(exc).__name__}: {exc}")

    def divergence(self, what: str, epoch: int, loss: float) -> NonFiniteLossError:
        """The error for a non-finite ``what`` loss in ``epoch`` (nothing of it is saved)."""
        trainer, name = self.trainer, self.trainer.experiment_manager.name
        kept = (
            f"the last good checkpoint (epoch {trainer.epoch}) is kept; fork from it with a lower learning rate, "
            f"e.g. python train.py --fork {name} --lr <smaller>"
            if trainer.epoch > 0
            else "no epoch finished, so there is nothing to keep; start again with a lower learning rate"
        )
        return NonFiniteLossError(
            f"Training diverged: the {what} loss is {loss} in epoch {epoch} (by step {trainer.global_step}); {kept}."
        )

    def refuse_unsaved_state(self, reason: Optional[str]) -> None:
        """Refuse to train on from a state that was not saved (``reason``: why not)."""
        if reason is None:
            return
        epoch, name = self.trainer.epoch, self.trainer.experiment_manager.name
        raise ExptrainError(
            f"This Trainer stopped at epoch {epoch} of {name} because {reason}; its model and "
            f"optimizer have moved past what was saved, so it cannot continue. Resume from the saved checkpoints "
            f"instead: python train.py --resume {name} (or a new Trainer with ExperimentManager(resume_exp={name!r}))."
        )

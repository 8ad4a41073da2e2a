"""The Trainer's records outside the checkpoints: the run's config (adopted for a Trainer
built in Python), the training curves, the status of how the run ended, and its messages.
The Trainer holds one ``RunRecords``; only rank 0 draws and prints.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import WriteError, write_error
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
                plot_history(trainer.history, path, title=run_title(trainer.experiment_manager.name, trainer.config),
                             best_epoch=trainer.best_epoch or None, starts=trainer.starts)
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

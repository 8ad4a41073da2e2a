"""TensorBoard event files of a run (``--tensorboard``), in ``runs/expN/tensorboard/``.

Every scalar shares one x axis, the global step (``Trainer.global_step``: batches trained
so far): the training loss of every ``every``-th step, and at each epoch end, at the step
where the epoch ended, the epoch's losses, accuracies, learning rate and time and an
``epoch`` scalar (as Lightning logs them).

Continuous across a resume: the writer opens with ``purge_step`` one past the step the
run starts from, which writes TensorBoard's own restart marker (a ``SessionLog.START``);
a reader that purges orphaned data (TensorBoard itself, ``EventAccumulator`` by default)
then hides every event at that step or later that an earlier process wrote after its
last checkpoint, and the resumed run writes those steps again: no step appears twice.
A fork writes its own files in its own experiment, from the step it was forked at.
Each write is flushed to the operating system at once, so the events a checkpoint
covers are in the file before the checkpoint is (a kill loses none of them).

The ``tensorboard`` package is an optional extra, imported only when logging is on.
"""

from __future__ import annotations

import importlib
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Dict, Optional, Union

from ..config import RunConfig
from ..errors import ConfigError, write_error
from ..layout import TENSORBOARD_DIR

DEFAULT_EVERY = RunConfig.tensorboard_every
INSTALL_COMMAND = "pip install tensorboard==2.21.0"
STEP_LOSS_TAG = "train/batch_loss"
# The epoch record's keys (history.HISTORY_KEYS) and their tags.
EPOCH_TAGS = {
    "train_loss": "train/loss",
    "train_accuracy": "train/accuracy",
    "val_loss": "val/loss",
    "val_accuracy": "val/accuracy",
    "learning_rate": "learning_rate",
    "epoch_time": "epoch_time",
    "epoch": "epoch",
}


def require_tensorboard() -> None:
    """Check that TensorBoard logging can work (imports the package: call it only when on).

    Raises:
        ConfigError: the ``tensorboard`` package is missing or broken; the message gives
            the pip command.
    """
    try:
        importlib.import_module("tensorboard")
        importlib.import_module("torch.utils.tensorboard")  # checks tensorboard's version
    except Exception as exc:  # a missing package, or one that fails to import (protobuf mismatch)
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(
            f"--tensorboard needs the tensorboard package, which cannot be imported ({first_line}); "
            f"install it with {INSTALL_COMMAND}, or run without --tensorboard (--no-tensorboard on --resume)."
        ) from None


def check_tensorboard(config: RunConfig, overrides: Dict[str, Any], experiment_dir: Optional[Path] = None) -> None:
    """Early, before a run loads its data: its TensorBoard options can work. The package
    is imported here for a new run; a resume calls ``require_tensorboard`` later, once it
    knows the run is not finished (a finished run resumes with nothing to do, logging
    or not).

    Args:
        config: the resolved configuration.
        overrides: the options given (flags and ``--config`` file).
        experiment_dir: the experiment a resume reopens (None for a new run).

    Raises:
        ConfigError: ``tensorboard_every`` given while logging is off; the package is
            missing; the experiment's ``tensorboard`` entry is not a directory.
    """
    if "tensorboard_every" in overrides and not config.tensorboard:
        raise ConfigError(
            f"--tensorboard-every {overrides['tensorboard_every']!r} has no effect while TensorBoard "
            "logging is off; add --tensorboard (tensorboard: true in a --config file)."
        )
    if not config.tensorboard:
        return
    if experiment_dir is None:
        require_tensorboard()
    else:
        path = Path(experiment_dir) / TENSORBOARD_DIR
        if path.exists() and not path.is_dir():
            raise ConfigError(
                f"{path} is a file, not the directory of TensorBoard events; move it away and resume again."
            )


_QUIET_THREADS: "weakref.WeakSet[threading.Thread]" = weakref.WeakSet()


def _quiet_writer_thread(writer) -> None:
    """TensorBoard's writer thread hands a failed write (a full disk) on to the next
    ``flush``, where it becomes one ``WriteError`` line; the thread's own traceback,
    printed by ``threading.excepthook``, would only repeat it. Every other thread's
    exceptions still reach the hook as before."""
    worker = getattr(getattr(getattr(writer.file_writer, "event_writer", None), "_async_writer", None), "_worker", None)
    if not isinstance(worker, threading.Thread):
        return  # another tensorboard version: its traceback is printed, nothing is lost
    _QUIET_THREADS.add(worker)
    if getattr(threading.excepthook, "quiets_tensorboard_writers", False):
        return
    previous = threading.excepthook

    def excepthook(args) -> None:
        if args.thread not in _QUIET_THREADS or not isinstance(args.exc_value, Exception):
            previous(args)

    excepthook.quiets_tensorboard_writers = True
    threading.excepthook = excepthook


def _wait_for_a_later_second(log_dir: Path) -> None:
    """Readers take a run's event files in name order, which begins with the second a file
    was created (``events.out.tfevents.<10-digit time>.<host>.<pid>.<n>``); the restart
    marker only hides what was read before it. So a new file must not share its second
    with an existing one (a second ``train()`` in the same process within a second):
    wait, at most a second, until the clock has passed the newest. A newest time further
    ahead (a clock set back) is not waited for."""
    newest = -1
    for path in log_dir.glob("*tfevents*") if log_dir.is_dir() else ():
        stamp = path.name.split("tfevents.", 1)[-1][:10]
        if stamp.isdigit():
            newest = max(newest, int(stamp))
    remaining = newest + 1 - time.time()
    if 0 < remaining <= 1:
        time.sleep(remaining)


class TensorBoardLogger:
    """Writes a run's scalars as TensorBoard event files (see the module docstring).

    The Trainer calls ``open`` when ``train`` starts, ``log_step`` every ``every`` steps,
    ``log_epoch`` at each epoch end and ``close`` on every way out; only rank 0 of a
    torchrun job gets one.

    Args:
        log_dir: the directory of the event files (``ExperimentManager.tensorboard_dir``).
        every: log the training loss every this many steps (a positive integer).

    Raises:
        ValueError: ``every`` is not a positive integer.
    """

    def __init__(self, log_dir: Union[str, Path], every: int = DEFAULT_EVERY):
        self.log_dir = Path(log_dir)
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ConfigError(f"every must be a positive whole number of steps, e.g. {DEFAULT_EVERY}, got {every!r}.")
        self.every = every
        self._writer = None

    def open(self, step: int) -> None:
        """Start writing after ``step`` (the global step the run starts from): events an
        earlier process wrote at later steps are hidden, since this run writes them again.

        Raises:
            ConfigError: the ``tensorboard`` package is missing.
            WriteError: the directory or its event file cannot be created.
        """
        self.close()
        require_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        try:
            _wait_for_a_later_second(self.log_dir)
            self._writer = SummaryWriter(str(self.log_dir), purge_step=int(step) + 1)
            _quiet_writer_thread(self._writer)
        except OSError as exc:
            raise write_error(self.log_dir, exc, "write TensorBoard events to") from None

    def log_step(self, step: int, loss: Any) -> None:
        """Log the training loss of one step (a tensor is read back here, and only here).

        Raises:
            WriteError: the event file cannot be written.
        """
        value = loss if isinstance(loss, (int, float)) else loss.item()  # a tensor
        self._write({STEP_LOSS_TAG: value}, step)

    def log_epoch(self, step: int, record: Dict[str, Any]) -> None:
        """Log an epoch's record (``history.HISTORY_KEYS``) at ``step``, where it ended.

        Raises:
            WriteError: the event file cannot be written.
        """
        self._write({tag: record[key] for key, tag in EPOCH_TAGS.items() if key in record}, step)

    def close(self) -> Optional[str]:
        """Flush and close (idempotent). Never raises: on the way out of a failing run a
        second error must not hide the first; returns the problem, or None."""
        writer, self._writer = self._writer, None
        if writer is None:
            return None
        try:
            writer.close()
        except Exception as exc:  # noqa: BLE001 - reported by the caller, never raised
            return f"could not finish the TensorBoard events in {self.log_dir} ({exc})"
        return None

    def _write(self, scalars: Dict[str, Any], step: int) -> None:
        if self._writer is None:
            self.open(int(step) - 1)  # a Trainer driven without train(): start at this step
        try:
            for tag, value in scalars.items():
                self._writer.add_scalar(tag, float(value), int(step))
            self._writer.flush()  # to the OS: a kill after the next checkpoint loses nothing
        except OSError as exc:
            self.close()
            raise write_error(self.log_dir, exc, "write TensorBoard events to") from None

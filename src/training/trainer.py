"""Trainer: the training loop. It calls helpers and owns no files itself.

Per epoch: train, validate, step the scheduler, record history, redraw augmentations
(when given ``dataset``), save checkpoints, write the log and plot, check early stopping.
The checkpoint is the union of every stateful part's ``state_dict()``; restoring it with
``load_state_dict`` continues the run exactly (bit-identical on CPU), even mid-epoch.

SIGINT, SIGTERM and SIGHUP during ``train`` finish the current step, save a mid-epoch
checkpoint and raise ``TrainingInterrupted`` (the CLI exits with 128 + the signal number).
With ``checkpoint_interval`` seconds, ``latest_checkpoint.pt`` is also refreshed mid-epoch
(the same step-exact format), so a SIGKILL loses at most that much work.

A non-finite training or validation loss stops the run with ``NonFiniteLossError``. It is
detected where the metrics are read back anyway (the tracker's periodic flush, the end of
each epoch) and before every checkpoint write, so it costs no per-step host sync; nothing
non-finite is ever saved as best or latest.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn as nn

from ..errors import ExptrainError, NonFiniteLossError, WriteError, write_error
from ..utils.seed import capture_rng_state, restore_rng_state
from . import state_keys as keys
from .checkpoint import CheckpointManager, CheckpointSaveError
from .distributed import Distributed, PeerFailedError
from .early_stopping import EarlyStopping
from .background import BackgroundWrites
from .ema import ModelEMA
from .trainer_distributed import DistributedSteps
from .trainer_saves import SaveSteps
from .evaluation import evaluation_criterion, evaluation_forward
from .experiment import ExperimentManager
from .history import append_epoch, empty_history, read_log, record_start
from .run_config import describe_run
from .metrics import MetricsTracker
from .plots import plot_history, run_title
from .interrupts import StopRequest, TrainingInterrupted
from .precision import Precision
from .progress import ProgressBar
from .schedules import (
    LinearWarmup, check_schedule_plan, optimizer_steps_per_epoch, step_epoch_scheduler, steps_per_batch,
)
from .tb_logger import TensorBoardLogger


def loader_length(loader) -> Optional[int]:
    """``len(loader)``, or None for an unsized one (a DataLoader over an IterableDataset
    has ``__len__`` but raises TypeError)."""
    try:
        return len(loader)
    except TypeError:
        return None


class Trainer(SaveSteps, DistributedSteps):
    """See the module docstring. Extra keyword arguments beyond the specified ones:

    Args:
        config: the run configuration (a plain dict) stored in checkpoints.
        show_progress: draw a progress bar (default: only when stderr is a terminal).
        handle_signals: catch SIGINT/SIGTERM during ``train`` (main thread only).
        amp: mixed precision, ``"bf16"`` or ``"fp16"`` (fp16 uses a grad scaler).
        compile_model: run the forward pass through ``torch.compile``.
        channels_last: use the channels-last memory format for model and inputs.
        grad_accum_steps: batches per optimizer step (gradients are averaged).
        grad_clip: clip the gradient norm to this value (0 disables).
        plot_interval: redraw the curves at most every this many seconds, and always
            after the last epoch (0 redraws every epoch). Drawing costs ~0.1 s.
        checkpoint_interval: also refresh ``latest_checkpoint.pt`` mid-epoch at most
            every this many seconds (0 disables; needs a loader with ``state_dict``).
        eval_criterion: the validation loss (default: ``criterion``, without its label
            smoothing when it is a smoothed ``CrossEntropyLoss``).
        ema_decay: keep an exponential moving average of the weights with this decay
            (0 < decay < 1; 0 disables); it is what ``validate`` evaluates and what
            checkpoints hold as the model (see ``ema.py``).
        warmup_epochs: scale the learning rate linearly up over the optimizer steps of
            the first N epochs (see ``schedules.py``; needs a sized training loader).
        tta_flip: evaluate on each image and its mirror image (averaged logits); only
            for data whose images may be flipped horizontally.
        tensorboard: a ``TensorBoardLogger`` (``tb_logger.py``) for the training loss
            every ``tensorboard.every`` steps and each epoch's record; used on rank 0 only.
        distributed: the ranks of a torchrun job (default: joined from the environment;
            a single process otherwise). With several ranks the model is wrapped in
            ``DistributedDataParallel``, the built-in loaders are sharded, metrics are
            reduced, and only rank 0 writes files and prints (``distributed.py``).

    Raises:
        ValueError: an empty or missing validation (or training) loader, bad numbers.
    """

    def __init__(
        self,
        model: nn.Module,
        train_loader,
        val_loader,
        criterion: nn.Module,
        optimizer: torch.optim.Optimizer,
        device: torch.device,
        experiment_manager: ExperimentManager,
        checkpoint_manager: Optional[CheckpointManager] = None,
        scheduler: Optional[Any] = None,
        dataset: Optional[Any] = None,
        patience: int = 0,
        *,
        config: Optional[Dict[str, Any]] = None,
        show_progress: Optional[bool] = None,
        handle_signals: bool = True,
        amp: Optional[str] = None,
        compile_model: bool = False,
        channels_last: bool = False,
        grad_accum_steps: int = 1,
        grad_clip: float = 0.0,
        plot_interval: float = 10.0,
        checkpoint_interval: float = 300.0,
        eval_criterion: Optional[nn.Module] = None,
        ema_decay: float = 0.0,
        warmup_epochs: int = 0,
        tta_flip: bool = False,
        distributed: Optional[Distributed] = None,
        background_writes: bool = True,
        tensorboard: Optional[TensorBoardLogger] = None,
    ):
        for name, loader in (("train_loader", train_loader), ("val_loader", val_loader)):
            if loader is None:
                raise ValueError(f"{name} is None; the Trainer needs a {name.split('_')[0]}ing data loader.")
            if loader_length(loader) == 0:  # an unsized stream is checked when it is read
                raise ValueError(f"{name} is empty (0 batches); give it at least one sample.")
        if not isinstance(checkpoint_interval, (int, float)) or not checkpoint_interval >= 0 \
                or not math.isfinite(checkpoint_interval):
            raise ValueError(f"checkpoint_interval must be a non-negative number of seconds, got {checkpoint_interval!r}.")
        self.model = model
        self.device = torch.device(device)
        self.dist = distributed if distributed is not None else Distributed.from_environment(str(self.device))
        self.train_loader = self._shard(self._on_device(train_loader), whole_batches=False)
        self.val_loader = self._shard(self._on_device(val_loader), whole_batches=True)
        self.criterion = criterion
        self.optimizer = optimizer
        self.experiment_manager = experiment_manager
        self.checkpoint_manager = checkpoint_manager
        self.scheduler = scheduler
        self.dataset = dataset
        self.early_stopping = EarlyStopping(patience)
        if not isinstance(grad_accum_steps, int) or grad_accum_steps < 1:
            raise ValueError(f"grad_accum_steps must be a positive integer, got {grad_accum_steps!r}.")
        if not isinstance(grad_clip, (int, float)) or not grad_clip >= 0 or not math.isfinite(grad_clip):
            raise ValueError(f"grad_clip must be a finite number >= 0 (0 disables clipping), got {grad_clip!r}.")
        self.precision = Precision(amp, self.device)
        self.channels_last = channels_last
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        # The compiled wrapper shares the model's parameters; checkpoints use the model
        # itself, so their keys never carry torch.compile's "_orig_mod." prefix.
        self.parallel_model = self.model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index if self.device.index is not None else torch.cuda.current_device()] \
                if self.device.type == "cuda" else None
            self.parallel_model = DistributedDataParallel(self.model, device_ids=ids)
        self.forward_model = torch.compile(self.parallel_model) if compile_model else self.parallel_model
        self.eval_criterion = evaluation_criterion(criterion) if eval_criterion is None else eval_criterion
        self.ema = ModelEMA(self.model, ema_decay) if ema_decay else None  # after the memory-format change
        self.warmup = self._build_warmup(warmup_epochs, grad_accum_steps)
        self.warmup_epochs = warmup_epochs
        self.tta_flip = bool(tta_flip)
        self.grad_accum_steps = grad_accum_steps
        self.grad_clip = float(grad_clip)
        self.plot_interval = float(plot_interval)
        self.checkpoint_interval = float(checkpoint_interval)
        self._last_plot, self._plotted_epoch = float("-inf"), None
        self._last_save = time.monotonic()
        self._target_epochs: Optional[int] = None  # the epochs of the current train() call
        self.config = dict(config or {})
        self.show_progress = (sys.stderr.isatty() if show_progress is None else show_progress) and self.dist.is_main
        self._history = empty_history()
        self.starts: list = []  # where this run was resumed or forked (drawn on the curves)
        self.epoch = 0  # completed epochs
        self.global_step = 0
        self.train_tracker = MetricsTracker()
        self._mid_epoch = False  # the train tracker/loader hold a partial epoch
        self._epoch_lr: Optional[float] = None  # the learning rate at the start of the current epoch
        self.stop_request = StopRequest(self._log, enabled=handle_signals)
        # Epoch-end saves overlap the next epoch on a writer thread (not under torchrun,
        # where a save is a collective step of every rank).
        self._writes = BackgroundWrites(enabled=background_writes and not self.dist.enabled)
        self._committed_epoch = 0  # the newest epoch whose checkpoint and log are written
        self._unsaved_state: Optional[str] = None  # why train() cannot continue (a save failed, divergence)
        self.tensorboard = tensorboard if self.dist.is_main else None
        self._steps_since_agreement = 0

    def _on_device(self, loader):
        # The built-in loader moves its uint8 data once; other loaders are copied per batch.
        if hasattr(loader, "to_device"):
            loader.to_device(self.device)
        return loader

    # -- properties ------------------------------------------------------------------
    @property
    def history(self) -> Dict[str, list]:
        return self._history

    @property
    def best_accuracy(self) -> float:
        value = self.early_stopping.best_value
        return 0.0 if value is None else value

    @property
    def best_epoch(self) -> int:
        return self.early_stopping.best_epoch

    @property
    def epochs_without_improvement(self) -> int:
        return self.early_stopping.epochs_without_improvement

    # -- one epoch -------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> Tuple[Dict[str, float], float]:
        """Train one epoch (1-based number). Returns ``(metrics, iterations per second)``."""
        self.model.train()
        loader = self.train_loader
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        if not self._mid_epoch:
            self.train_tracker.reset()
        self._mid_epoch = True
        tracker, accumulate = self.train_tracker, self.grad_accum_steps
        total = loader_length(loader)
        batch = getattr(loader, "position", 0)  # > 0 when resuming inside this epoch
        start, steps = time.perf_counter(), 0
        progress = self._progress(loader, f"epoch {epoch}")
        sharded = self.dist.enabled
        log_every = self.tensorboard.every if self.tensorboard is not None else 0
        try:
            for images, labels in loader:
                images, labels = self._to_device(images, labels)
                step_ends = accumulate == 1 or (batch + 1) % accumulate == 0 or batch + 1 == total
                with self._sync_context(step_ends):
                    with self.precision.autocast():
                        outputs = self.forward_model(images)
                        loss = self.criterion(outputs, labels) if labels.shape[0] else outputs.sum() * 0.0
                    weight = getattr(loader, "batch_weight", 1.0)
                    scaled = loss * weight if weight != 1.0 else loss  # a short last global batch
                    self.precision.backward(scaled / accumulate if accumulate > 1 else scaled)
                tracker.update(loss, outputs, labels)
                batch += 1
                self.global_step += 1
                steps += 1
                if log_every and self.global_step % log_every == 0:
                    self.tensorboard.log_step(self.global_step, loss)
                if step_ends:
                    self._optimizer_step()
                    # Stop or save only between optimizer steps: accumulated gradients are not saved.
                    if sharded:
                        self._agree_mid_epoch(epoch, tracker)
                    else:
                        if self.stop_request.requested:
                            self._interrupt_mid_epoch()
                        if self.checkpoint_interval and time.monotonic() - self._last_save >= self.checkpoint_interval:
                            self._save_mid_epoch(epoch)
                if tracker.non_finite and not sharded:  # set when the tracker reads losses back (no extra sync)
                    self._diverged("training", epoch, tracker.get_metrics()["loss"])
                if progress is not None:
                    progress.step(tracker)
        except RuntimeError as exc:
            if sharded and not isinstance(exc, PeerFailedError):  # DDP's gradient all-reduce found a rank gone
                raise self.dist.peer_failed(exc) from None
            raise
        finally:
            if progress is not None:
                progress.close()
        metrics = self._epoch_metrics(tracker)
        if not metrics["total_samples"]:
            raise ValueError(f"train_loader yielded no samples in epoch {epoch}; give it at least one sample.")
        if not math.isfinite(metrics["loss"]):
            self._diverged("training", epoch, metrics["loss"])
        self._mid_epoch = False
        return metrics, steps / max(time.perf_counter() - start, 1e-9)

    def _epoch_metrics(self, tracker: MetricsTracker) -> Dict[str, float]:
        """The tracker's metrics, summed over all ranks (one reduction per epoch)."""
        metrics = tracker.get_metrics()
        if not self.dist.enabled:
            return metrics
        state = tracker.state_dict()
        loss_sum, correct, total = self.dist.sum_float64([state["loss_sum"], state["correct"], state["total_samples"]])
        total = int(total)
        return {"loss": loss_sum / total if total else 0.0,
                "accuracy": 100.0 * correct / total if total else 0.0, "total_samples": total}

    @torch.inference_mode()
    def validate(self) -> Tuple[Dict[str, float], float]:
        """Evaluate on the validation loader. Returns ``(metrics, iterations per second)``."""
        self.model.eval()
        if self.dist.enabled and hasattr(self.val_loader, "batch_index"):
            return self._validate_sharded()
        forward = evaluation_forward(self.forward_model if self.ema is None else self.ema.module, self.tta_flip)
        tracker = MetricsTracker()
        start, steps = time.perf_counter(), 0
        for images, labels in self.val_loader:
            images, labels = self._to_device(images, labels)
            with self.precision.autocast():
                outputs = forward(images)
                loss = self.eval_criterion(outputs, labels)
            tracker.update(loss, outputs, labels)
            steps += 1
        metrics = tracker.get_metrics()
        if not metrics["total_samples"]:  # never a silent 0% "accuracy"
            raise ValueError("val_loader yielded no samples; the Trainer needs validation data to measure accuracy.")
        return metrics, steps / max(time.perf_counter() - start, 1e-9)

    def _to_device(self, images: torch.Tensor, labels: torch.Tensor):
        images = images.to(self.device, non_blocking=True)
        if self.channels_last and images.dim() == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, labels.to(self.device, non_blocking=True)

    def _optimizer_step(self) -> None:
        if self.grad_clip:
            self.precision.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        if self.warmup is not None:
            with self.warmup.applied(self.optimizer):
                self.precision.step(self.optimizer)
        else:
            self.precision.step(self.optimizer)
        if self.ema is not None:
            self.ema.update(self.model)
        if steps_per_batch(self.scheduler):
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def _build_warmup(self, warmup_epochs: int, grad_accum_steps: int) -> Optional[LinearWarmup]:
        if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, int) or warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be an integer >= 0, got {warmup_epochs!r}.")
        if not warmup_epochs:
            return None
        steps = optimizer_steps_per_epoch(loader_length(self.train_loader), grad_accum_steps)
        if steps is None:
            raise ValueError("warmup_epochs needs a training loader with a length (to count the steps of an epoch).")
        return LinearWarmup(warmup_epochs * steps)

    @property
    def saved_model(self) -> nn.Module:
        """The model checkpoints hold: the weight average with ``ema_decay``, else ``model``."""
        return self.model if self.ema is None else self.ema.module

    # -- the run ---------------------------------------------------------------------
    def train(self, epochs: int, start_epoch: int = 0) -> Dict[str, Any]:
        """Train up to epoch ``epochs`` (a total), starting after ``start_epoch``.

        ``start_epoch`` defaults to the epochs already completed (after a resume).
        Returns the documented results dict.

        Raises:
            TrainingInterrupted: a signal stopped the run (state saved when possible).
            NonFiniteLossError: the loss became NaN or infinite (last good checkpoints kept).
            CheckpointSaveError, WriteError: a file could not be written.
        """
        if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs <= 0:
            raise ValueError(f"epochs must be a positive integer, got {epochs!r}.")
        if self._unsaved_state is not None:
            name = getattr(self.experiment_manager, "name", "the experiment")
            raise ExptrainError(
                f"This Trainer stopped at epoch {self.epoch} of {name} because {self._unsaved_state}; its model and "
                f"optimizer have moved past what was saved, so it cannot continue. Resume from the saved checkpoints "
                f"instead: python train.py --resume {name} (or a new Trainer with ExperimentManager(resume_exp={name!r})).")
        start_epoch = max(int(start_epoch), self.epoch)
        self.epoch = self._committed_epoch = start_epoch
        em = self.experiment_manager
        stopped_early, started = False, time.perf_counter()
        self._last_plot = self._last_save = time.monotonic()  # first redraw/save after their intervals
        if hasattr(em, "reacquire"):
            em.reacquire()  # released when a previous train() ended
        try:
            with self.stop_request:  # signals are noted until the outcome is recorded
                try:
                    stopped_early = self._run_epochs(start_epoch, epochs)
                    self._plot_if_stale()
                    em.write_status("stopped_early" if stopped_early else "completed", epoch=self.epoch,
                                    global_step=self.global_step, best_accuracy=self.best_accuracy, best_epoch=self.best_epoch)
                except TrainingInterrupted as exc:
                    self._plot_if_stale(quiet=True)
                    self._record_status("interrupted", global_step=self.global_step, signal=signal.Signals(exc.signum).name)
                    raise
                except NonFiniteLossError as exc:
                    self._plot_if_stale(quiet=True)
                    self._record_status("failed", reason="non-finite loss", error=str(exc))
                    raise
                except BaseException as exc:
                    if self._writes.wait_quietly() is not None:  # a failed write under a second interrupt
                        self._writes_failed()
                    self._record_status("failed", error=f"{type(exc).__name__}: {exc}")
                    raise
                if self.stop_request.requested:
                    self._log(f"{signal.Signals(self.stop_request.signum).name} arrived after the last epoch was saved; "
                              "the run is complete.")
        finally:
            problem = self.tensorboard.close() if self.tensorboard is not None else None
            if problem:
                self._log(f"Warning: {problem}.")
            self._writes.wait_quietly()  # (already waited for; never release the lock mid-write)
            if hasattr(em, "release"):
                em.release()  # a notebook's finished run does not block train.py --resume
        training_time = time.perf_counter() - started
        return {
            "epochs_trained": self.epoch,
            "best_accuracy": self.best_accuracy,
            "training_time": training_time,
            "history": self.history,
            "experiment_dir": em.experiment_dir,
            "stopped_early": stopped_early,
            "best_epoch": self.best_epoch,
        }

    def _run_epochs(self, start_epoch: int, epochs: int) -> bool:
        """The epochs of ``train``; returns True when early stopping ended them. Returns
        (or raises) only once the background writer is idle; a failed write is raised in
        place of whatever else stopped the run, since the run ends at its last saved epoch."""
        em = self.experiment_manager
        try:
            self._adopt_config(epochs)
            self._check_schedule_plan(epochs)
            self._target_epochs = epochs
            em.write_status("running", epoch=self.epoch, global_step=self.global_step, target_epochs=epochs)
            signum = self._agree_on_stop()
            if signum:
                raise TrainingInterrupted(
                    signum, saved=self._save_start_if_unsaved(),
                    message=f"Interrupted by {signal.Signals(signum).name} before training "
                            f"started; {em.name} is unchanged at epoch {self.epoch}, resume to continue.")
            if self.tensorboard is not None:  # hides what a killed process logged after this step
                self.tensorboard.open(self.global_step)
            stopped_early = False
            for epoch in range(start_epoch + 1, epochs + 1):
                stopped_early = self._run_epoch(epoch, epochs)
                signum = self._agree_on_stop()
                if signum and epoch < epochs and not stopped_early:
                    self._wait_for_writes()
                    raise TrainingInterrupted(signum, saved=self.checkpoint_manager is not None)
                if stopped_early:
                    self._log(f"Early stopping: no improvement for {self.early_stopping.patience} epochs "
                              f"(best {self.best_accuracy:.2f}% at epoch {self.best_epoch}).")
                    break
            self._wait_for_writes()
            return stopped_early
        except BaseException as exc:
            pending = self._writes.wait_quietly()
            failed = pending if pending is not None else exc
            if pending is not None or isinstance(failed, WriteError):  # an epoch's save failed
                self._writes_failed()
            if isinstance(failed, (WriteError, NonFiniteLossError)):  # the state in memory was not saved
                self._unsaved_state = ("training diverged" if isinstance(failed, NonFiniteLossError)
                                       else "a checkpoint could not be written" if isinstance(failed, CheckpointSaveError)
                                       else "a file of the run could not be written")
            if pending is not None:
                raise pending from exc
            raise

    def _adopt_config(self, epochs: int) -> None:
        """A Trainer built in Python has no config: describe the run in the CLI's schema
        (or adopt the experiment's, when resuming one), write it if missing, and store it
        in every checkpoint, so ``train.py --resume`` can check and rebuild the run."""
        em = self.experiment_manager
        exists = Path(em.config_file).exists()
        if not self.config:
            try:
                self.config = em.load_config() if exists else describe_run(self, epochs)
            except ValueError:  # a damaged config.json: describe the run instead
                self.config = describe_run(self, epochs)
            self.config["epochs"] = max(int(epochs), int(self.config.get("epochs") or 0))
            # As config.json will hold it (tuples become lists), so that the copy in the
            # checkpoints and the file agree when train.py --resume compares them.
            self.config = json.loads(json.dumps(self.config))
        if not exists:
            em.save_config(self.config)

    def _record_status(self, state: str, **details: Any) -> None:
        """Record how the run ended without masking the error being raised (the disk
        may be the very thing that failed)."""
        try:
            self.experiment_manager.write_status(state, epoch=self.epoch, **details)
        except (OSError, ValueError, WriteError) as exc:  # write_status raises WriteError on a full disk
            self._log(f"Warning: could not record status {state!r} ({exc}).")

    def _diverged(self, what: str, epoch: int, loss: float) -> None:
        """Stop: the ``what`` loss of ``epoch`` is not finite. Nothing of this epoch is saved."""
        name = getattr(self.experiment_manager, "name", "the experiment")
        kept = (f"the last good checkpoint (epoch {self.epoch}) is kept; fork from it with a lower learning rate, "
                f"e.g. python train.py --fork {name} --lr <smaller>" if self.epoch > 0 else
                "no epoch finished, so there is nothing to keep; start again with a lower learning rate")
        raise NonFiniteLossError(
            f"Training diverged: the {what} loss is {loss} in epoch {epoch} (by step {self.global_step}); {kept}."
        )

    def _run_epoch(self, epoch: int, epochs: int) -> bool:
        """One full epoch and its bookkeeping; returns True when early stopping fires."""
        started = time.perf_counter()
        learning_rate = self._epoch_learning_rate()
        train_metrics, train_speed = self.train_epoch(epoch)
        val_metrics, _ = self.validate()
        self._wait_for_writes()  # the previous epoch's save: its error stops the run here
        if not math.isfinite(val_metrics["loss"]):
            self._diverged("validation", epoch, val_metrics["loss"])
        self._step_scheduler(val_metrics)
        improved = self.early_stopping.step(val_metrics["accuracy"], epoch)
        if self.dataset is not None:
            self.dataset.reapply_transforms(epoch)
        record = {
            "epoch": epoch,
            "train_loss": train_metrics["loss"], "train_accuracy": train_metrics["accuracy"],
            "val_loss": val_metrics["loss"], "val_accuracy": val_metrics["accuracy"],
            "learning_rate": learning_rate, "epoch_time": time.perf_counter() - started,
        }
        append_epoch(self._history, record)
        if self.tensorboard is not None:  # before the checkpoint, which a resume would not log again
            self.tensorboard.log_epoch(self.global_step, record)
        self._commit_epoch(epoch, val_metrics, dict(
            epoch=epoch, global_step=self.global_step, target_epochs=epochs,
            best_accuracy=self.best_accuracy, best_epoch=self.best_epoch,
            epochs_without_improvement=self.epochs_without_improvement, last_epoch_time=record["epoch_time"],
        ))
        # The training thread moves on; the epoch counts as saved unless the write fails
        # (then _writes_failed sets it back to the last epoch a checkpoint holds).
        self.epoch = epoch
        if time.monotonic() - self._last_plot >= self.plot_interval:
            self._wait_for_writes()  # the curves never show an epoch before its checkpoint is committed
            self._plot()
        self._log(
            f"Epoch {epoch}/{epochs}  train loss {record['train_loss']:.4f} acc {record['train_accuracy']:.2f}%  "
            f"val loss {record['val_loss']:.4f} acc {record['val_accuracy']:.2f}%  lr {learning_rate:.2e}  "
            f"{record['epoch_time']:.1f}s ({train_speed:.0f} it/s)" + ("  *best" if improved else "")
        )
        return self.early_stopping.should_stop

    def _plot(self) -> None:
        path = Path(self.experiment_manager.plot_file)
        try:
            if self.dist.is_main:
                plot_history(self._history, path, title=run_title(getattr(self.experiment_manager, "name", None),
                                                                  self.config),
                             best_epoch=self.best_epoch or None, starts=self.starts)
        except OSError as exc:
            raise write_error(path, exc, "write the training curves") from None
        self._last_plot, self._plotted_epoch = time.monotonic(), self.epoch

    def _plot_if_stale(self, quiet: bool = False) -> None:
        """Redraw if the plot lags the history; ``quiet``: on the way out of an error,
        a failure to draw is only reported."""
        if self._history["epoch"] and self._plotted_epoch != self.epoch:
            try:
                self._plot()
            except Exception as exc:
                if not quiet:
                    raise
                self._log(f"Warning: could not redraw the training curves ({exc}).")

    def _epoch_learning_rate(self) -> float:
        """The rate logged for an epoch: the one at its start (a per-step schedule moves it
        within the epoch), also for an epoch resumed mid-way (it is in the checkpoint)."""
        if not (self._mid_epoch and self._epoch_lr is not None):
            self._epoch_lr = self.optimizer.param_groups[0]["lr"]
        return self._epoch_lr

    def remaining_optimizer_steps(self, epochs: int) -> Optional[int]:
        """Optimizer steps from the current position (inside an epoch after a mid-epoch
        resume) to the end of epoch ``epochs``; None for an unsized training loader."""
        batches = loader_length(self.train_loader)
        steps = optimizer_steps_per_epoch(batches, self.grad_accum_steps)
        if steps is None:
            return None
        position = getattr(self.train_loader, "position", 0) if self._mid_epoch else 0
        # Whole accumulations done (a fork may change --grad-accum: a partial one is redone);
        # at the epoch's end the last, partial accumulation has stepped too.
        done = steps if position >= batches else position // self.grad_accum_steps
        return (epochs - self.epoch) * steps - done

    def _check_schedule_plan(self, epochs: int) -> None:
        needed = self.remaining_optimizer_steps(epochs)
        if needed is not None:
            check_schedule_plan(self.scheduler, needed, epochs, getattr(self.experiment_manager, "name", "the experiment"))

    def _step_scheduler(self, val_metrics: Dict[str, float]) -> None:
        step_epoch_scheduler(self.scheduler, val_metrics)  # the metric, if any, from its registry entry

    # -- state -----------------------------------------------------------------------
    def _training_state(self) -> Dict[str, Any]:
        """Everything but model and optimizer (which CheckpointManager adds). Under
        torchrun every rank's RNG and partial metrics are gathered (a collective step:
        call it on every rank)."""
        loader_state = self.train_loader.state_dict() if hasattr(self.train_loader, "state_dict") else None
        ranks = None
        if self.dist.enabled:
            ranks = self.dist.gather_object({keys.RNG: capture_rng_state(),
                                             keys.TRAIN_TRACKER: self.train_tracker.state_dict()})
        return {
            keys.WORLD_SIZE: self.dist.world_size,
            keys.RANKS: ranks,
            keys.GLOBAL_STEP: self.global_step,
            keys.MID_EPOCH: self._mid_epoch,
            keys.TRAIN_TRACKER: self.train_tracker.state_dict(),
            keys.TRAIN_LOADER: loader_state,
            keys.DATASET: self.dataset.state_dict() if self.dataset is not None else None,
            keys.SCHEDULER: self.scheduler.state_dict() if self.scheduler is not None else None,
            keys.SCALER: self.precision.state_dict(),
            keys.EMA: self.ema.state_dict(self.model) if self.ema is not None else None,
            keys.WARMUP: self.warmup.state_dict() if self.warmup is not None else None,
            keys.EPOCH_LEARNING_RATE: self._epoch_lr if self._mid_epoch else None,
            keys.EARLY_STOPPING: self.early_stopping.state_dict(),
            keys.CHECKPOINT_MANAGER: self.checkpoint_manager.state_dict() if self.checkpoint_manager else None,
            keys.HISTORY: {k: list(v) for k, v in self._history.items()},
            keys.STARTS: [dict(s) for s in self.starts],
            keys.RNG: capture_rng_state(),
            keys.CONFIG: self.config,
        }

    def state_dict(self) -> Dict[str, Any]:
        """The complete training state, as stored in a checkpoint."""
        state = self._training_state()
        state.update({
            keys.EPOCH: self.epoch,
            keys.MODEL: self.saved_model.state_dict(),
            keys.OPTIMIZER: self.optimizer.state_dict(),
            keys.MODEL_CONFIG: getattr(self.model, "model_config", None),
        })
        return state

    def load_state_dict(self, state: Dict[str, Any], restore_optimizer: bool = True,
                        start_kind: Optional[str] = "resume") -> None:
        """Continue from a checkpoint dict: model, optimizer, scheduler, early stopping,
        history, RNG, data position and augmentation draw. A checkpoint with progress is
        recorded in ``starts`` as a ``start_kind`` point ("resume", "fork"; None: not)."""
        self.model.load_state_dict(state[keys.MODEL])
        if self.ema is not None:  # the checkpoint's model is the average; the trained weights come back
            self.ema.load_state_dict(state.get(keys.EMA), self.model)
        if self.warmup is not None:
            self.warmup.load_state_dict(state.get(keys.WARMUP))
        if restore_optimizer and state.get(keys.OPTIMIZER):
            self.optimizer.load_state_dict(state[keys.OPTIMIZER])
        if self.scheduler is not None and state.get(keys.SCHEDULER):
            self.scheduler.load_state_dict(state[keys.SCHEDULER])
        self.precision.load_state_dict(state.get(keys.SCALER))
        if state.get(keys.EARLY_STOPPING):
            self.early_stopping.load_state_dict(state[keys.EARLY_STOPPING])
        if self.checkpoint_manager is not None and state.get(keys.CHECKPOINT_MANAGER):
            self.checkpoint_manager.load_state_dict(state[keys.CHECKPOINT_MANAGER])
        if state.get(keys.HISTORY):
            self._history = {k: list(v) for k, v in state[keys.HISTORY].items()}
        if self.dataset is not None and state.get(keys.DATASET):
            self.dataset.load_state_dict(state[keys.DATASET])
        if state.get(keys.TRAIN_LOADER) and hasattr(self.train_loader, "load_state_dict"):
            self.train_loader.load_state_dict(state[keys.TRAIN_LOADER])
        self._mid_epoch = bool(state.get(keys.MID_EPOCH)) and state.get(keys.TRAIN_LOADER) is not None
        ranks = state.get(keys.RANKS)
        own = ranks[self.dist.rank] if ranks and len(ranks) == self.dist.world_size else None
        if self._mid_epoch:
            self.train_tracker.load_state_dict((own or state)[keys.TRAIN_TRACKER])
            self._epoch_lr = state.get(keys.EPOCH_LEARNING_RATE)
        if (own or state).get(keys.RNG):
            restore_rng_state((own or state)[keys.RNG])
        self.epoch = int(state.get(keys.EPOCH, 0))
        self.global_step = int(state.get(keys.GLOBAL_STEP, 0))
        self.starts = [dict(s) for s in state.get(keys.STARTS) or [] if isinstance(s, dict)]
        if start_kind is not None and (self.epoch or self.global_step):
            record_start(self.starts, start_kind, self.epoch, self.global_step, self._mid_epoch)

    def load_history_from_log(self) -> int:
        """Rebuild ``history`` from the experiment's log file, and with it the best
        validation accuracy, its epoch and the epochs without improvement (so a resume
        through the Python API keeps its best model and its patience). Returns the last
        epoch (0 if none), which also becomes ``self.epoch``.

        Raises:
            ValueError: a damaged line in the middle of the log (named).
        """
        self._history = read_log(Path(self.experiment_manager.log_file))
        stopper = EarlyStopping(self.early_stopping.patience, self.early_stopping.mode, self.early_stopping.min_delta)
        for epoch, accuracy in zip(self._history["epoch"], self._history["val_accuracy"]):
            stopper.step(accuracy, epoch)
        self.early_stopping = stopper
        last = self._history["epoch"][-1] if self._history["epoch"] else 0
        self.epoch = max(self.epoch, int(last))
        return last

    # -- mid-epoch saves -------------------------------------------------------------
    # -- output ----------------------------------------------------------------------
    def _progress(self, loader, description: str):
        return ProgressBar(loader, description) if self.show_progress else None

    def _log(self, message: str) -> None:
        if getattr(self, "dist", None) is None or self.dist.is_main:
            print(message, flush=True)

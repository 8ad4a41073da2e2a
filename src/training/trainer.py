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

Helpers are held objects: ``saver`` (checkpoints, background writer), ``torchrun``,
``records`` (config, curves, status), ``precision``, ``ema``, ``warmup``, ``early_stopping``;
the loaders are ``ResumableLoader``s (``protocols.py``), adapted once when it is built.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn as nn

from ..errors import ConfigError, NonFiniteLossError, WriteError
from . import state_keys as keys
from .checkpoint import CheckpointManager
from .distributed import Distributed, PeerFailedError
from .early_stopping import EarlyStopping
from .ema import ModelEMA
from .evaluation import evaluation_criterion, evaluation_forward
from .history import append_epoch, empty_history
from .interrupts import StopRequest, TrainingInterrupted
from .metrics import MetricsTracker
from .precision import Precision
from .progress import ProgressBar
from .protocols import BatchIndexedLoader, ExperimentLike, loader_length, model_config, records_position, unwrap
from .schedules import check_schedule_plan, optimizer_steps_per_epoch, step_epoch_scheduler, steps_per_batch
from .trainer_build import build_models, build_warmup, prepare_loader
from .trainer_distributed import TorchrunSteps
from .trainer_options import TrainerOptions
from .trainer_records import RunRecords
from .trainer_saves import Saver
from .trainer_state import history_from_log, load_training_state, training_state, unsaved_reason


class Trainer:
    """See the module docstring. The 11 arguments SPEC.md specifies, then ``options`` (a
    ``TrainerOptions``, whose fields are also accepted as keyword arguments).

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
        experiment_manager: ExperimentLike,
        checkpoint_manager: Optional[CheckpointManager] = None,
        scheduler: Optional[Any] = None,
        dataset: Optional[Any] = None,
        patience: int = 0,
        *,
        options: Optional[TrainerOptions] = None,
        **keywords: Any,
    ):
        for name, loader in (("train_loader", train_loader), ("val_loader", val_loader)):
            if loader is None:
                raise ConfigError(f"{name} is None; the Trainer needs a {name.split('_')[0]}ing data loader.")
            if loader_length(loader) == 0:  # an unsized stream is checked when it is read
                raise ConfigError(f"{name} is empty (0 batches); give it at least one sample.")
        opts = TrainerOptions.from_keywords(options, keywords)
        opts.validate()
        self.options = opts
        self.model, self.criterion, self.optimizer, self.scheduler = model, criterion, optimizer, scheduler
        self.device = torch.device(device)
        self.dist = opts.distributed if opts.distributed is not None else Distributed.from_environment(str(self.device))
        self._train = prepare_loader(train_loader, self.device, self.dist, whole_batches=False)
        self._val = prepare_loader(val_loader, self.device, self.dist, whole_batches=True)
        self.experiment_manager = experiment_manager
        self.dataset = dataset
        self.early_stopping = EarlyStopping(patience)
        self.precision = Precision(opts.amp, self.device)
        self.channels_last = opts.channels_last
        self.parallel_model, self.forward_model = build_models(model, self.device, self.dist, opts)
        self.eval_criterion = evaluation_criterion(criterion) if opts.eval_criterion is None else opts.eval_criterion
        self.ema = ModelEMA(self.model, opts.ema_decay) if opts.ema_decay else None  # after the memory-format change
        self.warmup = build_warmup(self._train, opts.warmup_epochs, opts.grad_accum_steps)
        self.warmup_epochs, self.tta_flip = opts.warmup_epochs, bool(opts.tta_flip)
        self.grad_accum_steps, self.grad_clip = opts.grad_accum_steps, float(opts.grad_clip)
        self._target_epochs: Optional[int] = None  # the epochs of the current train() call
        self.config = dict(opts.config or {})
        self.show_progress = (
            sys.stderr.isatty() if opts.show_progress is None else opts.show_progress
        ) and self.dist.is_main
        self._history = empty_history()
        self.starts: list = []  # where this run was resumed or forked (drawn on the curves)
        self.epoch, self.global_step = 0, 0  # completed epochs, batches trained
        self.train_tracker = MetricsTracker()
        self._mid_epoch = False  # the train tracker/loader hold a partial epoch
        self._epoch_lr: Optional[float] = None  # the learning rate at the start of the current epoch
        self.stop_request = StopRequest(self._log, enabled=opts.handle_signals)
        self.torchrun = TorchrunSteps(self, self.dist)
        self.saver = Saver(self, checkpoint_manager, opts.checkpoint_interval, opts.background_writes)
        self.records = RunRecords(self, opts.plot_interval)
        self._unsaved_state: Optional[str] = None  # why train() cannot continue (a save failed, divergence)
        self.tensorboard = opts.tensorboard if self.dist.is_main else None

    # -- properties ------------------------------------------------------------------
    train_loader = property(lambda self: unwrap(self._train), doc="The training loader given (or its shard).")
    val_loader = property(lambda self: unwrap(self._val), doc="The validation loader given (or its shard).")
    history = property(lambda self: self._history)
    checkpoint_manager = property(lambda self: self.saver.manager)
    checkpoint_interval = property(lambda self: self.saver.interval)
    can_save_position = property(lambda self: records_position(self._train))
    best_epoch = property(lambda self: self.early_stopping.best_epoch)
    epochs_without_improvement = property(lambda self: self.early_stopping.epochs_without_improvement)

    @property
    def best_accuracy(self) -> float:
        value = self.early_stopping.best_value
        return 0.0 if value is None else value

    @property
    def saved_model(self) -> nn.Module:
        """The model checkpoints hold: the weight average with ``ema_decay``, else ``model``."""
        return self.model if self.ema is None else self.ema.module

    # -- one epoch -------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> Tuple[Dict[str, float], float]:
        """Train one epoch (1-based number). Returns ``(metrics, iterations per second)``."""
        self.model.train()
        loader, tracker, accumulate = self._train, self.train_tracker, self.grad_accum_steps
        loader.set_epoch(epoch)
        if not self._mid_epoch:
            tracker.reset()
        self._mid_epoch = True
        total, batch = loader_length(loader), loader.position  # position > 0 when resuming inside this epoch
        start, steps, sharded = time.perf_counter(), 0, self.dist.enabled
        progress = ProgressBar(loader, f"epoch {epoch}") if self.show_progress else None
        log_every = self.tensorboard.every if self.tensorboard is not None else 0
        try:
            for images, labels in loader:
                images, labels = self._to_device(images, labels)
                step_ends = accumulate == 1 or (batch + 1) % accumulate == 0 or batch + 1 == total
                with self.torchrun.sync_context(step_ends):
                    with self.precision.autocast():
                        outputs = self.forward_model(images)
                        loss = self.criterion(outputs, labels) if labels.shape[0] else outputs.sum() * 0.0
                    weight = loader.batch_weight
                    scaled = loss * weight if weight != 1.0 else loss  # a short last global batch
                    self.precision.backward(scaled / accumulate if accumulate > 1 else scaled)
                tracker.update(loss, outputs, labels)
                batch, steps, self.global_step = batch + 1, steps + 1, self.global_step + 1
                if log_every and self.global_step % log_every == 0:
                    self.tensorboard.log_step(self.global_step, loss)
                if step_ends:
                    self._optimizer_step()
                    self.torchrun.between_steps(epoch, tracker)
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
        metrics = self.torchrun.epoch_metrics(tracker)
        if not metrics["total_samples"]:
            raise ConfigError(f"train_loader yielded no samples in epoch {epoch}; give it at least one sample.")
        if not math.isfinite(metrics["loss"]):
            self._diverged("training", epoch, metrics["loss"])
        self._mid_epoch = False
        return metrics, steps / max(time.perf_counter() - start, 1e-9)

    @torch.inference_mode()
    def validate(self) -> Tuple[Dict[str, float], float]:
        """Evaluate on the validation loader. Returns ``(metrics, iterations per second)``."""
        self.model.eval()
        if self.dist.enabled and isinstance(self._val, BatchIndexedLoader):
            return self.torchrun.validate_sharded()
        forward = evaluation_forward(self.forward_model if self.ema is None else self.ema.module, self.tta_flip)
        tracker = MetricsTracker()
        start, steps = time.perf_counter(), 0
        for images, labels in self._val:
            images, labels = self._to_device(images, labels)
            with self.precision.autocast():
                outputs = forward(images)
                loss = self.eval_criterion(outputs, labels)
            tracker.update(loss, outputs, labels)
            steps += 1
        metrics = tracker.get_metrics()
        if not metrics["total_samples"]:  # never a silent 0% "accuracy"
            raise ConfigError("val_loader yielded no samples; the Trainer needs validation data to measure accuracy.")
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
            raise ConfigError(f"epochs must be a positive integer, got {epochs!r}.")
        self.records.refuse_unsaved_state(self._unsaved_state)
        start_epoch = max(int(start_epoch), self.epoch)
        self.epoch = self.saver.committed_epoch = start_epoch
        em, records = self.experiment_manager, self.records
        stopped_early, started = False, time.perf_counter()
        records.last_plot = self.saver.last_save = time.monotonic()  # first redraw/save after their intervals
        em.reacquire()  # released when a previous train() ended
        try:
            with self.stop_request:  # signals are noted until the outcome is recorded
                try:
                    stopped_early = self._run_epochs(start_epoch, epochs)
                    records.record_end(stopped_early)
                except BaseException as exc:
                    generic = not isinstance(exc, (TrainingInterrupted, NonFiniteLossError))
                    if (
                        generic and self.saver.writes.wait_quietly() is not None
                    ):  # a failed write under a second interrupt
                        self.saver.writes_failed()
                    records.record_failure(exc)
                    raise
        finally:
            problem = self.tensorboard.close() if self.tensorboard is not None else None
            if problem:
                self._log(f"Warning: {problem}.")
            self.saver.writes.wait_quietly()  # (already waited for; never release the lock mid-write)
            em.release()  # a notebook's finished run does not block train.py --resume
        return {
            "epochs_trained": self.epoch,
            "best_accuracy": self.best_accuracy,
            "training_time": time.perf_counter() - started,
            "history": self.history,
            "experiment_dir": em.experiment_dir,
            "stopped_early": stopped_early,
            "best_epoch": self.best_epoch,
        }

    def _run_epochs(self, start_epoch: int, epochs: int) -> bool:
        """The epochs of ``train``; returns True when early stopping ended them. Returns
        (or raises) only once the background writer is idle; a failed write is raised in
        place of whatever else stopped the run, since the run ends at its last saved epoch."""
        em, saver = self.experiment_manager, self.saver
        try:
            self.records.adopt_config(epochs)
            needed = self.remaining_optimizer_steps(epochs)
            if needed is not None:
                check_schedule_plan(self.scheduler, needed, epochs, em.name)
            self._target_epochs = epochs
            em.write_status("running", epoch=self.epoch, global_step=self.global_step, target_epochs=epochs)
            signum = self.torchrun.agree_on_stop()
            if signum:
                raise TrainingInterrupted(
                    signum,
                    saved=saver.save_start_if_unsaved(),
                    message=f"Interrupted by {signal.Signals(signum).name} before training "
                    f"started; {em.name} is unchanged at epoch {self.epoch}, resume to continue.",
                )
            if self.tensorboard is not None:  # hides what a killed process logged after this step
                self.tensorboard.open(self.global_step)
            stopped_early = False
            for epoch in range(start_epoch + 1, epochs + 1):
                stopped_early = self._run_epoch(epoch, epochs)
                signum = self.torchrun.agree_on_stop()
                if signum and epoch < epochs and not stopped_early:
                    saver.wait_for_writes()
                    raise TrainingInterrupted(signum, saved=self.checkpoint_manager is not None)
                if stopped_early:
                    self._log(
                        f"Early stopping: no improvement for {self.early_stopping.patience} epochs "
                        f"(best {self.best_accuracy:.2f}% at epoch {self.best_epoch})."
                    )
                    break
            saver.wait_for_writes()
            return stopped_early
        except BaseException as exc:
            pending = saver.writes.wait_quietly()
            failed = pending if pending is not None else exc
            if pending is not None or isinstance(failed, WriteError):  # an epoch's save failed
                saver.writes_failed()
            if isinstance(failed, (WriteError, NonFiniteLossError)):  # the state in memory was not saved
                self._unsaved_state = unsaved_reason(failed)
            if pending is not None:
                raise pending from exc
            raise

    def _run_epoch(self, epoch: int, epochs: int) -> bool:
        """One full epoch and its bookkeeping; returns True when early stopping fires."""
        started = time.perf_counter()
        if not (self._mid_epoch and self._epoch_lr is not None):
            # The rate logged for an epoch is the one at its start (a per-step schedule moves
            # it within the epoch), also for an epoch resumed mid-way (it is in the checkpoint).
            self._epoch_lr = self.optimizer.param_groups[0]["lr"]
        learning_rate = self._epoch_lr
        train_metrics, train_speed = self.train_epoch(epoch)
        val_metrics, _ = self.validate()
        self.saver.wait_for_writes()  # the previous epoch's save: its error stops the run here
        if not math.isfinite(val_metrics["loss"]):
            self._diverged("validation", epoch, val_metrics["loss"])
        step_epoch_scheduler(self.scheduler, val_metrics)  # the metric, if any, from its registry entry
        improved = self.early_stopping.step(val_metrics["accuracy"], epoch)
        if self.dataset is not None:
            self.dataset.reapply_transforms(epoch)
        record = {
            "epoch": epoch,
            "train_loss": train_metrics["loss"],
            "train_accuracy": train_metrics["accuracy"],
            "val_loss": val_metrics["loss"],
            "val_accuracy": val_metrics["accuracy"],
            "learning_rate": learning_rate,
            "epoch_time": time.perf_counter() - started,
        }
        append_epoch(self._history, record)
        if self.tensorboard is not None:  # before the checkpoint, which a resume would not log again
            self.tensorboard.log_epoch(self.global_step, record)
        self.saver.commit_epoch(
            epoch,
            val_metrics,
            dict(
                epoch=epoch,
                global_step=self.global_step,
                target_epochs=epochs,
                best_accuracy=self.best_accuracy,
                best_epoch=self.best_epoch,
                epochs_without_improvement=self.epochs_without_improvement,
                last_epoch_time=record["epoch_time"],
            ),
        )
        # The training thread moves on; the epoch counts as saved unless the write fails
        # (then writes_failed sets it back to the last epoch a checkpoint holds).
        self.epoch = epoch
        if self.records.plot_due():
            self.saver.wait_for_writes()  # the curves never show an epoch before its checkpoint is committed
            self.records.plot()
        self.records.log_epoch(record, epochs, train_speed, improved)
        return self.early_stopping.should_stop

    def _diverged(self, what: str, epoch: int, loss: float) -> None:
        """Stop: the ``what`` loss of ``epoch`` is not finite. Nothing of this epoch is saved."""
        raise self.records.divergence(what, epoch, loss)

    def remaining_optimizer_steps(self, epochs: int) -> Optional[int]:
        """Optimizer steps from the current position (inside an epoch after a mid-epoch
        resume) to the end of epoch ``epochs``; None for an unsized training loader."""
        batches = loader_length(self._train)
        steps = optimizer_steps_per_epoch(batches, self.grad_accum_steps)
        if steps is None:
            return None
        position = self._train.position if self._mid_epoch else 0
        # Whole accumulations done (a fork may change --grad-accum: a partial one is redone);
        # at the epoch's end the last, partial accumulation has stepped too.
        done = steps if position >= batches else position // self.grad_accum_steps
        return (epochs - self.epoch) * steps - done

    # -- state -----------------------------------------------------------------------
    _training_state = training_state  # everything but model and optimizer (trainer_state.py)

    def state_dict(self) -> Dict[str, Any]:
        """The complete training state, as stored in a checkpoint."""
        state = self._training_state()
        state.update(
            {
                keys.EPOCH: self.epoch,
                keys.MODEL: self.saved_model.state_dict(),
                keys.OPTIMIZER: self.optimizer.state_dict(),
                keys.MODEL_CONFIG: model_config(self.model),
            }
        )
        return state

    def load_state_dict(
        self, state: Dict[str, Any], restore_optimizer: bool = True, start_kind: Optional[str] = "resume"
    ) -> None:
        """Continue from a checkpoint dict: model, optimizer, scheduler, early stopping,
        history, RNG, data position and augmentation draw. A checkpoint with progress is
        recorded in ``starts`` as a ``start_kind`` point ("resume", "fork"; None: not).
        A checkpoint of a newer format than this code reads raises CheckpointError."""
        load_training_state(self, state, restore_optimizer, start_kind)

    def load_history_from_log(self) -> int:
        """Rebuild ``history`` from the experiment's log file, and with it the best
        validation accuracy, its epoch and the epochs without improvement (so a resume
        through the Python API keeps its best model and its patience). Returns the last
        epoch (0 if none), which also becomes ``self.epoch``; ValueError names a damaged line."""
        return history_from_log(self)

    def _log(self, message: str) -> None:
        if self.dist.is_main:
            print(message, flush=True)

"""The Trainer's steps under torchrun: DDP's ``no_sync``, the ranks' agreements on
stopping and saving, the metrics summed over ranks, the exact sharded validation and the
collective save. The Trainer holds one ``TorchrunSteps``; in a single process each step is
a no-op or a plain call (``Distributed.single()``), so the same code path runs everywhere.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Dict, Optional, Tuple

import torch

from ..errors import ConfigError, NonFiniteLossError, WriteError
from .distributed import AGREE_EVERY, Distributed
from .evaluation import evaluation_forward
from .metrics import MetricsTracker

if TYPE_CHECKING:  # only for annotations
    from .trainer import Trainer


class TorchrunSteps:
    """The collective steps of one Trainer (``trainer``: its model, loaders, saver and
    stop request are read, never replaced)."""

    def __init__(self, trainer: "Trainer", dist: Distributed):
        self.trainer = trainer
        self.dist = dist
        self._steps_since_agreement = 0

    def sync_context(self, step_ends: bool):
        """DDP's ``no_sync`` on the batches of an accumulation that do not end it."""
        if step_ends or not self.dist.enabled:
            return contextlib.nullcontext()
        return self.trainer.parallel_model.no_sync()

    def epoch_metrics(self, tracker: MetricsTracker) -> Dict[str, float]:
        """The tracker's metrics, summed over all ranks (one reduction per epoch)."""
        metrics = tracker.get_metrics()
        if not self.dist.enabled:
            return metrics
        state = tracker.state_dict()
        loss_sum, correct, total = self.dist.sum_float64([state["loss_sum"], state["correct"], state["total_samples"]])
        total = int(total)
        return {
            "loss": loss_sum / total if total else 0.0,
            "accuracy": 100.0 * correct / total if total else 0.0,
            "total_samples": total,
        }

    def between_steps(self, epoch: int, tracker: MetricsTracker) -> None:
        """After an optimizer step (accumulated gradients are never saved): stop or save
        when asked, all ranks together under torchrun."""
        if self.dist.enabled:
            self.agree_mid_epoch(epoch, tracker)
            return
        saver = self.trainer.saver
        if self.trainer.stop_request.requested:
            saver.interrupt_mid_epoch()
        if saver.mid_epoch_save_due():
            saver.save_mid_epoch(epoch)

    def agree_on_stop(self) -> Optional[int]:
        """At an epoch boundary: the signal to stop on, or None. Under torchrun a signal any
        rank received stops every rank, and only the agreed value counts: a signal that
        arrives on one rank after the agreement is acted on at the next one (deciding on
        the local flag would let that rank stop alone)."""
        stop = self.trainer.stop_request
        if not self.dist.enabled:
            return stop.signum
        (signum,) = self.dist.agree([stop.signum or 0])
        if not signum:
            return None
        if not stop.requested:
            stop.signum = signum
        return signum

    def agree_mid_epoch(self, epoch: int, tracker: MetricsTracker) -> None:
        """Every ``AGREE_EVERY`` optimizer steps, all ranks agree (one small CPU all-reduce)
        on a stop signal any of them received, on a ``checkpoint_interval`` save that rank
        0's clock says is due, and on a non-finite loss any of them read back; then all act
        on it together."""
        # Every rank counts the same optimizer steps, so every rank reaches the same
        # agreement points: collectives pair up in order.
        self._steps_since_agreement += 1
        if self._steps_since_agreement < AGREE_EVERY:
            return
        self._steps_since_agreement = 0
        trainer, stop = self.trainer, self.trainer.stop_request
        signum, save, diverged = self.dist.agree(
            [stop.signum or 0, int(trainer.saver.mid_epoch_save_due() and self.dist.is_main), int(tracker.non_finite)]
        )
        if diverged:
            trainer._diverged("training", epoch, self.epoch_metrics(tracker)["loss"])
        if signum:
            if not stop.requested:
                stop.signum = signum  # another rank's signal: stop with it
            trainer.saver.interrupt_mid_epoch()
        if save:
            trainer.saver.save_mid_epoch(epoch)

    def validate_sharded(self) -> Tuple[Dict[str, float], float]:
        """Each rank evaluates whole single-process batches (batch ``b`` on rank ``b %
        world``); the per-batch sums are reduced once and added up in batch order, in
        float64, exactly as ``MetricsTracker`` adds them in one process: the numbers equal
        a single-process evaluation of the same weights, bit for bit on CPU."""
        trainer = self.trainer
        loader = trainer._val
        batches = (loader.dataset_size + loader.batch_size - 1) // loader.batch_size
        start, kept = time.perf_counter(), []
        # the unwrapped model (no DDP buffer broadcast), or the weight average
        forward = evaluation_forward(trainer.saved_model, trainer.tta_flip)
        for images, labels in loader:
            images, labels = trainer._to_device(images, labels)
            with trainer.precision.autocast():
                outputs = forward(images)
                loss = trainer.eval_criterion(outputs, labels)
            kept.append(
                (loader.batch_index, loss.detach().float(), (outputs.argmax(dim=1) == labels).sum(), labels.shape[0])
            )
        records = torch.zeros(batches, 3, dtype=torch.float64)
        if kept:
            losses = torch.stack([loss for _, loss, _, _ in kept]).tolist()  # one read-back
            corrects = torch.stack([correct for _, _, correct, _ in kept]).tolist()
            for (index, _, _, count), value, correct in zip(kept, losses, corrects):
                records[index, 0], records[index, 1], records[index, 2] = value * count, correct, count
        self.dist.sum_tensor(records)
        loss_sum = 0.0
        for value in records[:, 0].tolist():  # batch order, as the tracker sums
            loss_sum += value
        correct, total = int(records[:, 1].sum()), int(records[:, 2].sum())
        if not total:
            raise ConfigError("val_loader yielded no samples; the Trainer needs validation data to measure accuracy.")
        metrics = {"loss": loss_sum / total, "accuracy": 100.0 * correct / total, "total_samples": total}
        return metrics, len(kept) / max(time.perf_counter() - start, 1e-9)

    def collective_write(self, write):
        """``write(training state)`` on rank 0, as one step of every rank: the per-rank
        states are gathered first, and every rank learns how the write went (a full disk
        stops all ranks with rank 0's message). Returns what ``write`` returned."""
        state = self.trainer._training_state()
        if not self.dist.enabled:
            return write(state)
        error, result = None, None
        if self.dist.is_main:
            try:
                result = write(state)
            except Exception as exc:  # re-raised below, after the others know
                error = exc
        outcome = self.dist.broadcast_object(
            ("error", type(error).__name__, str(error)) if error is not None else ("ok", result)
        )
        if error is not None:
            raise error
        if outcome[0] == "error":
            raise (NonFiniteLossError if outcome[1] == "NonFiniteLossError" else WriteError)(outcome[2])
        return outcome[1]

"""The Trainer's steps under torchrun: sharding the loaders, DDP's ``no_sync``, the
ranks' agreements on stopping and saving, the exact sharded validation and the collective
save. ``Trainer`` inherits them; in a single process each is a no-op or a plain call
(``Distributed.single()``), so the same code path runs everywhere.
"""

from __future__ import annotations

import time
from typing import Dict, Optional, Tuple

import torch

from ..errors import NonFiniteLossError, WriteError
from .distributed import AGREE_EVERY
from .evaluation import evaluation_forward
from .metrics import MetricsTracker


class DistributedSteps:
    """The torchrun parts of ``Trainer`` (a mixin: it uses the Trainer's attributes
    ``dist``, ``parallel_model``, ``stop_request``, ``val_loader``, ``precision`` ...)."""

    def _shard(self, loader, whole_batches: bool):
        if not self.dist.enabled:
            return loader
        if hasattr(loader, "shard"):
            return loader.shard(self.dist.rank, self.dist.world_size, whole_batches=whole_batches)
        from torch.utils.data import DataLoader, DistributedSampler, IterableDataset, RandomSampler

        if whole_batches:
            return loader  # every rank evaluates the whole set: exact, only slower
        if not isinstance(loader, DataLoader) or isinstance(loader.dataset, IterableDataset) \
                or loader.batch_size is None:
            raise ValueError(
                f"Under torchrun the training loader must be the built-in one (dataset.get_dataloaders()) or a "
                f"DataLoader over a sized dataset with a batch_size; a {type(loader).__name__} cannot be split "
                f"across {self.dist.world_size} processes."
            )
        # A user's DataLoader: torch's DistributedSampler (it repeats a few samples so every
        # rank gets as many; its shuffle is seeded by the run's torch seed and the epoch).
        sampler = DistributedSampler(loader.dataset, num_replicas=self.dist.world_size, rank=self.dist.rank,
                                     shuffle=isinstance(loader.sampler, RandomSampler),
                                     seed=int(torch.initial_seed()) % (2**63), drop_last=False)
        sharded = DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler,
                             num_workers=loader.num_workers, collate_fn=loader.collate_fn,
                             pin_memory=loader.pin_memory, drop_last=loader.drop_last,
                             worker_init_fn=loader.worker_init_fn, generator=loader.generator)
        sharded.set_epoch = sampler.set_epoch
        return sharded

    def _sync_context(self, step_ends: bool):
        """DDP's ``no_sync`` on the batches of an accumulation that do not end it."""
        import contextlib

        if step_ends or not self.dist.enabled:
            return contextlib.nullcontext()
        return self.parallel_model.no_sync()

    def _agree_on_stop(self) -> Optional[int]:
        """At an epoch boundary: the signal to stop on, or None. Under torchrun a signal any
        rank received stops every rank, and only the agreed value counts: a signal that
        arrives on one rank after the agreement is acted on at the next one (deciding on
        the local flag would let that rank stop alone)."""
        if not self.dist.enabled:
            return self.stop_request.signum
        (signum,) = self.dist.agree([self.stop_request.signum or 0])
        if not signum:
            return None
        if not self.stop_request.requested:
            self.stop_request.signum = signum
        return signum

    def _agree_mid_epoch(self, epoch: int, tracker: MetricsTracker) -> None:
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
        due = bool(self.checkpoint_interval) and time.monotonic() - self._last_save >= self.checkpoint_interval
        signum, save, diverged = self.dist.agree([
            self.stop_request.signum or 0, int(due and self.dist.is_main), int(tracker.non_finite)])
        if diverged:
            self._diverged("training", epoch, self._epoch_metrics(tracker)["loss"])
        if signum:
            if not self.stop_request.requested:
                self.stop_request.signum = signum  # another rank's signal: stop with it
            self._interrupt_mid_epoch()
        if save:
            self._save_mid_epoch(epoch)

    def _validate_sharded(self) -> Tuple[Dict[str, float], float]:
        """Each rank evaluates whole single-process batches (batch ``b`` on rank ``b %
        world``); the per-batch sums are reduced once and added up in batch order, in
        float64, exactly as ``MetricsTracker`` adds them in one process: the numbers equal
        a single-process evaluation of the same weights, bit for bit on CPU."""
        loader = self.val_loader
        batches = (loader.dataset_size + loader.batch_size - 1) // loader.batch_size
        start, kept = time.perf_counter(), []
        # the unwrapped model (no DDP buffer broadcast), or the weight average
        forward = evaluation_forward(self.saved_model, self.tta_flip)
        for images, labels in loader:
            images, labels = self._to_device(images, labels)
            with self.precision.autocast():
                outputs = forward(images)
                loss = self.eval_criterion(outputs, labels)
            kept.append((loader.batch_index, loss.detach().float(), (outputs.argmax(dim=1) == labels).sum(),
                         labels.shape[0]))
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
            raise ValueError("val_loader yielded no samples; the Trainer needs validation data to measure accuracy.")
        metrics = {"loss": loss_sum / total, "accuracy": 100.0 * correct / total, "total_samples": total}
        return metrics, len(kept) / max(time.perf_counter() - start, 1e-9)

    def _collective_write(self, write):
        """``write(training state)`` on rank 0, as one step of every rank: the per-rank
        states are gathered first, and every rank learns how the write went (a full disk
        stops all ranks with rank 0's message). Returns what ``write`` returned."""
        state = self._training_state()
        if not self.dist.enabled:
            return write(state)
        error, result = None, None
        if self.dist.is_main:
            try:
                result = write(state)
            except Exception as exc:  # re-raised below, after the others know
                error = exc
        outcome = self.dist.broadcast_object(
            ("error", type(error).__name__, str(error)) if error is not None else ("ok", result))
        if error is not None:
            raise error
        if outcome[0] == "error":
            raise (NonFiniteLossError if outcome[1] == "NonFiniteLossError" else WriteError)(outcome[2])
        return outcome[1]

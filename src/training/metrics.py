"""MetricsTracker: running loss and accuracy over an epoch.

``update`` launches one device operation (the argmax) and keeps the batch's loss,
predictions and labels; values are read back to the host only in ``get_metrics`` (or
every ``FLUSH_EVERY`` batches), so a training step costs no host-device
synchronisation. Losses are summed on the host in batch order, in float64, so a
tracker restored from ``state_dict`` mid-epoch ends with exactly the numbers of an
uninterrupted one.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Tuple, Union

import torch

Number = Union[float, int, torch.Tensor]
FLUSH_EVERY = 1024  # batches held before reading back, bounding the memory held


class MetricsTracker:
    """Example::

        tracker = MetricsTracker()
        tracker.update(loss_value, outputs, labels)   # per batch
        tracker.get_metrics()  # {'loss': 0.5, 'accuracy': 85.0, 'total_samples': 1000}
        tracker.reset()
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._loss_sum = 0.0  # sum over samples of the per-sample mean loss (host, float64)
        self._correct = 0
        self.total_samples = 0
        self.non_finite = False  # a read-back loss was NaN or infinite (checked without a sync)
        self._pending: List[Tuple[Number, torch.Tensor, torch.Tensor, int]] = []

    def update(self, loss_value: Number, outputs: torch.Tensor, labels: torch.Tensor) -> None:
        """Add one batch.

        Args:
            loss_value: the batch's mean loss (a tensor, kept on its device, or a number).
            outputs: logits ``(batch, classes)``.
            labels: class indices ``(batch,)``.
        """
        if torch.is_tensor(loss_value):
            loss_value = loss_value.detach()
        batch = labels.shape[0]
        self._pending.append((loss_value, outputs.detach().argmax(dim=1), labels, batch))
        self.total_samples += batch
        if len(self._pending) >= FLUSH_EVERY:
            self._flush()

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        if not pending:
            return
        losses = [loss for loss, _, _, _ in pending]
        if all(torch.is_tensor(loss) for loss in losses):
            values = torch.stack([loss.float() for loss in losses]).tolist()  # one read-back
        else:
            values = [float(loss) for loss in losses]
        for value, (_, _, _, batch) in zip(values, pending):
            self._loss_sum += value * batch  # batch order: the same sums whatever the flush points
        if not math.isfinite(self._loss_sum):
            self.non_finite = True
        predictions = torch.cat([p for _, p, _, _ in pending])
        labels = torch.cat([l.to(predictions.device) for _, _, l, _ in pending])
        self._correct += int((predictions == labels).sum())

    def get_metrics(self) -> Dict[str, float]:
        self._flush()
        total = self.total_samples
        return {
            "loss": self._loss_sum / total if total else 0.0,
            "accuracy": 100.0 * self._correct / total if total else 0.0,
            "total_samples": total,
        }

    def state_dict(self) -> Dict[str, Any]:
        self._flush()
        return {"loss_sum": self._loss_sum, "correct": self._correct, "total_samples": self.total_samples}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.reset()
        self._loss_sum = float(state["loss_sum"])
        self.non_finite = not math.isfinite(self._loss_sum)
        self._correct = int(state["correct"])
        self.total_samples = int(state["total_samples"])

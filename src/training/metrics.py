"""MetricsTracker: running loss and accuracy over an epoch.

``update`` accumulates on the tensors' device without reading values back to the host,
so a training step costs no host-device synchronisation; ``get_metrics`` reads once.
"""

from __future__ import annotations

from typing import Any, Dict, Union

import torch

Number = Union[float, int, torch.Tensor]


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
        self._loss_sum: Number = 0.0  # sum over samples of the per-sample mean loss
        self._correct: Number = 0
        self.total_samples = 0

    def update(self, loss_value: Number, outputs: torch.Tensor, labels: torch.Tensor) -> None:
        """Add one batch.

        Args:
            loss_value: the batch's mean loss (a tensor, kept on its device, or a number).
            outputs: logits ``(batch, classes)``.
            labels: class indices ``(batch,)``.
        """
        batch = labels.shape[0]
        if torch.is_tensor(loss_value):
            loss_value = loss_value.detach()
            # float64 where the device has it, so long epochs do not lose precision.
            if loss_value.device.type != "mps":
                loss_value = loss_value.double()
        self._loss_sum = self._loss_sum + loss_value * batch
        self._correct = self._correct + (outputs.detach().argmax(dim=1) == labels).sum()
        self.total_samples += batch

    def get_metrics(self) -> Dict[str, float]:
        total = self.total_samples
        loss_sum, correct = float(self._loss_sum), int(self._correct)
        return {
            "loss": loss_sum / total if total else 0.0,
            "accuracy": 100.0 * correct / total if total else 0.0,
            "total_samples": total,
        }

    def state_dict(self) -> Dict[str, Any]:
        return {"loss_sum": float(self._loss_sum), "correct": int(self._correct), "total_samples": self.total_samples}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self._loss_sum = float(state["loss_sum"])
        self._correct = int(state["correct"])
        self.total_samples = int(state["total_samples"])

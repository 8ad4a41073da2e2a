"""Early stopping and the one shared "is this an improvement?" rule.

``is_improvement`` is used by early stopping and by best-model checkpointing alike, so
the two can never disagree about which epoch was best.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional

from ..errors import ConfigError


def is_improvement(value: float, best: Optional[float], mode: str = "max", min_delta: float = 0.0) -> bool:
    """True when ``value`` beats ``best`` by more than ``min_delta`` (``best`` None: always)."""
    if best is None or (isinstance(best, float) and math.isinf(best)):
        return True
    if mode == "max":
        return value > best + min_delta
    if mode == "min":
        return value < best - min_delta
    raise ConfigError(f"mode must be 'max' or 'min', got {mode!r}.")


class EarlyStopping:
    """Stops after ``patience`` epochs without improvement of the monitored value.

    Args:
        patience: epochs without improvement before stopping; 0 disables stopping
            (the best value is still tracked).
        mode: ``"max"`` (accuracy) or ``"min"`` (loss).
        min_delta: the smallest change that counts as an improvement.
    """

    def __init__(self, patience: int = 0, mode: str = "max", min_delta: float = 0.0):
        if not isinstance(patience, int) or isinstance(patience, bool) or patience < 0:
            raise ConfigError(f"patience must be a non-negative integer, got {patience!r}.")
        if mode not in ("max", "min"):
            raise ConfigError(f"mode must be 'max' or 'min', got {mode!r}.")
        self.patience = patience
        self.mode = mode
        self.min_delta = min_delta
        self.best_value: Optional[float] = None
        self.best_epoch = 0
        self.epochs_without_improvement = 0

    def step(self, value: float, epoch: int) -> bool:
        """Record the value of ``epoch``; returns True when it is a new best."""
        if is_improvement(value, self.best_value, self.mode, self.min_delta):
            self.best_value, self.best_epoch = float(value), int(epoch)
            self.epochs_without_improvement = 0
            return True
        self.epochs_without_improvement += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.epochs_without_improvement >= self.patience

    def state_dict(self) -> Dict[str, Any]:
        return {
            "patience": self.patience,
            "mode": self.mode,
            "min_delta": self.min_delta,
            "best_value": self.best_value,
            "best_epoch": self.best_epoch,
            "epochs_without_improvement": self.epochs_without_improvement,
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore progress; the current ``patience`` is kept (a resume may change it)."""
        self.mode = state["mode"]
        self.min_delta = state["min_delta"]
        self.best_value = state["best_value"]
        self.best_epoch = int(state["best_epoch"])
        self.epochs_without_improvement = int(state["epochs_without_improvement"])

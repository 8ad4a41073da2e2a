"""ModelEMA: an exponential moving average of a model's weights (``--ema DECAY``).

After every optimizer step the averaged copy moves towards the trained weights,
``average = d * average + (1 - d) * weights``, with ``d = min(decay, (1 + n) / (10 + n))``
after ``n`` earlier updates: the short ramp (as in TensorFlow's ExponentialMovingAverage)
keeps the average from being dominated by the random initial weights in a short run.
Buffers (batch-norm running statistics, counters) are copied, not averaged: they
describe the trained weights' activations.

A hand-written average rather than ``torch.optim.swa_utils.AveragedModel``: its state is
three plain entries (decay, update count, weights) that a ``weights_only`` checkpoint
holds, one fused ``torch._foreach_lerp_`` per step keeps the loop cheap, and the result
is bit-identical after a resume.

What a checkpoint of an EMA run holds (``Trainer``): ``model_state_dict`` is the
*averaged* model (the one evaluated, whose accuracy the checkpoint records, so
``best_model.pt`` loads as the best evaluated model), and ``ema_state_dict`` holds
``{"decay", "updates", "training_model"}``, the weights the optimizer trains, from which
a resume continues.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Dict, Optional

import torch
import torch.nn as nn

from ..errors import ConfigError

RAMP = 10  # d = min(decay, (1 + n) / (RAMP + n))


def check_decay(decay: Any) -> float:
    """``decay`` as a float when it is a number with 0 < decay < 1.

    Raises:
        ValueError: naming the value and the range.
    """
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not math.isfinite(decay) or not 0 < decay < 1:
        raise ConfigError(f"The EMA decay must be a number between 0 and 1 (exclusive), e.g. 0.999; got {decay!r}.")
    return float(decay)


class ModelEMA:
    """The averaged copy of ``model`` (made now, so it starts from the current weights).

    Args:
        model: the trained model (its memory format and device are kept).
        decay: the per-step decay, 0 < decay < 1 (0.999 averages over about 1,000 steps).

    Raises:
        ValueError: a decay outside (0, 1).
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = check_decay(decay)
        self.module = copy.deepcopy(model).eval()
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)
        self.updates = 0

    def current_decay(self) -> float:
        """The decay the next update uses (the ramp, then ``decay``)."""
        return min(self.decay, (1 + self.updates) / (RAMP + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s weights; copy its buffers."""
        weight = 1.0 - self.current_decay()
        averaged = [p for p in self.module.parameters()]
        trained = [p.detach() for p in model.parameters()]
        floating = [(a, t) for a, t in zip(averaged, trained) if a.is_floating_point()]
        if floating:
            torch._foreach_lerp_([a for a, _ in floating], [t for _, t in floating], weight)
        for a, t in zip(averaged, trained):
            if not a.is_floating_point():
                a.copy_(t)
        for a, t in zip(self.module.buffers(), model.buffers()):
            a.copy_(t)
        self.updates += 1

    @torch.no_grad()
    def reset(self, model: nn.Module) -> None:
        """Start the average again from ``model``'s weights (no updates yet)."""
        self.module.load_state_dict(model.state_dict())
        self.updates = 0

    def state_dict(self, model: nn.Module) -> Dict[str, Any]:
        """The checkpoint entry: decay, update count and ``model``'s (the trained) weights;
        the averaged weights go in the checkpoint's ``model_state_dict``."""
        return {"decay": self.decay, "updates": self.updates, "training_model": model.state_dict()}

    @torch.no_grad()
    def load_state_dict(self, state: Optional[Dict[str, Any]], model: nn.Module) -> None:
        """Continue from a checkpoint whose ``model_state_dict`` is already loaded into
        ``model``: with an EMA entry, that is the average (it moves into ``self.module``)
        and ``model`` gets the trained weights back; without one (a run that had no EMA,
        forked with ``--ema``), the average starts from ``model``'s weights.

        Raises:
            ValueError: an entry without the trained weights or the update count.
        """
        if not state:
            self.reset(model)
            return
        if not isinstance(state, dict) or "training_model" not in state or "updates" not in state:
            raise ConfigError(
                "The checkpoint's EMA entry is incomplete (no training_model or updates); "
                "it cannot be resumed with --ema."
            )
        self.module.load_state_dict(model.state_dict())
        model.load_state_dict(state["training_model"])
        self.updates = int(state["updates"])

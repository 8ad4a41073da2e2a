"""Optimizers and learning-rate schedulers by name (the CLI's --optimizer / --scheduler)."""

from __future__ import annotations

from typing import Any, Iterable, Optional

import torch


def build_optimizer(name: str, parameters: Iterable[torch.nn.Parameter], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "adamw":
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=0.9, weight_decay=weight_decay, nesterov=True)
    raise ValueError(f"Unknown optimizer {name!r}; choose one of: adamw, adam, sgd.")


def build_scheduler(name: str, optimizer: torch.optim.Optimizer, epochs: int) -> Optional[Any]:
    """An epoch-level scheduler: ``none``, ``cosine`` (to 0 over ``epochs``), ``step``
    (x0.1 every third of the run) or ``plateau`` (halve after 2 epochs without a
    validation-accuracy gain)."""
    if name == "none":
        return None
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    if name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, epochs // 3), gamma=0.1)
    if name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=2)
    raise ValueError(f"Unknown scheduler {name!r}; choose one of: none, cosine, step, plateau.")

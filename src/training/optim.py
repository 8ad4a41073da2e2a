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


def build_scheduler(name: str, optimizer: torch.optim.Optimizer, epochs: int,
                    steps_per_epoch: Optional[int] = None) -> Optional[Any]:
    """A learning-rate scheduler: ``none``; per epoch ``cosine`` (to 0 over ``epochs``),
    ``step`` (x0.1 every third of the run) or ``plateau`` (halve after 2 epochs without a
    validation-accuracy gain); per optimizer step ``onecycle`` (``OneCycleLR`` with its
    defaults over ``epochs * steps_per_epoch`` steps, peaking at the optimizer's ``lr``
    after 30% of them).

    Raises:
        ValueError: an unknown name, or ``onecycle`` without a positive ``steps_per_epoch``
            (an unsized training loader).
    """
    if name == "none":
        return None
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    if name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, epochs // 3), gamma=0.1)
    if name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=2)
    if name == "onecycle":
        if not isinstance(steps_per_epoch, int) or steps_per_epoch < 1:
            raise ValueError("The onecycle scheduler plans its steps from the length of the training loader; "
                             f"this loader has none ({steps_per_epoch!r} steps per epoch). Use another --scheduler.")
        max_lrs = [group["lr"] for group in optimizer.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lrs, total_steps=epochs * steps_per_epoch)
    raise ValueError(f"Unknown scheduler {name!r}; choose one of: none, cosine, step, plateau, onecycle.")

"""Learning-rate control inside an epoch: per-step schedulers and linear warmup.

The schedulers of ``--scheduler`` (``src/optim.py``) step once per epoch, except those
registered with ``per_step`` (``onecycle``), which the Trainer steps after every optimizer
step (``steps_per_batch``); the Trainer knows a scheduler by its class.

``--warmup-epochs N`` (``LinearWarmup``) scales the learning rate of each optimizer step
during the first ``N`` epochs by ``(k + 1) / warmup_steps`` for step ``k``, on top of
whatever the scheduler set. It scales the rate only for the step itself and restores the
scheduler's value right after, so every scheduler (per-epoch, plateau, one-cycle) keeps
computing from its own values, and combines with warmup by multiplication. The epoch log
records the scheduler's rate (the warmup factor is not in it).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Dict, Iterator, Optional

import torch

from ..errors import ConfigError

from ..optim import SchedulerRegistry, entry_of, scheduler_info

# Per-step schedulers a run built in Python may use that no --scheduler name stands for.
UNREGISTERED_PER_STEP = (torch.optim.lr_scheduler.CyclicLR,)


def steps_per_batch(scheduler: Any) -> bool:
    """True for a scheduler the Trainer steps after every optimizer step (one-cycle,
    cyclic), False for one it steps once per epoch."""
    return bool(scheduler_info(scheduler).get("per_step")) or isinstance(scheduler, UNREGISTERED_PER_STEP)


def step_epoch_scheduler(scheduler: Any, val_metrics: Dict[str, float]) -> None:
    """The end-of-epoch step of a per-epoch scheduler (with the validation metric its
    entry names, plateau); nothing for None or a per-step one."""
    if scheduler is None or steps_per_batch(scheduler):
        return
    metric = scheduler_info(scheduler).get("metric")
    if metric is not None:
        scheduler.step(metric(scheduler, val_metrics))
    else:
        scheduler.step()


def optimizer_steps_per_epoch(batches: Optional[int], grad_accum: int) -> Optional[int]:
    """Optimizer steps in an epoch of ``batches`` batches (the last, partial accumulation
    also steps); None for an unsized loader."""
    return None if batches is None else math.ceil(batches / grad_accum)


class LinearWarmup:
    """Linear learning-rate warmup over the first ``warmup_steps`` optimizer steps.

    Args:
        warmup_steps: an integer >= 0 (0: no warmup).

    Raises:
        ValueError: a negative or non-integer step count.
    """

    def __init__(self, warmup_steps: int):
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ConfigError(f"warmup_steps must be an integer >= 0, got {warmup_steps!r}.")
        self.warmup_steps = warmup_steps
        self.steps = 0  # optimizer steps taken so far in the run

    @property
    def active(self) -> bool:
        """True while the next step is still warming up."""
        return self.steps < self.warmup_steps

    def factor(self) -> float:
        """The multiplier of the next step's learning rate."""
        return min(1.0, (self.steps + 1) / self.warmup_steps) if self.warmup_steps else 1.0

    @contextmanager
    def applied(self, optimizer: torch.optim.Optimizer) -> Iterator[None]:
        """Around one optimizer step: the warmup-scaled rates, then the scheduler's again
        (restored from saved values, not divided back, so nothing drifts). Counts the step."""
        factor = self.factor()
        saved = [group["lr"] for group in optimizer.param_groups] if factor < 1.0 else None
        if saved is not None:
            for group in optimizer.param_groups:
                group["lr"] = group["lr"] * factor
        try:
            yield
        finally:
            if saved is not None:
                for group, lr in zip(optimizer.param_groups, saved):
                    group["lr"] = lr
            self.steps += 1

    def state_dict(self) -> Dict[str, int]:
        return {"warmup_steps": self.warmup_steps, "steps": self.steps}

    def load_state_dict(self, state: Optional[Dict[str, Any]]) -> None:
        """Continue counting from a checkpoint (none: a run saved without warmup, whose
        steps are not counted, so its warmup starts now)."""
        if state:
            self.steps = int(state["steps"])


def schedule_steps_left(scheduler: Any) -> Optional[int]:
    """The optimizer steps a per-step schedule with a fixed plan (one-cycle) has left, or
    None for any other schedule."""
    if not scheduler_info(scheduler).get("plans_steps") or not steps_per_batch(scheduler):
        return None
    total = scheduler.total_steps
    if not isinstance(total, int):
        return None
    return total - int(scheduler.last_epoch)


def check_schedule_plan(scheduler: Any, steps_needed: int, epochs: int, experiment: str) -> None:
    """Refuse to train past the end of a per-step schedule's plan: a one-cycle schedule
    planned for fewer steps than training to ``epochs`` needs (a resume with a larger
    ``--epochs``) would fail at its last step. Checked before the first step.

    Raises:
        ConfigError: naming the plan, the steps needed and the command to use instead.
    """
    left = schedule_steps_left(scheduler)
    if left is not None and steps_needed > left:
        total, name = scheduler.total_steps, entry_of(SchedulerRegistry, scheduler)[0]
        raise ConfigError(
            f"{experiment}'s {name} learning-rate schedule has {left} of its {total} optimizer steps left, but "
            f"training to epoch {epochs} needs {steps_needed}; a one-cycle schedule cannot be extended. Fork to plan "
            f"a new schedule over the extra epochs: python train.py --fork {experiment} --epochs {epochs}."
        )

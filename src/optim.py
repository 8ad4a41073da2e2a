"""Optimizers and learning-rate schedulers by name (``--optimizer`` / ``--scheduler``): two
registries whose entries carry what the rest of the code needs to know about them.

Adding one is one entry here, or in a plug-in (``train.py --import my_optim.py``)::

    from src.optim import OptimizerRegistry, SchedulerRegistry

    @OptimizerRegistry.register("rmsprop", cls=torch.optim.RMSprop)
    def rmsprop(parameters, lr, weight_decay):
        return torch.optim.RMSprop(parameters, lr=lr, weight_decay=weight_decay)

    @SchedulerRegistry.register("exponential", cls=torch.optim.lr_scheduler.ExponentialLR)
    def exponential(optimizer, epochs, steps_per_epoch):
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.9)

An optimizer factory takes ``(parameters, lr, weight_decay)``; its metadata:

- ``cls``: the optimizer's class (or its dotted path), so a run built in Python
  (``describe_run``) is recorded under this name.

A scheduler factory takes ``(optimizer, epochs, steps_per_epoch)`` (``steps_per_epoch``:
optimizer steps per epoch, None for an unsized loader) and returns the scheduler, or None
for no schedule; its metadata:

- ``cls``: the scheduler's class (or its dotted path): the Trainer knows a scheduler by
  its class (a run built in Python names none), see ``scheduler_info``.
- ``per_step``: stepped after every optimizer step (else once per epoch).
- ``metric``: ``(scheduler, validation metrics) -> value`` for a per-epoch schedule
  stepped with a metric (plateau); None: stepped without one.
- ``planned``: planned for the run's length: a resume may not extend it past that length,
  and (``replan_on_fork``, the same by default) a fork that changes the scheduler or the
  epoch count plans it anew over the epochs it has left.
- ``plan_end``: ``(checkpoint epoch, scheduler state) -> epoch`` where the saved plan ends,
  for a plan that a resume with a smaller ``--epochs`` keeps (cosine); None: the recorded
  ``epochs``.
- ``plans_steps``: planned in optimizer steps (``total_steps``, one-cycle): it cannot run
  past its last step, and a fork whose steps left differ (another batch size,
  ``--grad-accum``, data or process count) plans it anew.

This module imports torch only inside the factories, so ``train.py --help`` (which lists
the names) stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any, Dict, Iterable, Optional, Tuple

from .errors import ConfigError
from .registry import Registry

OptimizerRegistry = Registry("optimizer", sort_names=False)
SchedulerRegistry = Registry("scheduler", sort_names=False)


# -- optimizers ---------------------------------------------------------------------------
@OptimizerRegistry.register("adamw", cls="torch.optim.AdamW")
def _adamw(parameters, lr: float, weight_decay: float):
    import torch

    return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)


@OptimizerRegistry.register("adam", cls="torch.optim.Adam")
def _adam(parameters, lr: float, weight_decay: float):
    import torch

    return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)


@OptimizerRegistry.register("sgd", cls="torch.optim.SGD")
def _sgd(parameters, lr: float, weight_decay: float):
    import torch

    return torch.optim.SGD(parameters, lr=lr, momentum=0.9, weight_decay=weight_decay, nesterov=True)


# -- schedulers ---------------------------------------------------------------------------
@SchedulerRegistry.register("none")
def _none(optimizer, epochs: int, steps_per_epoch: Optional[int] = None):
    return None


def _cosine_plan_end(epoch: int, state: Dict[str, Any]) -> Optional[int]:
    """The plan's own end (a resume with a smaller --epochs keeps it, so it may be extended back to it)."""
    if all(isinstance(state.get(k), int) for k in ("T_max", "last_epoch")):
        return epoch - state["last_epoch"] + state["T_max"]
    return None


@SchedulerRegistry.register(
    "cosine", cls="torch.optim.lr_scheduler.CosineAnnealingLR", planned=True, plan_end=_cosine_plan_end
)
def _cosine(optimizer, epochs: int, steps_per_epoch: Optional[int] = None):
    import torch

    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)


@SchedulerRegistry.register("step", cls="torch.optim.lr_scheduler.StepLR", planned=True)
def _step(optimizer, epochs: int, steps_per_epoch: Optional[int] = None):
    import torch

    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, epochs // 3), gamma=0.1)


def _plateau_metric(scheduler, metrics: Dict[str, float]) -> float:
    return metrics["accuracy"] if scheduler.mode == "max" else metrics["loss"]


@SchedulerRegistry.register("plateau", cls="torch.optim.lr_scheduler.ReduceLROnPlateau", metric=_plateau_metric)
def _plateau(optimizer, epochs: int, steps_per_epoch: Optional[int] = None):
    import torch

    return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=2)


@SchedulerRegistry.register(
    "onecycle", cls="torch.optim.lr_scheduler.OneCycleLR", per_step=True, planned=True, plans_steps=True
)
def _onecycle(optimizer, epochs: int, steps_per_epoch: Optional[int] = None):
    import torch

    if not isinstance(steps_per_epoch, int) or steps_per_epoch < 1:
        raise ConfigError(
            "The onecycle scheduler plans its steps from the length of the training loader; "
            f"this loader has none ({steps_per_epoch!r} steps per epoch). Use another --scheduler."
        )
    max_lrs = [group["lr"] for group in optimizer.param_groups]
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lrs, total_steps=epochs * steps_per_epoch)


# -- using them -----------------------------------------------------------------------------
def build_optimizer(name: str, parameters: Iterable[Any], lr: float, weight_decay: float):
    """The optimizer ``name`` over ``parameters``.

    Raises:
        ValueError: an unknown name (the known ones listed).
    """
    if name not in OptimizerRegistry:
        raise ConfigError(OptimizerRegistry.unknown_message(name))
    return OptimizerRegistry.get(name)(parameters, lr=lr, weight_decay=weight_decay)


def build_scheduler(name: str, optimizer: Any, epochs: int, steps_per_epoch: Optional[int] = None) -> Optional[Any]:
    """A learning-rate scheduler: ``none``; per epoch ``cosine`` (to 0 over ``epochs``),
    ``step`` (x0.1 every third of the run) or ``plateau`` (halve after 2 epochs without a
    validation-accuracy gain); per optimizer step ``onecycle`` (``OneCycleLR`` with its
    defaults over ``epochs * steps_per_epoch`` steps, peaking at the optimizer's ``lr``
    after 30% of them); or one a plug-in registers.

    Raises:
        ValueError: an unknown name, or ``onecycle`` without a positive ``steps_per_epoch``
            (an unsized training loader).
    """
    if name not in SchedulerRegistry:
        raise ConfigError(SchedulerRegistry.unknown_message(name))
    return SchedulerRegistry.get(name)(optimizer, epochs, steps_per_epoch)


def resolve_class(cls: Any) -> Optional[type]:
    """A registry entry's ``cls``: the class itself, or imported from its dotted path."""
    if cls is None or isinstance(cls, type):
        return cls
    module, _, name = str(cls).rpartition(".")
    return getattr(importlib.import_module(module), name)


def entry_of(registry: Registry, obj: Any) -> Optional[Tuple[str, Dict[str, Any]]]:
    """``(name, metadata)`` of the entry whose ``cls`` is ``obj``'s class (else a base
    class of it), or None."""
    if obj is None:
        return None
    matches = [
        (name, info)
        for name, info in registry.items()
        if info.get("cls") is not None and isinstance(obj, resolve_class(info["cls"]))
    ]
    exact = [(name, info) for name, info in matches if type(obj) is resolve_class(info["cls"])]
    return (exact or matches or [None])[0]


def scheduler_info(scheduler: Any) -> Dict[str, Any]:
    """The metadata of ``scheduler``'s entry (by its class); {} for None or an unregistered class."""
    found = entry_of(SchedulerRegistry, scheduler)
    return found[1] if found is not None else {}

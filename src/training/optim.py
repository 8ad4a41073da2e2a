"""Optimizers and learning-rate schedulers by name (the CLI's --optimizer / --scheduler):
the registries and their entries are in ``src/optim.py``; re-exported here for the callers
that import them from the training package."""

from __future__ import annotations

from ..optim import OptimizerRegistry, SchedulerRegistry, build_optimizer, build_scheduler, scheduler_info

__all__ = ["OptimizerRegistry", "SchedulerRegistry", "build_optimizer", "build_scheduler", "scheduler_info"]

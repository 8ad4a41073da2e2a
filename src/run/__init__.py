"""A run from a configuration, in steps: ``plan`` (read and verify everything, every
refusal, nothing written: a ``StartPlan``), ``build`` (data, model, optimizer, Trainer),
``apply`` (open the experiment; resume, fork or repair its records as the lock holder)
and ``run`` (``run_training``: the steps in order, then train)."""

from .run import run_training

__all__ = ["run_training"]

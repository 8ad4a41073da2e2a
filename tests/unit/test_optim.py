"""Optimizers and schedulers as registry entries (src/optim.py): the metadata the Trainer,
resume and fork read instead of scheduler names."""

from __future__ import annotations

import torch

from src.optim import OptimizerRegistry, SchedulerRegistry, build_optimizer, build_scheduler, entry_of, scheduler_info
from src.training.schedules import schedule_steps_left, step_epoch_scheduler, steps_per_batch


def make(scheduler: str, epochs: int = 4, steps: int = 5):
    optimizer = build_optimizer("sgd", [torch.nn.Parameter(torch.zeros(2))], lr=0.1, weight_decay=0.0)
    return optimizer, build_scheduler(scheduler, optimizer, epochs, steps)


def test_names_keep_their_order_and_each_builds_its_class():
    assert OptimizerRegistry.names() == ["adamw", "adam", "sgd"]
    assert SchedulerRegistry.names() == ["none", "cosine", "step", "plateau", "onecycle"]
    for name in OptimizerRegistry.names():
        optimizer = build_optimizer(name, [torch.nn.Parameter(torch.zeros(1))], lr=0.1, weight_decay=0.0)
        assert entry_of(OptimizerRegistry, optimizer)[0] == name
    for name in SchedulerRegistry.names()[1:]:
        assert entry_of(SchedulerRegistry, make(name)[1])[0] == name
    assert make("none")[1] is None and scheduler_info(None) == {}


def test_the_metadata_stands_for_the_old_name_branches():
    per_step = [n for n, info in SchedulerRegistry.items() if info.get("per_step")]
    planned = [n for n, info in SchedulerRegistry.items() if info.get("planned")]
    assert per_step == ["onecycle"] and planned == ["cosine", "step", "onecycle"]
    assert steps_per_batch(make("onecycle")[1]) and not steps_per_batch(make("cosine")[1])
    cyclic = torch.optim.lr_scheduler.CyclicLR(make("none")[0], 0.01, 0.1)
    assert steps_per_batch(cyclic), "a per-step scheduler built in Python without a registry name"
    assert schedule_steps_left(make("onecycle", 4, 5)[1]) == 20 and schedule_steps_left(make("step")[1]) is None
    assert SchedulerRegistry.info("cosine")["plan_end"](6, {"T_max": 10, "last_epoch": 6}) == 10


def test_plateau_steps_with_the_validation_accuracy():
    optimizer, plateau = make("plateau")
    for _ in range(4):  # no gain for more than its patience of 2 epochs: halved
        step_epoch_scheduler(plateau, {"accuracy": 50.0, "loss": 1.0})
    assert optimizer.param_groups[0]["lr"] == 0.05

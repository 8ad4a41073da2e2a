"""A whole run from a configuration: new, ``--resume`` or ``--fork``.

Order matters for safety: ``make_plan`` resolves and validates the configuration, builds
the data and model, and chooses and verifies the checkpoint to start from *before* a new
experiment directory is created or an existing one is written to. Bad input therefore
never leaves a half-made experiment or touches an existing one. Then the experiment is
opened, the plan applied (as its lock holder) and the Trainer trains.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from ..config import RunConfig
from ..training.distributed import Distributed, agreement
from ..training.interrupts import StopRequest
from .apply import hold_signals, open_experiment, settle_finished, start_trainer
from .plan import make_plan


def run_training(
    overrides: Dict[str, Any],
    runs_dir: str = "runs",
    resume: Optional[str] = None,
    fork: Optional[str] = None,
    show_progress: Optional[bool] = None,
    log=print,
    stop: Optional[StopRequest] = None,
) -> Dict[str, Any]:
    """Run training as the CLI does; returns ``Trainer.train``'s results dict, or
    ``{"nothing_to_do": True, "message": ...}`` for a resume of a finished run.

    Under ``torchrun`` every process runs this: it joins the process group (see
    ``distributed.py``), every rank loads the data and checks the input, rank 0 creates
    or reopens the experiment and writes every file, and the others train beside it.

    Args:
        stop: the caller's ``StopRequest`` (in immediate mode during start-up); it is
            switched to deferred mode before anything is written.

    Raises:
        BadInputError (ConfigError, ExperimentError, DataError, CheckpointError): bad
            input, nothing written; WriteError / CheckpointSaveError: a write failed;
            NonFiniteLossError: the loss diverged; TrainingInterrupted: a signal;
            PeerFailedError: another process of a torchrun job stopped.
    """
    RunConfig.check_request(overrides)  # what is asked for; RunConfig.validate judges the merged configuration
    dist = Distributed.from_environment(overrides.get("device"))
    try:
        return _run_training(dist, overrides, runs_dir, resume, fork, show_progress, log, stop)
    finally:
        dist.close()


def _run_training(
    dist: Distributed,
    overrides: Dict[str, Any],
    runs_dir: str = "runs",
    resume: Optional[str] = None,
    fork: Optional[str] = None,
    show_progress: Optional[bool] = None,
    log=print,
    stop: Optional[StopRequest] = None,
) -> Dict[str, Any]:
    """``run_training`` in the process group ``dist`` (a single process: no group)."""
    if not dist.is_main:
        log = _silent
    with agreement(dist):  # every rank checks; one rank's bad input stops them all, nothing written
        plan, parts = make_plan(dist, overrides, runs_dir, resume, fork, log, progress=show_progress is not False)
        if plan.finished is not None:
            return settle_finished(plan, dist, stop, log)
        hold_signals(stop)
    experiment = open_experiment(plan)
    trainer = start_trainer(experiment, plan, parts, show_progress, log, dist)
    try:
        return trainer.train(plan.config.epochs, start_epoch=trainer.epoch)
    finally:
        experiment.release()


def _silent(*_args: Any, **_kwargs: Any) -> None:
    """The log of ranks other than 0: rank 0 prints for the job."""

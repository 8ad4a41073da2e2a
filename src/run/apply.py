"""Apply a plan inside its opened experiment, as the lock holder: bring a finished run's
records up to date, report how a resumed run ended, keep a longer log, and load the
checkpoint the plan chose into the Trainer (a resume, or a fork with its new options)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

from ..config import RunConfig
from ..errors import WriteError
from ..training import state_keys as keys
from ..training.distributed import Distributed, solo
from ..training.experiment import ExperimentManager
from ..training.interrupts import StartupInterrupted, StopRequest
from ..training.resume import keep_longer_log, load_fork, settle_finished_records
from ..training.trainer import Trainer
from .build import Components, _prepare_trainer
from .plan import StartPlan, _read_config


def settle_finished(plan: StartPlan, dist: Distributed, stop: Optional[StopRequest], log) -> Dict[str, Any]:
    """A resume with nothing left to do: say so and bring its records up to date (rank 0)."""
    log(plan.finished)
    if stop is not None:
        stop.defer()  # the records may be rewritten: a signal must not tear a write
    if dist.is_main:
        with solo():  # rank 0 alone: the others are not waiting for its experiment
            settle_finished_records(plan.runs_dir, plan.resume, plan.payload, plan.config, log)
    return {"nothing_to_do": True, "message": plan.finished, "experiment_dir": str(Path(plan.runs_dir) / plan.resume)}


def hold_signals(stop: Optional[StopRequest]) -> None:
    """From here on files are written: a signal is noted, not obeyed mid-write."""
    if stop is not None:
        if stop.requested:  # noted during start-up, but its exception was lost (raised inside compile())
            raise StartupInterrupted(stop.signum)
        stop.defer()


def open_experiment(plan: StartPlan) -> ExperimentManager:
    """The new, forked or reopened experiment (locked); under torchrun rank 0 creates or
    reopens it and the others get a read-only view."""
    return ExperimentManager(
        plan.runs_dir,
        resume_exp=plan.resume or plan.into,
        fork_exp=plan.fork if plan.into is None else None,
        config=plan.config.to_dict(),
        parent=plan.found,
    )


def start_trainer(
    experiment: ExperimentManager,
    plan: StartPlan,
    parts: Components,
    show_progress: Optional[bool],
    log,
    dist: Distributed,
) -> Trainer:
    """The Trainer, started as the plan says; on any failure the experiment records it
    (``interrupted`` or ``failed``) and is released before the error goes on."""
    try:
        report_reopened(experiment, plan.payload, log, dist)
        trainer = _prepare_trainer(experiment, plan.config, parts, show_progress, dist)
        _load_start(trainer, experiment, plan, log)
        return trainer
    except BaseException as exc:
        try:
            if isinstance(exc, (KeyboardInterrupt, StartupInterrupted)):
                experiment.write_status("interrupted", epoch=0)
            else:
                experiment.write_status("failed", error=f"{type(exc).__name__}: {exc}")
        except (WriteError, OSError):
            pass
        experiment.release()
        raise


def report_reopened(
    experiment: ExperimentManager, payload: Optional[Dict[str, Any]], log, dist: Optional[Distributed] = None
) -> None:
    """In a reopened experiment: report how the run ended, keep a log that records more
    than the checkpoint (rank 0)."""
    if experiment.resume_exp is None:
        return
    previous = experiment.read_status()
    if previous and previous["state"] == "damaged":
        log(f"Warning: {previous['error']} It is rewritten now.")
    elif previous:
        detail = previous.get("error") or previous.get("signal") or ""
        log(
            f"{experiment.name} was last {previous['state']}"
            + (f" ({detail})" if detail else "")
            + (" - the process ended without recording why." if previous["state"] == "killed" else ".")
        )
    if dist is None or dist.is_main:
        keep_longer_log(experiment, payload, log)


def _load_start(trainer: Trainer, experiment: ExperimentManager, plan: StartPlan, log) -> None:
    """Load the plan's checkpoint: a resume's whole state, or a fork's with its new options."""
    payload, found = plan.payload, plan.found
    if payload is not None and plan.resume is not None:
        trainer.load_state_dict(payload)
        log(f"Resuming {experiment.name} from {found.path.name} at epoch {trainer.epoch}, step {trainer.global_step}.")
    elif payload is not None:
        # A checkpoint written from Python holds no config: the parent's config.json
        # describes it (never the fork's own, which would hide a changed optimizer).
        parent_config = (
            RunConfig.from_dict(payload[keys.CONFIG])
            if payload.get(keys.CONFIG)
            else _read_config(plan.runs_dir, plan.fork, purpose="fork")
        )
        load_fork(trainer, payload, parent_config, plan.config, dict(plan.overrides))
        log(f"Forked {plan.fork} (epoch {payload[keys.EPOCH]}, {found.path.name}) into {experiment.name}.")
    elif plan.resume is not None:
        log(f"Resuming {experiment.name}: no checkpoint was saved yet, starting from epoch 0.")
    else:
        log(f"Experiment: {experiment.experiment_dir}")

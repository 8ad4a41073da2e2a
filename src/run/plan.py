"""The start plan of a run: every check a start makes, and every refusal, before anything
is written (``make_plan``).

The plan reads the runs directory, the configuration files and the checkpoint to start
from, builds the data and model (they are checked against the checkpoint, and a model
that cannot take the data is refused), and returns a read-only ``StartPlan`` saying what
the run will do: a new run, a resume or a fork, with which merged configuration, from
which checkpoint. Nothing under the runs directory is created or changed here; lines are
printed through ``log`` in the order the checks make them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Tuple

from ..config import (
    RECORDED_KEYS,
    RESUME_MUTABLE_KEYS,
    ConfigError,
    RunConfig,
    same_data_options,
)
from ..models import inherit_model_version, new_model_options
from ..plugins import check_resume_imports, merge_imports, verify_plugins
from ..run_names import check_name_free, resolve_experiment
from ..training import state_keys as keys
from ..training.protocols import DescribedData, augmentation_policy
from ..training.trainer_state import check_format
from ..training.checkpoint import CheckpointError, LoadedCheckpoint
from ..training.distributed import Distributed
from ..training.experiment import (
    CHECKPOINTS_DIR,
    CONFIG_FILE,
    ExperimentError,
    existing_experiment_dir,
    read_experiment_config,
    refuse_directories_as_files,
    refuse_if_busy,
)
from ..training.resume import (
    check_compatible,
    check_same_data,
    check_schedule_extension,
    finished_message,
    fork_epochs,
    latest_valid_checkpoint,
    recorded_progress,
    unsaved_fork,
)
from ..training.tb_logger import check_tensorboard, require_tensorboard
from .build import Components, build_checked


@dataclass(frozen=True)
class StartPlan:
    """What a start will do, decided read-only.

    ``kind`` is ``"new"``, ``"resume"`` or ``"fork"``; ``into`` names a fork that saved no
    checkpoint of its own and starts again from its parent (``fork``) in place;
    ``overrides`` are the options given (for such a fork, its own differences from the
    parent); ``found`` the checkpoint to start from; ``finished`` the message of a resume
    with nothing left to do; ``notes`` the lines the plan printed."""

    kind: str
    runs_dir: str
    config: RunConfig
    overrides: Mapping[str, Any]
    resume: Optional[str] = None
    fork: Optional[str] = None
    into: Optional[str] = None
    found: Optional[LoadedCheckpoint] = None
    finished: Optional[str] = None
    notes: Tuple[str, ...] = ()

    @property
    def payload(self) -> Optional[Dict[str, Any]]:
        """The checkpoint's contents (None for a new run, or a run with no checkpoint yet)."""
        return self.found.payload if self.found is not None else None

    @property
    def source(self) -> Optional[str]:
        """The experiment whose checkpoint the run starts from."""
        return self.resume or self.fork


class _Request(NamedTuple):
    """The start as resolved before any data is read."""

    overrides: Dict[str, Any]
    resume: Optional[str]
    fork: Optional[str]
    into: Optional[str]
    lineage: Optional[Dict[str, Any]]
    config: RunConfig


def make_plan(
    dist: Distributed,
    overrides: Dict[str, Any],
    runs_dir: str = "runs",
    resume: Optional[str] = None,
    fork: Optional[str] = None,
    log=print,
    progress: bool = True,
) -> Tuple[StartPlan, Components]:
    """The plan of a start and the components it built, or the refusal of a bad one
    (``ConfigError``, ``ExperimentError``, ``CheckpointError``, ``DataError``: nothing written)."""
    notes: List[str] = []

    def note(line: str) -> None:
        notes.append(line)
        log(line)

    request = _resolve_request(dist, dict(overrides), runs_dir, resume, fork, note)
    parts = build_checked(request.config, progress, log)
    config, fingerprint = _with_data(request, parts)
    found = _choose_checkpoint(request, runs_dir, note)
    if found is not None and found.payload is not None:
        _check_checkpoint(request, found, config, parts, fingerprint, dist, runs_dir, note)
    kind = "resume" if request.resume is not None else "fork" if request.fork is not None else "new"
    plan = StartPlan(kind, runs_dir, config, request.overrides, request.resume, request.fork, request.into, found)
    return _decide_length(plan, dist, notes), parts


def _resolve_request(
    dist: Distributed, overrides: Dict[str, Any], runs_dir: str, resume: Optional[str], fork: Optional[str], note
) -> _Request:
    """Names, locks and the merged configuration, before any data is read."""
    check_runs_dir(runs_dir, must_exist=resume is not None or fork is not None)
    # A run's --name stands for its directory (read-only: config.json files only).
    resume, fork = (resolve_experiment(runs_dir, r, ExperimentError) for r in (resume, fork))
    if resume is not None or fork is not None:
        existing_experiment_dir(Path(runs_dir), resume or fork)
    # A running experiment is refused before anything is loaded (or judged finished). Only
    # rank 0 takes the lock, so only rank 0 looks: another rank checking later would find
    # rank 0's own lock (it settles a finished run's records inside the agreement block).
    if resume is not None and dist.is_main:
        refuse_if_busy(Path(runs_dir) / resume)
    into = None  # a fork that saved no checkpoint of its own (a full disk, a kill) restarts from its parent, in place
    lineage = unsaved_fork(Path(runs_dir), resume) if resume is not None else None
    if lineage is not None:
        own = resolve_config(overrides, runs_dir, resume, None).to_dict()
        parent_config = _read_config(runs_dir, lineage["parent"], purpose="fork").to_dict()
        overrides = {k: v for k, v in own.items() if parent_config.get(k) != v or k in ("name", "notes")}
        into, resume, fork = resume, None, lineage["parent"]
        note(
            f"{into} is a fork of {fork} that saved no checkpoint of its own; it starts again from {fork}'s checkpoint."
        )
    config = resolve_config(overrides, runs_dir, resume, fork)
    if dist.is_main:  # the rank that writes the events
        reopened = resume or into
        check_tensorboard(config, overrides, Path(runs_dir) / reopened if reopened is not None else None)
    if resume is None:  # a new run (or fork) may not take a name another run holds
        check_name_free(runs_dir, config.name, ConfigError, exclude=into)
    return _Request(overrides, resume, fork, into, lineage, config)


def _with_data(request: _Request, parts: Components) -> Tuple[RunConfig, Optional[Dict[str, Any]]]:
    """The configuration with the data set's recorded policy and fingerprint, and that fingerprint."""
    config = request.config
    if (
        config.augmentation is None
        and request.resume is None
        and request.fork is None
        and isinstance(augmentation_policy(parts.dataset), str)
    ):
        # A new run records the policy it uses, so a resume may restate it with --augment.
        config = config.replace(augmentation=augmentation_policy(parts.dataset))
    fingerprint = parts.dataset.fingerprint() if isinstance(parts.dataset, DescribedData) else None
    if request.resume is not None:
        check_same_data(config.data_fingerprint, fingerprint, request.resume, config.data_dir)
    return config.replace(data_fingerprint=fingerprint or config.data_fingerprint), fingerprint


def _choose_checkpoint(request: _Request, runs_dir: str, note) -> Optional[LoadedCheckpoint]:
    """The newest valid checkpoint of the source experiment (None for a new run); refused
    when a fork has nothing to start from or a run lost the checkpoints of its progress."""
    source, fork, into, lineage = request.resume or request.fork, request.fork, request.into, request.lineage
    if source is None:
        return None
    source_dir = existing_experiment_dir(Path(runs_dir), source)
    found = latest_valid_checkpoint(source_dir / CHECKPOINTS_DIR, source, note)
    if found.payload is None and fork is not None:
        raise CheckpointError(f"Experiment {fork} has no checkpoint yet; there is nothing to fork from.")
    if into is not None and found.entry["sha256"] != lineage["sha256"]:
        raise CheckpointError(
            f"{into} was forked from a checkpoint of {fork} (sha256 {lineage['sha256'][:12]}) that is no longer "
            f"{fork}'s newest, and saved none of its own; nothing was changed. Fork again: python train.py --fork {fork}."
        )
    if found.payload is None:
        progress, where = recorded_progress(source_dir)
        if progress > 0:
            raise CheckpointError(
                f"Experiment {request.resume} records {progress} finished epoch(s) in {where} but no checkpoint holds "
                f"them ({source_dir / CHECKPOINTS_DIR} has none); nothing was changed. Restore the checkpoints, "
                "or start a new run with the same options."
            )
    return found


def _check_checkpoint(
    request: _Request,
    found: LoadedCheckpoint,
    config: RunConfig,
    parts: Components,
    fingerprint: Optional[Dict[str, Any]],
    dist: Distributed,
    runs_dir: str,
    note,
) -> None:
    """Refuse a checkpoint that does not fit the run: another model; for a resume, another
    process count mid-epoch, another configuration than config.json's, or other data."""
    payload, resume = found.payload, request.resume
    check_format(payload, str(found.path))  # before anything is written (a newer exptrain's checkpoint)
    check_compatible(payload, parts.model, str(found.path))
    if resume is None:
        return
    saved_world = int(payload.get(keys.WORLD_SIZE) or 1)
    if saved_world != dist.world_size:
        if payload.get(keys.MID_EPOCH):
            raise CheckpointError(
                f"{found.path} was saved mid-epoch by a run of {saved_world} process(es) and this run "
                f"has {dist.world_size}; its data position counts batches of {saved_world} processes. "
                f"Resume with {saved_world} (torchrun --nproc_per_node={saved_world} ... --resume {resume}), "
                f"or --fork {resume} to go on with {dist.world_size} from the start of that epoch."
            )
        note(
            f"Note: {resume} was trained by {saved_world} process(es) and continues with "
            f"{dist.world_size}: the global batch changes, so the result is not bit-identical to "
            f"an uninterrupted run of {saved_world}."
        )
    saved_config = payload.get(keys.CONFIG) or {}
    frozen = sorted(
        k
        for k in saved_config
        if k not in RESUME_MUTABLE_KEYS
        and k not in RECORDED_KEYS
        and saved_config[k] != getattr(config, k, None)
        and not (k == "dataset_options" and same_data_options(saved_config[k], config.dataset_options))
    )
    if frozen:
        raise CheckpointError(
            f"{found.path} was written with a different configuration ({', '.join(frozen)}) "
            f"than {runs_dir}/{resume}/{CONFIG_FILE}; restore the config file or fork instead."
        )
    check_same_data(saved_config.get("data_fingerprint"), fingerprint, resume, config.data_dir)


def _decide_length(plan: StartPlan, dist: Distributed, notes: List[str]) -> StartPlan:
    """The plan with what is left to do: a finished resume's message, or the epochs a
    resume may extend its schedule to and a fork trains to; its notes attached."""
    payload, config = plan.payload, plan.config
    if plan.resume is not None and payload is not None:
        finished = finished_message(payload, config, plan.resume)
        if finished is not None:
            return replace(plan, finished=finished, notes=tuple(notes))
        check_schedule_extension(payload, config, plan.resume)
    if plan.fork is not None:
        config = fork_epochs(payload, config, plan.fork, plan.overrides)
    if config.tensorboard and dist.is_main:  # a resume's check waits for the finished-run answer
        require_tensorboard()
    if plan.resume or plan.into:
        _check_reopened(existing_experiment_dir(Path(plan.runs_dir), plan.resume or plan.into))
    return replace(plan, config=config, notes=tuple(notes))


def _check_reopened(directory: Path) -> None:
    """The experiment a resume reopens can take its files: refused as opening it would be."""
    checkpoints = directory / CHECKPOINTS_DIR
    if checkpoints.exists() and not checkpoints.is_dir():
        raise ExperimentError(f"{checkpoints} is a file, not a directory; move it away and resume again.")
    refuse_directories_as_files(directory)


# -- the configuration ----------------------------------------------------------------------


def _read_config(runs_dir: str, name: str, purpose: str = "resume") -> RunConfig:
    """The saved configuration of experiment ``name`` (name validated, nothing written),
    after importing its plug-ins again (they define its model and data set names):
    ``purpose`` ``"resume"`` refuses a changed plug-in, ``"fork"`` records its new hash."""
    directory = existing_experiment_dir(Path(runs_dir), name)
    config = RunConfig.from_dict(read_experiment_config(directory), source=str(directory / CONFIG_FILE))
    config.imports = verify_plugins(config.imports, purpose, experiment=name, source=str(directory / CONFIG_FILE))
    try:
        return config.validate()
    except ConfigError as exc:
        raise ConfigError(f"{directory / CONFIG_FILE} is not a usable configuration: {exc}") from None


def resolve_config(overrides: Dict[str, Any], runs_dir: str, resume: Optional[str], fork: Optional[str]) -> RunConfig:
    """The run's configuration: defaults + ``overrides`` for a new run; the saved config
    for ``resume`` (only keys in ``RESUME_MUTABLE_KEYS`` may change); the parent's config
    + ``overrides`` for ``fork``."""
    if resume is not None and fork is not None:
        raise ExperimentError("Give either --resume or --fork, not both.")
    if resume is not None:
        return _resume_config(overrides, runs_dir, resume)
    if fork is not None:
        parent = _read_config(runs_dir, fork, purpose="fork")
        overrides = _same_model_version(parent, overrides)
        if "imports" in overrides:  # a fork may add plug-ins to its parent's
            overrides = {**overrides, "imports": merge_imports(parent.imports, overrides["imports"])}
        # A fork is a new run: it takes the parent's options but not its label (names are unique).
        config = parent.replace(**{"name": None, "notes": None, **overrides}).validate()
        if config.model != parent.model:  # a fork to another model: built new, so the newest version
            config.model_options = new_model_options(config.model, config.model_options)
        return config
    config = RunConfig(**overrides).validate()
    config.model_options = new_model_options(config.model, config.model_options)  # recorded: resume rebuilds it
    return config


def _resume_config(overrides: Dict[str, Any], runs_dir: str, resume: str) -> RunConfig:
    """The saved configuration of ``resume`` with the given options that a resume may change."""
    saved = _read_config(runs_dir, resume)
    overrides = _same_model_version(saved, overrides)
    if "imports" in overrides:  # the run's own plug-ins may be named again, no others
        overrides = dict(overrides)
        check_resume_imports(saved.imports, overrides.pop("imports"), resume)
    if "dataset_options" in overrides:  # given options add to (or move) the run's own
        overrides = {**overrides, "dataset_options": {**saved.dataset_options, **overrides["dataset_options"]}}
    changed = {k: v for k, v in overrides.items() if getattr(saved, k) != v}
    frozen = sorted(
        k
        for k in changed
        if k not in RESUME_MUTABLE_KEYS
        and not (k == "dataset_options" and same_data_options(saved.dataset_options, changed[k]))
    )
    if frozen:

        def shown(k):
            return (
                "the data set's default"
                if k == "augmentation" and saved.augmentation is None
                else repr(getattr(saved, k))
            )

        details = ", ".join(f"{k} (run has {shown(k)}, given {changed[k]!r})" for k in frozen)
        raise ConfigError(
            f"--resume {resume} cannot change {details}; resume with the same values, "
            f"or branch with --fork {resume} to use new ones."
        )
    return saved.replace(**changed).validate()


def _same_model_version(previous: RunConfig, overrides: Dict[str, Any]) -> Dict[str, Any]:
    """``--model-option`` values given to a resume or fork of the same model are taken key
    by key over the run's own (restating one option keeps the others); the model's recorded
    version is kept unless one is given."""
    given = overrides.get("model_options")
    if not isinstance(given, dict) or overrides.get("model", previous.model) != previous.model:
        return overrides
    merged = {**previous.model_options, **given}
    return {**overrides, "model_options": inherit_model_version(previous.model_options, merged)}


# -- the runs directory ---------------------------------------------------------------------


def check_runs_dir(runs_dir: str, must_exist: bool) -> Path:
    """Refuse a runs directory that is a file, unreachable or not writable, before any
    data is loaded (``ExperimentError``, exit code 2)."""
    if not isinstance(runs_dir, (str, os.PathLike)) or not str(runs_dir).strip():
        raise ExperimentError(f"--runs-dir must name a directory, got {runs_dir!r}.")
    try:
        return _check_runs_dir(runs_dir, must_exist)
    except OSError as exc:  # a name too long, an I/O error while looking: the path cannot be used
        raise ExperimentError(
            f"--runs-dir {runs_dir} cannot be used ({exc.strerror or exc}); pass a directory you can write to."
        ) from None


def _check_runs_dir(runs_dir: str, must_exist: bool) -> Path:
    path = Path(runs_dir)
    if path.exists() and not path.is_dir():
        raise ExperimentError(f"--runs-dir {runs_dir} is a file, not a directory; pass a directory.")
    if must_exist and not path.is_dir():
        return path  # existing_experiment_dir names what is missing
    probe = path
    while not probe.exists():
        if probe.is_symlink():
            raise ExperimentError(
                f"--runs-dir {runs_dir} goes through a broken symbolic link ({probe}); fix or remove it."
            )
        probe = probe.parent
    if not probe.is_dir():
        raise ExperimentError(f"--runs-dir {runs_dir} cannot be created: {probe} is a file, not a directory.")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ExperimentError(
            f"--runs-dir {runs_dir} is not writable ({probe} is read-only or not permitted); "
            "pass a directory you can write to."
        )
    return path

"""A whole run from a configuration: new, ``--resume`` or ``--fork``.

Order matters for safety: the configuration is resolved and validated, the data and
model are built, and the checkpoint to start from is chosen and verified *before* a new
experiment directory is created or an existing one is written to. Bad input therefore
never leaves a half-made experiment or touches an existing one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, NamedTuple, Optional

import torch
import torch.nn as nn

from ..config import RECORDED_KEYS, RESUME_MUTABLE_KEYS, ConfigError, RunConfig, same_data_options, trainer_options
from ..datasets import DatasetRegistry
from ..errors import WriteError
from ..models import (
    ModelRegistry, inherit_model_version, model_data_arguments, new_model_options, recorded_model_options,
)
from ..plugins import check_resume_imports, merge_imports, verify_plugins
from ..run_names import check_name_free, resolve_experiment
from ..utils import get_device, seed_everything
from . import state_keys as keys
from .checkpoint import CheckpointError, CheckpointManager
from .experiment import (
    CHECKPOINTS_DIR, CONFIG_FILE, ExperimentError, ExperimentManager, existing_experiment_dir,
    read_experiment_config, refuse_if_busy,
)
from .interrupts import StartupInterrupted, StopRequest
from .evaluation import check_tta_flip
from .fast_path import resolve_fast_path
from .optim import build_optimizer, build_scheduler
from .schedules import optimizer_steps_per_epoch
from .tb_logger import TensorBoardLogger, check_tensorboard, require_tensorboard
from .trainer import Trainer, loader_length
from .distributed import Distributed, agreement, solo
from .resume import (
    latest_valid_checkpoint, check_compatible, check_same_data, recorded_progress, unsaved_fork,
    finished_message, settle_finished_records, check_schedule_extension, fork_epochs, keep_longer_log, load_fork,
)


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
        saved = _read_config(runs_dir, resume)
        overrides = _same_model_version(saved, overrides)
        if "imports" in overrides:  # the run's own plug-ins may be named again, no others
            overrides = dict(overrides)
            check_resume_imports(saved.imports, overrides.pop("imports"), resume)
        if "dataset_options" in overrides:  # given options add to (or move) the run's own
            overrides = {**overrides, "dataset_options": {**saved.dataset_options, **overrides["dataset_options"]}}
        changed = {k: v for k, v in overrides.items() if getattr(saved, k) != v}
        frozen = sorted(k for k in changed if k not in RESUME_MUTABLE_KEYS and not (
            k == "dataset_options" and same_data_options(saved.dataset_options, changed[k])))
        if frozen:
            shown = lambda k: "the data set's default" if k == "augmentation" and saved.augmentation is None \
                else repr(getattr(saved, k))  # noqa: E731
            details = ", ".join(f"{k} (run has {shown(k)}, given {changed[k]!r})" for k in frozen)
            raise ConfigError(
                f"--resume {resume} cannot change {details}; resume with the same values, "
                f"or branch with --fork {resume} to use new ones."
            )
        return saved.replace(**changed).validate()
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


def _same_model_version(previous: RunConfig, overrides: Dict[str, Any]) -> Dict[str, Any]:
    """``--model-option`` values given to a resume or fork of the same model are taken key
    by key over the run's own (restating one option keeps the others); the model's recorded
    version is kept unless one is given."""
    given = overrides.get("model_options")
    if not isinstance(given, dict) or overrides.get("model", previous.model) != previous.model:
        return overrides
    merged = {**previous.model_options, **given}
    return {**overrides, "model_options": inherit_model_version(previous.model_options, merged)}


class Components(NamedTuple):
    dataset: Any
    model: nn.Module
    device: Any
    train_loader: Any
    val_loader: Any
    optimizer: Any
    scheduler: Any
    fast_path: Any = None  # FastPath: amp and channels-last as resolved for this model and device


def build_components(config: RunConfig, progress: bool = True) -> Components:
    """Seeded dataset, model (on its device), loaders, optimizer and scheduler."""
    seed_everything(config.seed)
    device = get_device(config.device)
    import inspect

    chosen = {"augmentation": config.augmentation} if config.augmentation is not None else {}
    parameters = inspect.signature(DatasetRegistry.get(config.dataset)).parameters
    if chosen and "augmentation" not in parameters and \
            not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        chosen = {}  # a data set without the option: fine if its own policy is the one recorded (checked below)
    dataset = _create(DatasetRegistry, config.dataset, "--dataset-option", config.dataset_options,
                      optional={"progress": progress}, chosen=chosen,
                      data_dir=config.data_dir, augment=config.augment, seed=config.seed)
    policy = getattr(dataset, "augmentation_policy", None)
    if config.augmentation is not None and not chosen and policy != config.augmentation:
        raise ConfigError(f"dataset {config.dataset!r} does not take --augment (its policy is {policy!r}); "
                          "leave --augment out for this data set.")
    model = _create(ModelRegistry, config.model, "--model-option", recorded_model_options(config.model, config.model_options),
                    **model_data_arguments(config.model, dataset)).to(device)
    if config.tta_flip:
        check_tta_flip(dataset, config.dataset)
    train_loader, val_loader = dataset.get_dataloaders(batch_size=config.batch_size, device=device)
    optimizer = build_optimizer(config.optimizer, model.parameters(), config.lr, config.weight_decay)
    scheduler = build_scheduler(config.scheduler, optimizer, config.epochs,
                                optimizer_steps_per_epoch(loader_length(train_loader), config.grad_accum))
    fast_path = resolve_fast_path(config.amp, config.channels_last, model, device)
    return Components(dataset, model, device, train_loader, val_loader, optimizer, scheduler, fast_path)


def _create(registry, name: str, flag: str, options: Dict[str, Any],
            optional: Optional[Dict[str, Any]] = None, chosen: Optional[Dict[str, Any]] = None, **fixed: Any):
    """``registry.create(name, **fixed, **options)`` with a clear error for a bad option;
    ``optional`` arguments (a download progress bar, say) go only to factories taking them;
    ``chosen`` ones (``--augment``) are an error for a factory that does not take them."""
    import inspect

    factory = registry.get(name)
    accepted = inspect.signature(factory).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    for key, value in (chosen or {}).items():
        if key not in accepted and not takes_any:
            flag_of = {"augmentation": "--augment"}.get(key, key)
            raise ConfigError(f"{registry.kind} {name!r} does not take {flag_of}; leave it out for this data set.")
        fixed[key] = value
    fixed.update({k: v for k, v in (optional or {}).items() if k in accepted and k not in options})
    unknown = sorted(set(options) - set(accepted))
    if "image_size" in unknown and registry.kind == "dataset":
        raise ConfigError(f"--image-size is for image folders (--dataset PATH); {registry.kind} {name!r} has images "
                          "of a fixed size, so leave it out.")
    if unknown:
        choices = ", ".join(k for k in accepted if k not in fixed and k not in ("self", "kwargs", "_ignored"))
        raise ConfigError(f"{registry.kind} {name!r} has no option {', '.join(unknown)} ({flag}); its options: {choices}.")
    clash = sorted(set(options) & set(fixed))
    if clash:  # e.g. --dataset-option seed=5: the run passes seed itself
        set_by = {"seed": "--seed", "data_dir": "--data-dir", "augment": "--no-augment", "augmentation": "--augment"}
        how = ", ".join(f"{k} from {set_by[k]}" if k in set_by else f"{k} from the data" for k in clash)
        raise ConfigError(f"{flag} {', '.join(clash)} cannot be given for {registry.kind} {name!r}: the run sets {how}.")
    try:
        return registry.create(name, **fixed, **options)
    except TypeError as exc:
        raise ConfigError(f"Bad {flag} value for {registry.kind} {name!r}: {exc}.") from None


def check_runs_dir(runs_dir: str, must_exist: bool) -> Path:
    """Refuse a runs directory that is a file, unreachable or not writable, before any
    data is loaded (``ExperimentError``, exit code 2)."""
    if not isinstance(runs_dir, (str, os.PathLike)) or not str(runs_dir).strip():
        raise ExperimentError(f"--runs-dir must name a directory, got {runs_dir!r}.")
    try:
        return _check_runs_dir(runs_dir, must_exist)
    except OSError as exc:  # a name too long, an I/O error while looking: the path cannot be used
        raise ExperimentError(f"--runs-dir {runs_dir} cannot be used ({exc.strerror or exc}); "
                              "pass a directory you can write to.") from None


def _check_runs_dir(runs_dir: str, must_exist: bool) -> Path:
    path = Path(runs_dir)
    if path.exists() and not path.is_dir():
        raise ExperimentError(f"--runs-dir {runs_dir} is a file, not a directory; pass a directory.")
    if must_exist and not path.is_dir():
        return path  # existing_experiment_dir names what is missing
    probe = path
    while not probe.exists():
        if probe.is_symlink():
            raise ExperimentError(f"--runs-dir {runs_dir} goes through a broken symbolic link ({probe}); fix or remove it.")
        probe = probe.parent
    if not probe.is_dir():
        raise ExperimentError(f"--runs-dir {runs_dir} cannot be created: {probe} is a file, not a directory.")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ExperimentError(f"--runs-dir {runs_dir} is not writable ({probe} is read-only or not permitted); "
                              "pass a directory you can write to.")
    return path


def dry_forward(model: nn.Module, val_loader, config: RunConfig, num_classes: int) -> None:
    """One forward pass on two validation images (eval mode, no gradients, no RNG
    draws), so a model that cannot take the data is found before anything is written."""
    images, _ = next(iter(val_loader))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            outputs = model(images[:2])
    except Exception as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(
            f"Model {config.model!r} cannot take the inputs of {config.dataset!r} (shape {tuple(images.shape[1:])}): "
            f"{first_line}. Choose --model-option values or a model that fit this data."
        ) from None
    finally:
        model.train(was_training)
    if not torch.is_tensor(outputs) or tuple(outputs.shape) != (images[:2].shape[0], num_classes):
        shape = tuple(outputs.shape) if torch.is_tensor(outputs) else type(outputs).__name__
        raise ConfigError(f"Model {config.model!r} returns outputs of shape {shape} for 2 images; "
                          f"expected (2, {num_classes}) for the {num_classes} classes of {config.dataset!r}.")


def _silent(*_args: Any, **_kwargs: Any) -> None:
    """The log of ranks other than 0: rank 0 prints for the job."""


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
        check_runs_dir(runs_dir, must_exist=resume is not None or fork is not None)
        # A run's --name stands for its directory (read-only: config.json files only).
        resume, fork = (resolve_experiment(runs_dir, r, ExperimentError) for r in (resume, fork))
        if resume is not None or fork is not None:
            existing_experiment_dir(Path(runs_dir), resume or fork)
        # A running experiment is refused before anything is loaded (or judged finished). Only
        # rank 0 takes the lock, so only rank 0 looks: another rank checking later would find
        # rank 0's own lock (it settles a finished run's records inside this block).
        if resume is not None and dist.is_main:
            refuse_if_busy(Path(runs_dir) / resume)
        into = None  # a fork that saved no checkpoint of its own (a full disk, a kill) restarts from its parent, in place
        lineage = unsaved_fork(Path(runs_dir), resume) if resume is not None else None
        if lineage is not None:
            own = resolve_config(overrides, runs_dir, resume, None).to_dict()
            parent_config = _read_config(runs_dir, lineage["parent"], purpose="fork").to_dict()
            overrides = {k: v for k, v in own.items() if parent_config.get(k) != v or k in ("name", "notes")}
            into, resume, fork = resume, None, lineage["parent"]
            log(f"{into} is a fork of {fork} that saved no checkpoint of its own; it starts again from {fork}'s checkpoint.")
        config = resolve_config(overrides, runs_dir, resume, fork)
        if dist.is_main:  # the rank that writes the events
            reopened = resume or into
            check_tensorboard(config, overrides, Path(runs_dir) / reopened if reopened is not None else None)
        if resume is None:  # a new run (or fork) may not take a name another run holds
            check_name_free(runs_dir, config.name, ConfigError, exclude=into)
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        parts = build_components(config, progress=show_progress is not False)
        log(f"Data: {parts.dataset.describe()}")
        threads = f", {torch.get_num_threads()} CPU thread{'s' if torch.get_num_threads() > 1 else ''}" \
            if parts.device.type == "cpu" else ""
        log(f"Model: {config.model} ({sum(p.numel() for p in parts.model.parameters()):,} parameters) on {parts.device}"
            f"{threads}, {parts.fast_path.description}")
        dry_forward(parts.model, parts.val_loader, config, parts.dataset.num_classes)
        if config.augmentation is None and resume is None and fork is None and \
                isinstance(getattr(parts.dataset, "augmentation_policy", None), str):
            # A new run records the policy it uses, so a resume may restate it with --augment.
            config = config.replace(augmentation=parts.dataset.augmentation_policy)
        fingerprint = parts.dataset.fingerprint() if hasattr(parts.dataset, "fingerprint") else None
        if resume is not None:
            check_same_data(config.data_fingerprint, fingerprint, resume, config.data_dir)
        config = config.replace(data_fingerprint=fingerprint or config.data_fingerprint)

        source = resume or fork
        found = None
        if source is not None:
            source_dir = existing_experiment_dir(Path(runs_dir), source)
            found = latest_valid_checkpoint(source_dir / CHECKPOINTS_DIR, source, log)
            payload = found.payload
            if payload is None and fork is not None:
                raise CheckpointError(f"Experiment {fork} has no checkpoint yet; there is nothing to fork from.")
            if into is not None and found.entry["sha256"] != lineage["sha256"]:
                raise CheckpointError(
                    f"{into} was forked from a checkpoint of {fork} (sha256 {lineage['sha256'][:12]}) that is no longer "
                    f"{fork}'s newest, and saved none of its own; nothing was changed. Fork again: python train.py --fork {fork}."
                )
            if payload is None:
                progress, where = recorded_progress(source_dir)
                if progress > 0:
                    raise CheckpointError(
                        f"Experiment {resume} records {progress} finished epoch(s) in {where} but no checkpoint holds them "
                        f"({source_dir / CHECKPOINTS_DIR} has none); nothing was changed. Restore the checkpoints, "
                        "or start a new run with the same options."
                    )
            else:
                check_compatible(payload, parts.model, str(found.path))
                saved_world = int(payload.get(keys.WORLD_SIZE) or 1)
                if resume is not None and saved_world != dist.world_size:
                    if payload.get(keys.MID_EPOCH):
                        raise CheckpointError(
                            f"{found.path} was saved mid-epoch by a run of {saved_world} process(es) and this run "
                            f"has {dist.world_size}; its data position counts batches of {saved_world} processes. "
                            f"Resume with {saved_world} (torchrun --nproc_per_node={saved_world} ... --resume {resume}), "
                            f"or --fork {resume} to go on with {dist.world_size} from the start of that epoch."
                        )
                    log(f"Note: {resume} was trained by {saved_world} process(es) and continues with "
                        f"{dist.world_size}: the global batch changes, so the result is not bit-identical to "
                        f"an uninterrupted run of {saved_world}.")
                if resume is not None:
                    saved_config = payload.get(keys.CONFIG) or {}
                    frozen = sorted(
                        k for k in saved_config
                        if k not in RESUME_MUTABLE_KEYS and k not in RECORDED_KEYS and saved_config[k] != getattr(config, k, None)
                        and not (k == "dataset_options" and same_data_options(saved_config[k], config.dataset_options))
                    )
                    if frozen:
                        raise CheckpointError(
                            f"{found.path} was written with a different configuration ({', '.join(frozen)}) "
                            f"than {runs_dir}/{resume}/{CONFIG_FILE}; restore the config file or fork instead."
                        )
                    check_same_data(saved_config.get("data_fingerprint"), fingerprint, resume, config.data_dir)
        payload = found.payload if found is not None else None

        if resume is not None and payload is not None:
            finished = finished_message(payload, config, resume)
            if finished is not None:
                log(finished)
                if stop is not None:
                    stop.defer()  # the records may be rewritten: a signal must not tear a write
                if dist.is_main:
                    with solo():  # rank 0 alone: the others are not waiting for its experiment
                        settle_finished_records(runs_dir, resume, payload, config, log)
                return {"nothing_to_do": True, "message": finished, "experiment_dir": str(Path(runs_dir) / resume)}
            check_schedule_extension(payload, config, resume)
        if fork is not None:
            config = fork_epochs(payload, config, fork, overrides)
        if config.tensorboard and dist.is_main:  # a resume's check waits for the finished-run answer
            require_tensorboard()

        if stop is not None:
            if stop.requested:  # noted during start-up, but its exception was lost (raised inside compile())
                raise StartupInterrupted(stop.signum)
            stop.defer()  # from here on files are written: a signal is noted, not obeyed mid-write
    # Under torchrun rank 0 creates or reopens it and the others get a read-only view.
    experiment = ExperimentManager(runs_dir, resume_exp=resume or into, fork_exp=fork if into is None else None,
                                   config=config.to_dict(), parent=found)
    try:
        trainer = _prepare_trainer(experiment, config, parts, show_progress, log, payload, dist)
        if payload is not None and resume is not None:
            trainer.load_state_dict(payload)
            log(f"Resuming {experiment.name} from {found.path.name} at epoch {trainer.epoch}, "
                f"step {trainer.global_step}.")
        elif payload is not None:
            # A checkpoint written from Python holds no config: the parent's config.json
            # describes it (never the fork's own, which would hide a changed optimizer).
            parent_config = (RunConfig.from_dict(payload[keys.CONFIG]) if payload.get(keys.CONFIG)
                             else _read_config(runs_dir, fork, purpose="fork"))
            load_fork(trainer, payload, parent_config, config, overrides)
            log(f"Forked {fork} (epoch {payload[keys.EPOCH]}, {found.path.name}) into {experiment.name}.")
        elif resume is not None:
            log(f"Resuming {experiment.name}: no checkpoint was saved yet, starting from epoch 0.")
        else:
            log(f"Experiment: {experiment.experiment_dir}")
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
    try:
        return trainer.train(config.epochs, start_epoch=trainer.epoch)
    finally:
        experiment.release()


def _prepare_trainer(experiment: ExperimentManager, config: RunConfig, parts: Components,
                     show_progress: Optional[bool], log, payload: Optional[Dict[str, Any]],
                     dist: Optional[Distributed] = None) -> Trainer:
    """Inside the (new or reopened, locked) experiment: report how a resumed run ended,
    keep a log that records more than the checkpoint, build the Trainer."""
    if experiment.resume_exp is not None:
        previous = experiment.read_status()
        if previous and previous["state"] == "damaged":
            log(f"Warning: {previous['error']} It is rewritten now.")
        elif previous:
            detail = previous.get("error") or previous.get("signal") or ""
            log(f"{experiment.name} was last {previous['state']}" + (f" ({detail})" if detail else "")
                + (" - the process ended without recording why." if previous["state"] == "killed" else "."))
        if dist is None or dist.is_main:
            keep_longer_log(experiment, payload, log)
    read_only = dist is not None and not dist.is_main  # only rank 0 writes
    return Trainer(
        parts.model, parts.train_loader, parts.val_loader, nn.CrossEntropyLoss(label_smoothing=config.label_smoothing),
        parts.optimizer, parts.device,
        experiment, checkpoint_manager=CheckpointManager(experiment.checkpoints_dir, config.save_frequency, config.keep_last,
                                                         read_only=read_only),
        scheduler=parts.scheduler, dataset=parts.dataset if config.reapply_transforms else None,
        config=config.to_dict(), show_progress=show_progress, amp=parts.fast_path.amp,
        channels_last=parts.fast_path.channels_last, distributed=dist, **trainer_options(config),
        tensorboard=TensorBoardLogger(experiment.tensorboard_dir, config.tensorboard_every)
        if config.tensorboard and not read_only else None,
    )


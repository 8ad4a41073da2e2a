"""The run configuration: one dataclass with defaults, validation and dict round-trips.

The resolved configuration is written to each experiment's ``config.json``; that file is
what ``--resume`` reads back, so a resumed run needs no other flags.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from .datasets import DatasetRegistry
from .datasets.transforms import POLICIES
from .errors import BadInputError, ConfigError  # noqa: F401 (ConfigError: re-exported, its old home)
from .models import ModelRegistry
from .plugins import check_records
from .run_names import name_problem, notes_problem

OPTIMIZERS = ("adamw", "adam", "sgd")
AMP_MODES = ("bf16", "fp16")
AMP_AUTO = "auto"  # the CPU fast path where measured (src/training/fast_path.py)
SCHEDULERS = ("none", "cosine", "step", "plateau", "onecycle")

# Keys a resumed run may change: they do not alter the numbers the run produces up to
# the point where it stopped (torch.compile may reorder float operations, but it is a
# speed switch a user must be able to turn off to resume on another machine; logging
# options only say what is written beside the run). Everything else must match, or the run is not a
# continuation (use --fork to branch with new values).
RESUME_MUTABLE_KEYS = frozenset(
    {"epochs", "patience", "save_frequency", "keep_last", "device", "data_dir", "compile", "checkpoint_interval",
     "notes", "threads", "tensorboard", "tensorboard_every"}
)
# Data set options that say where the data is or how it is read, not what it is: a resume
# may change them (a moved image folder, another cache); the data's fingerprint decides
# whether it is still the same data.
LOCATION_OPTIONS = frozenset({"root", "cache_dir", "workers", "progress", "memory_budget_mb", "download", "mirrors"})


def same_data_options(a: Dict[str, Any], b: Dict[str, Any]) -> bool:
    """Whether two ``dataset_options`` ask for the same data (location options aside)."""
    strip = lambda options: {k: v for k, v in (options or {}).items() if k not in LOCATION_OPTIONS}  # noqa: E731
    return strip(a) == strip(b)


# Recorded by the run, not chosen by the user: a resume compares it with the data it loads.
RECORDED_KEYS = frozenset({"data_fingerprint"})
# Keys whose default changed: a recorded configuration without them was made with the old one.
LEGACY_DEFAULTS = {"amp": None}
MAX_SEED = 2**63 - 1
DEFAULT_CHECKPOINT_INTERVAL = 300.0


@dataclass
class RunConfig:
    """Everything that defines a training run."""

    dataset: str = "mnist"
    model: str = "mynet"
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    optimizer: str = "adamw"
    scheduler: str = "none"
    patience: int = 0
    save_frequency: int = 10
    keep_last: int = 0
    seed: int = 42
    device: str = "auto"
    data_dir: Optional[str] = None
    augment: bool = True
    augmentation: Optional[str] = None  # a policy name; None: the data set's default
    reapply_transforms: bool = False
    amp: Optional[str] = AMP_AUTO  # None: float32; see LEGACY_DEFAULTS
    compile: bool = False
    channels_last: bool = False
    grad_accum: int = 1
    grad_clip: float = 0.0
    checkpoint_interval: float = DEFAULT_CHECKPOINT_INTERVAL
    # Recipe options (src/training/ema.py, schedules.py, evaluation.py); the defaults are
    # off, which is also how a config.json written before they existed resumes.
    label_smoothing: float = 0.0
    ema_decay: float = 0.0  # 0: no weight average
    warmup_epochs: int = 0
    tta_flip: bool = False
    # CPU threads per process (torch.set_num_threads); None: torch's own choice (one per
    # core). Recorded, so a resume uses the same count (results can depend on it).
    threads: Optional[int] = None
    dataset_options: Dict[str, Any] = field(default_factory=dict)
    model_options: Dict[str, Any] = field(default_factory=dict)
    data_fingerprint: Optional[Dict[str, Any]] = None
    # Plug-ins (train.py --import) as {"module", "path", "sha256"} records; see src/plugins.py.
    imports: List[Dict[str, str]] = field(default_factory=list)
    # A label (--name; unique per runs directory, fixed for the run) and free text (--notes; may change on resume).
    name: Optional[str] = None
    notes: Optional[str] = None
    # Logging (src/training/tb_logger.py): TensorBoard event files, the training loss every N steps.
    tensorboard: bool = False
    tensorboard_every: int = 50

    def validate(self) -> "RunConfig":
        """Check every value; returns ``self``.

        Raises:
            ConfigError: naming the first bad value and the accepted range or choices.
        """
        check_records(self.imports)  # before the names: a plug-in may define them
        for name in ("dataset", "model", "optimizer", "scheduler", "device"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"{name} must be a name (text), got {getattr(self, name)!r}.")
        if self.dataset not in DatasetRegistry:
            raise ConfigError(DatasetRegistry.unknown_message(self.dataset))
        if self.model not in ModelRegistry:
            raise ConfigError(ModelRegistry.unknown_message(self.model))
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not _is_int(value) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
        for name in ("patience", "save_frequency", "keep_last", "seed"):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                raise ConfigError(f"{name} must be a non-negative integer, got {value!r}.")
        if self.seed > MAX_SEED:
            raise ConfigError(f"seed must be between 0 and 2**63-1, got {self.seed!r}.")
        if not _is_number(self.lr) or not self.lr > 0:
            raise ConfigError(f"lr must be a positive finite number, got {self.lr!r}.")
        if not _is_number(self.weight_decay) or self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be a non-negative finite number, got {self.weight_decay!r}.")
        if not _is_number(self.checkpoint_interval) or self.checkpoint_interval < 0:
            raise ConfigError(f"checkpoint_interval must be a non-negative number of seconds (0 disables), "
                              f"got {self.checkpoint_interval!r}.")
        for name in ("augment", "reapply_transforms", "compile", "channels_last", "tta_flip", "tensorboard"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}.")
        for name in ("dataset_options", "model_options"):
            if not isinstance(getattr(self, name), dict):
                raise ConfigError(f"{name} must be a mapping of option names to values, got {getattr(self, name)!r}.")
            bad = [k for k, v in getattr(self, name).items() if not is_finite_value(v)]
            if bad:
                raise ConfigError(f"{name} {bad[0]}={getattr(self, name)[bad[0]]!r} is not finite; give a finite number.")
        if self.data_dir is not None and not isinstance(self.data_dir, str):
            raise ConfigError(f"data_dir must be a path (text), got {self.data_dir!r}.")
        if self.data_fingerprint is not None and not isinstance(self.data_fingerprint, dict):
            raise ConfigError(f"data_fingerprint must be a recorded fingerprint, got {self.data_fingerprint!r}.")
        if self.threads is not None and (not isinstance(self.threads, int) or isinstance(self.threads, bool)
                                         or not 1 <= self.threads <= 1024):
            raise ConfigError(f"threads must be a whole number of CPU threads from 1 to 1024 (omit it for torch's "
                              f"default, one per core), got {self.threads!r}.")
        if self.augmentation is not None:
            if not isinstance(self.augmentation, str) or self.augmentation not in POLICIES:
                raise ConfigError(f"Unknown augmentation policy {self.augmentation!r}; "
                                  f"choose one of: {', '.join(POLICIES)}.")
        if self.amp not in (None, AMP_AUTO, *AMP_MODES):
            raise ConfigError(f"Unknown AMP mode {self.amp!r}; choose one of: {AMP_AUTO}, {', '.join(AMP_MODES)} "
                              "(or off).")
        if not _is_int(self.grad_accum) or self.grad_accum < 1:
            raise ConfigError(f"grad_accum must be a positive integer, got {self.grad_accum!r}.")
        if not _is_number(self.grad_clip) or self.grad_clip < 0:
            raise ConfigError(f"grad_clip must be a non-negative finite number (0 disables), got {self.grad_clip!r}.")
        if not _is_number(self.label_smoothing) or not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"label_smoothing must be a number from 0 to below 1 (e.g. 0.1; 0 disables), "
                              f"got {self.label_smoothing!r}.")
        if not _is_number(self.ema_decay) or not 0 <= self.ema_decay < 1:
            raise ConfigError(f"ema_decay (--ema) must be a number between 0 and 1, e.g. 0.999 (0 disables), "
                              f"got {self.ema_decay!r}.")
        if not _is_int(self.tensorboard_every) or self.tensorboard_every < 1:
            raise ConfigError(f"tensorboard_every (--tensorboard-every) must be a positive whole number of steps, "
                              f"e.g. 50, got {self.tensorboard_every!r}.")
        if not _is_int(self.warmup_epochs) or self.warmup_epochs < 0:
            raise ConfigError(f"warmup_epochs must be a non-negative integer, got {self.warmup_epochs!r}.")
        if self.warmup_epochs > self.epochs:
            raise ConfigError(f"warmup_epochs ({self.warmup_epochs}) is longer than the run ({self.epochs} epochs); "
                              "give at most --epochs.")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"Unknown optimizer {self.optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}.")
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"Unknown scheduler {self.scheduler!r}; choose one of: {', '.join(SCHEDULERS)}.")
        problem = (self.name is not None and name_problem(self.name)) or (self.notes is not None and notes_problem(self.notes))
        if problem:
            raise ConfigError(problem[0].upper() + problem[1:])
        return self

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Dict[str, Any], source: str = "the configuration") -> "RunConfig":
        """Build from a dict; unknown keys are an error (a typo must not be ignored)."""
        if not isinstance(values, dict):
            raise ConfigError(f"{source} must be an object of option names and values, got {values!r}.")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"Unknown configuration key(s) {', '.join(unknown)} in {source}; "
                              f"known keys: {', '.join(sorted(known))}.")
        return cls(**{**LEGACY_DEFAULTS, **values})

    def replace(self, **changes: Any) -> "RunConfig":
        return dataclasses.replace(self, **changes)


def dataset_from_path(dataset: Any, dataset_options: Dict[str, Any]) -> Optional[Tuple[str, Dict[str, Any]]]:
    """``--dataset PATH``: ``("imagefolder", options with root=absolute PATH)`` when
    ``dataset`` is not a registered name but reads as a path; ``None`` otherwise.

    Raises:
        ConfigError: the path does not exist or is not a directory.
    """
    import os

    if not isinstance(dataset, str) or dataset in DatasetRegistry:
        return None
    looks_like_path = os.sep in dataset or dataset.startswith(".") or dataset.startswith("~") or os.path.isdir(dataset)
    if not looks_like_path:
        return None
    path = os.path.abspath(os.path.expanduser(dataset))
    if not os.path.exists(path):
        raise ConfigError(f"--dataset {dataset}: no such directory; give a folder holding train/<class>/ and "
                          f"val/<class>/ images, or one of: {', '.join(DatasetRegistry.names())}.")
    if not os.path.isdir(path):
        raise ConfigError(f"--dataset {dataset} is a file; give a folder holding train/<class>/ and val/<class>/ images.")
    if "imagefolder" not in DatasetRegistry:
        raise ConfigError("--dataset PATH needs the imagefolder data set, which is not installed.")
    options = dict(dataset_options)
    if "root" in options and options["root"] != path:
        raise ConfigError(f"--dataset {dataset} and --dataset-option root={options['root']} disagree; give one.")
    options["root"] = path
    return "imagefolder", options


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_finite_value(value: Any) -> bool:
    """No NaN or infinity anywhere inside an option value."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(is_finite_value(v) for v in value)
    if isinstance(value, dict):
        return all(is_finite_value(v) for v in value.values())
    return True

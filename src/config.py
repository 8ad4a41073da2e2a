"""The run configuration: one dataclass with defaults, validation and dict round-trips.

The resolved configuration is written to each experiment's ``config.json``; that file is
what ``--resume`` reads back, so a resumed run needs no other flags.
"""

from __future__ import annotations

import dataclasses
import os
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from .errors import BadInputError, ConfigError  # noqa: F401 (ConfigError: re-exported, its old home)
from .optim import OptimizerRegistry, SchedulerRegistry
from .run_names import name_problem, notes_problem

AMP_MODES = ("bf16", "fp16")
AMP_AUTO = "auto"  # the CPU fast path where measured (src/training/fast_path.py)
AUGMENTATION_POLICIES = ("affine", "crop-flip", "none")  # src/datasets/transforms.py POLICIES (torch-free here)
MAX_SEED = 2**63 - 1
DEFAULT_CHECKPOINT_INTERVAL = 300.0

# Per-field rules for ``option(check=...)``: (accepts the value, what the message says it must be).
POSITIVE_INT = (lambda v: _is_int(v) and v > 0, "a positive integer")
NON_NEGATIVE_INT = (lambda v: _is_int(v) and v >= 0, "a non-negative integer")
BOOL = (lambda v: isinstance(v, bool), "true or false")

# Argument groups of train.py --help (src/cli/train.py builds the parser from the fields).
DATA, TRAINING, HARDWARE, SAVING, RECORDS = (
    "data and model",
    "training",
    "hardware and speed",
    "checkpoints and logging",
    "run records",
)


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: Optional[str] = None,
    group: str = TRAINING,
    flag: Optional[str] = "",
    default_text: Optional[str] = None,
    extra_flags: Tuple[Dict[str, Any], ...] = (),
    resume_mutable: bool = False,
    data_key: bool = False,
    recorded: bool = False,
    special: bool = False,
    trainer: Optional[str] = None,
    choices_from: Optional[str] = None,
    default_factory: Any = dataclasses.MISSING,
    **metadata: Any,
) -> Any:
    """A ``RunConfig`` field with what the rest of the code reads about it (``field_info``):

    - ``help``, ``group``, ``flag`` (``""``: ``--`` and the name with ``-``; None: no flag
      of its own, like ``data_fingerprint``), ``extra_flags`` (more flags setting it, e.g.
      ``--no-augment``), ``default_text`` (what ``--help`` says for the default; by default
      the field's default) and argparse keywords (``metavar``, ``choices``, ``type``,
      ``action``) for the parser ``src/cli/train.py`` builds;
    - ``choices_from``: ``"optimizer"``/``"scheduler"``: the help lists that registry's names;
    - ``resume_mutable``: a ``--resume`` may change it (``RESUME_MUTABLE_KEYS``);
    - ``data_key``: it changes what the data pipeline produces (``DATA_KEYS``);
    - ``recorded``: the run records it; a user never sets it (``RECORDED_KEYS``);
    - ``special``: its flag is parsed apart (KEY=VALUE items, plug-in specs);
    - ``trainer``: the ``Trainer`` argument it is passed as, unchanged (``trainer_options``);
      ``describe_run`` reads it back from the Trainer attribute of that name;
    - ``check``: ``(accepts, "what it must be")``, a rule on the value alone that
      ``validate`` applies (``POSITIVE_INT``...; rules across fields are written in ``validate``);
    - ``legacy_default``: the value a recorded configuration without the key was made with.
    """
    info = dict(
        help=help,
        group=group,
        flag=flag,
        default_text=default_text,
        extra_flags=extra_flags,
        resume_mutable=resume_mutable,
        data_key=data_key,
        recorded=recorded,
        special=special,
        trainer=trainer,
        choices_from=choices_from,
        **metadata,
    )
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=info)
    return field(default=default, metadata=info)


@dataclass
class RunConfig:
    """Everything that defines a training run. Each field's metadata (``option``) is the
    one place that says how it is set and used; the parser, the ``--config`` keys and the
    key lists below are generated from it."""

    dataset: str = option(
        "mnist",
        group=DATA,
        data_key=True,
        metavar="NAME|PATH",
        help="data set: mnist, fashion_mnist, mnist-sample (bundled, offline), cifar10, cifar100, synthetic, "
        "or a folder PATH with train/<class>/ and val/<class>/ images",
    )
    model: str = option(
        "mynet",
        group=DATA,
        help="model: mynet, lenet5, mlp, resnet18, resnet20, resnet56, fastnet, or one a --import registers",
    )
    epochs: int = option(
        20, check=POSITIVE_INT, resume_mutable=True, help="total epochs to train to; raise it to extend a finished run"
    )
    batch_size: int = option(64, check=POSITIVE_INT, data_key=True, help="training batch size")
    lr: float = option(1e-3, help="learning rate")
    weight_decay: float = option(0.01, help="weight decay")
    optimizer: str = option("adamw", choices_from="optimizer", help="{choices}")
    scheduler: str = option(
        "none",
        choices_from="scheduler",
        help="learning-rate schedule: {choices}; onecycle steps after every optimizer step, the others once per epoch",
    )
    patience: int = option(
        0,
        check=NON_NEGATIVE_INT,
        resume_mutable=True,
        trainer="patience",
        help="stop after N epochs without validation-accuracy improvement; 0 disables",
    )
    save_frequency: int = option(
        10,
        check=NON_NEGATIVE_INT,
        group=SAVING,
        resume_mutable=True,
        help="also keep checkpoints/epoch_N.pt every N epochs; 0 disables",
    )
    keep_last: int = option(
        0,
        check=NON_NEGATIVE_INT,
        group=SAVING,
        resume_mutable=True,
        help="keep only the newest N epoch_N.pt files; 0 keeps all",
    )
    seed: int = option(
        42, check=NON_NEGATIVE_INT, data_key=True, help="random seed for initialisation, shuffling and augmentation"
    )
    device: str = option(
        "auto", group=HARDWARE, resume_mutable=True, help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps"
    )
    data_dir: Optional[str] = option(
        None,
        group=DATA,
        resume_mutable=True,
        help="data root holding MNIST/raw and FashionMNIST/raw (default $EXPTRAIN_DATA_DIR or ./data)",
    )
    augment: bool = option(
        True,
        check=BOOL,
        group=DATA,
        data_key=True,
        flag=None,
        extra_flags=(
            dict(flag="--no-augment", action="store_false", help="train on the original images, without augmentation"),
        ),
    )
    # A policy name; None: the data set's default.
    augmentation: Optional[str] = option(
        None,
        group=DATA,
        data_key=True,
        flag="--augment",
        metavar="POLICY",
        choices=AUGMENTATION_POLICIES,
        help="augmentation policy: affine (small warp, digits), crop-flip (pad, random crop, mirror: natural "
        "images) or none (default: the data set's own, affine for grey, crop-flip for colour images)",
    )
    reapply_transforms: bool = option(
        False,
        check=BOOL,
        group=DATA,
        data_key=True,
        help="draw fresh random augmentations of the training set after every epoch",
    )
    amp: Optional[str] = option(  # None: float32
        AMP_AUTO,
        group=HARDWARE,
        legacy_default=None,
        choices=(AMP_AUTO, *AMP_MODES, "off"),
        help="mixed precision: bf16 (CPU and recent GPUs), fp16 (GPUs; uses a gradient scaler), off (float32), or "
        "auto: bf16 autocast with channels-last on a CPU with native bf16 for models measured with it "
        "(mynet), else float32; the start-up line says which",
    )
    compile: bool = option(
        False,
        check=BOOL,
        group=HARDWARE,
        resume_mutable=True,
        trainer="compile_model",
        help="compile the model with torch.compile (slow start, faster steps)",
    )
    channels_last: bool = option(False, check=BOOL, group=HARDWARE, help="channels-last memory format (CNNs)")
    grad_accum: int = option(1, check=POSITIVE_INT, trainer="grad_accum_steps", help="batches per optimizer step")
    grad_clip: float = option(0.0, trainer="grad_clip", help="clip the gradient norm to this value; 0 disables")
    checkpoint_interval: float = option(
        DEFAULT_CHECKPOINT_INTERVAL,
        group=SAVING,
        resume_mutable=True,
        trainer="checkpoint_interval",
        metavar="SECONDS",
        help="also refresh latest_checkpoint.pt mid-epoch at most every SECONDS, so a kill loses "
        "at most that much work; 0 disables",
    )
    # Recipe options (src/training/ema.py, schedules.py, evaluation.py); the defaults are
    # off, which is also how a config.json written before they existed resumes.
    label_smoothing: float = option(
        0.0,
        metavar="X",
        help="train on labels smoothed by X (0 <= X < 1, e.g. 0.1); the validation loss stays plain cross-entropy",
    )
    ema_decay: float = option(  # 0: no weight average
        0.0,
        flag="--ema",
        metavar="DECAY",
        default_text="off",
        trainer="ema_decay",
        help="keep an exponential moving average of the weights (0 < DECAY < 1, e.g. 0.999), updated every "
        "optimizer step; it is what is evaluated, saved as best and held as the model in checkpoints",
    )
    warmup_epochs: int = option(
        0,
        check=NON_NEGATIVE_INT,
        metavar="N",
        trainer="warmup_epochs",
        help="raise the learning rate linearly over the steps of the first N epochs, on top of --scheduler",
    )
    tta_flip: bool = option(
        False,
        check=BOOL,
        trainer="tta_flip",
        help="evaluate on each image and its mirror image (test-time augmentation); only for "
        "data sets whose images may be flipped (crop-flip augmentation policy)",
    )
    # CPU threads per process (torch.set_num_threads); None: torch's own choice (one per
    # core). Recorded, so a resume uses the same count (results can depend on it).
    threads: Optional[int] = option(
        None,
        group=HARDWARE,
        resume_mutable=True,
        metavar="N",
        help="CPU threads per process for torch's operations (default: torch's choice, one per core); on a "
        "machine other jobs share, fewer threads than cores is often much faster. Recorded: a resume "
        "keeps it unless given again",
    )
    dataset_options: Dict[str, Any] = option(
        default_factory=dict,
        group=DATA,
        data_key=True,
        special=True,
        flag="--dataset-option",
        # Data set options that say where the data is or how it is read, not what it is: a
        # resume may change them (a moved image folder, another cache); the data's
        # fingerprint decides whether it is still the same data.
        location_options=("root", "cache_dir", "workers", "progress", "memory_budget_mb", "download", "mirrors"),
        action="append",
        metavar="KEY=VALUE",
        help="extra data set argument, repeatable, e.g. --dataset synthetic --dataset-option num_samples=512",
    )
    model_options: Dict[str, Any] = option(
        default_factory=dict,
        group=DATA,
        special=True,
        flag="--model-option",
        action="append",
        metavar="KEY=VALUE",
        help="extra model argument, repeatable, e.g. --model-option width=16 (values parsed as JSON, else text)",
    )
    data_fingerprint: Optional[Dict[str, Any]] = option(None, flag=None, recorded=True)
    # Plug-ins (train.py --import) as {"module", "path", "sha256"} records; see src/plugins.py.
    imports: List[Dict[str, str]] = option(
        default_factory=list,
        group=DATA,
        special=True,
        flag="--import",
        action="append",
        metavar="MODULE",
        help="import your own code first, repeatable: a module importable from the current directory or a path "
        "to a .py file; the models and data sets it registers become --model / --dataset names. Recorded "
        "(with a SHA-256 of the file) so --resume and --fork import it again",
    )
    # A label (--name; unique per runs directory, fixed for the run) and free text (--notes; may change on resume).
    name: Optional[str] = option(
        None,
        group=RECORDS,
        metavar="TEXT",
        help="label the run (unique in --runs-dir; shown by exptrain list; --resume and "
        "--fork accept it in place of expN)",
    )
    notes: Optional[str] = option(
        None,
        group=RECORDS,
        resume_mutable=True,
        metavar="TEXT",
        help="free-text notes kept in config.json (may be changed on --resume)",
    )
    # Logging (src/training/tb_logger.py): TensorBoard event files, the training loss every N steps.
    tensorboard: bool = option(
        False,
        check=BOOL,
        group=SAVING,
        resume_mutable=True,
        extra_flags=(
            dict(
                flag="--no-tensorboard",
                action="store_false",
                help="no TensorBoard event files (the default; turns them off on --resume)",
            ),
        ),
        help="also write TensorBoard event files into the experiment's tensorboard/ folder: the training loss "
        "every --tensorboard-every steps, and each epoch's losses, accuracies, learning rate and time; "
        "view with: tensorboard --logdir runs (needs: pip install tensorboard; may be switched on or off "
        "on --resume)",
    )
    tensorboard_every: int = option(
        50,
        group=SAVING,
        resume_mutable=True,
        metavar="N",
        positive_steps=True,
        help="with --tensorboard, log the training loss every N steps",
    )

    def validate(self) -> "RunConfig":
        """Check every value; returns ``self``.

        Raises:
            ConfigError: naming the first bad value and the accepted range or choices.
        """
        self._validate_names_and_rates()
        self._validate_records()
        self._validate_training()
        return self

    def _validate_names_and_rates(self) -> None:
        DatasetRegistry, ModelRegistry, check_records = _registries()
        check_records(self.imports)  # before the names: a plug-in may define them
        for name in ("dataset", "model", "optimizer", "scheduler", "device"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"{name} must be a name (text), got {getattr(self, name)!r}.", key=name)
        if self.dataset not in DatasetRegistry:
            raise ConfigError(DatasetRegistry.unknown_message(self.dataset), key="dataset")
        if self.model not in ModelRegistry:
            raise ConfigError(ModelRegistry.unknown_message(self.model), key="model")
        for name, info in FIELDS.items():  # the rules on one value, from the fields' metadata
            if info.get("check") is not None and not info["check"][0](getattr(self, name)):
                raise ConfigError(f"{name} must be {info['check'][1]}, got {getattr(self, name)!r}.", key=name)
        if self.seed > MAX_SEED:
            raise ConfigError(f"seed must be between 0 and 2**63-1, got {self.seed!r}.", key="seed")
        if not _is_number(self.lr) or not self.lr > 0:
            raise ConfigError(f"lr must be a positive finite number, got {self.lr!r}.", key="lr")
        if not _is_number(self.weight_decay) or self.weight_decay < 0:
            raise ConfigError(
                f"weight_decay must be a non-negative finite number, got {self.weight_decay!r}.", key="weight_decay"
            )
        if not _is_number(self.checkpoint_interval) or self.checkpoint_interval < 0:
            raise ConfigError(
                f"checkpoint_interval must be a non-negative number of seconds (0 disables), "
                f"got {self.checkpoint_interval!r}.",
                key="checkpoint_interval",
            )

    def _validate_records(self) -> None:
        for name in ("dataset_options", "model_options"):
            if not isinstance(getattr(self, name), dict):
                raise ConfigError(
                    f"{name} must be a mapping of option names to values, got {getattr(self, name)!r}.", key=name
                )
            bad = [k for k, v in getattr(self, name).items() if not is_finite_value(v)]
            if bad:
                raise ConfigError(
                    f"{name} {bad[0]}={getattr(self, name)[bad[0]]!r} is not finite; give a finite number.", key=name
                )
        if self.data_dir is not None and not isinstance(self.data_dir, str):
            raise ConfigError(f"data_dir must be a path (text), got {self.data_dir!r}.", key="data_dir")
        if self.data_fingerprint is not None and not isinstance(self.data_fingerprint, dict):
            raise ConfigError(
                f"data_fingerprint must be a recorded fingerprint, got {self.data_fingerprint!r}.",
                key="data_fingerprint",
            )
        if self.threads is not None and (
            not isinstance(self.threads, int) or isinstance(self.threads, bool) or not 1 <= self.threads <= 1024
        ):
            raise ConfigError(
                f"threads must be a whole number of CPU threads from 1 to 1024 (omit it for torch's "
                f"default, one per core), got {self.threads!r}.",
                key="threads",
            )
        if self.augmentation is not None:
            if not isinstance(self.augmentation, str) or self.augmentation not in AUGMENTATION_POLICIES:
                raise ConfigError(
                    f"Unknown augmentation policy {self.augmentation!r}; "
                    f"choose one of: {', '.join(AUGMENTATION_POLICIES)}.",
                    key="augmentation",
                )
        if self.amp not in (None, AMP_AUTO, *AMP_MODES):
            raise ConfigError(
                f"Unknown AMP mode {self.amp!r}; choose one of: {AMP_AUTO}, {', '.join(AMP_MODES)} (or off).", key="amp"
            )

    def _validate_training(self) -> None:
        if not _is_number(self.grad_clip) or self.grad_clip < 0:
            raise ConfigError(
                f"grad_clip must be a non-negative finite number (0 disables), got {self.grad_clip!r}.", key="grad_clip"
            )
        if not _is_number(self.label_smoothing) or not 0 <= self.label_smoothing < 1:
            raise ConfigError(
                f"label_smoothing must be a number from 0 to below 1 (e.g. 0.1; 0 disables), "
                f"got {self.label_smoothing!r}.",
                key="label_smoothing",
            )
        if not _is_number(self.ema_decay) or not 0 <= self.ema_decay < 1:
            raise ConfigError(
                f"ema_decay (--ema) must be a number between 0 and 1, e.g. 0.999 (0 disables), got {self.ema_decay!r}.",
                key="ema_decay",
            )
        if not _is_int(self.tensorboard_every) or self.tensorboard_every < 1:
            raise ConfigError(
                f"tensorboard_every (--tensorboard-every) must be a positive whole number of steps, "
                f"e.g. 50, got {self.tensorboard_every!r}.",
                key="tensorboard_every",
            )
        if self.warmup_epochs > self.epochs:
            raise ConfigError(
                f"warmup_epochs ({self.warmup_epochs}) is longer than the run ({self.epochs} epochs); "
                "give at most --epochs.",
                key="warmup_epochs",
            )
        if self.optimizer not in OptimizerRegistry:
            raise ConfigError(OptimizerRegistry.unknown_message(self.optimizer), key="optimizer")
        if self.scheduler not in SchedulerRegistry:
            raise ConfigError(SchedulerRegistry.unknown_message(self.scheduler), key="scheduler")
        problem = (self.name is not None and name_problem(self.name)) or (
            self.notes is not None and notes_problem(self.notes)
        )
        if problem:
            raise ConfigError(
                problem[0].upper() + problem[1:],
                key="name" if self.name is not None and name_problem(self.name) else "notes",
            )

    @staticmethod
    def check_request(values: Dict[str, Any]) -> None:
        """The rules on what a run is asked for (``run_training``'s overrides: the command
        line's flags and ``--config`` file merged, or a Python caller's), before they meet
        a recorded configuration: a run records the policy its data set uses even with
        augmentation off, so these are not rules on a ``RunConfig``.

        Raises:
            ConfigError: augmentation off and an augmentation policy both asked for.
        """
        if values.get("augment") is False and values.get("augmentation") not in (None, "none"):
            raise ConfigError(
                f"Augmentation off (--no-augment, augment: false) and the augmentation policy "
                f"{values['augmentation']!r} (--augment, augmentation:) contradict each other; "
                "give one of them (--augment none is the same as --no-augment).",
                key="augment",
            )

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
            raise ConfigError(
                f"Unknown configuration key(s) {', '.join(unknown)} in {source}; "
                f"known keys: {', '.join(sorted(known))}."
            )
        return cls(**{**LEGACY_DEFAULTS, **values})

    def replace(self, **changes: Any) -> "RunConfig":
        return dataclasses.replace(self, **changes)


FIELDS: Dict[str, Any] = {f.name: f.metadata for f in dataclasses.fields(RunConfig)}

# Keys a resumed run may change: they do not alter the numbers the run produces up to
# the point where it stopped (torch.compile may reorder float operations, but it is a
# speed switch a user must be able to turn off to resume on another machine; logging
# options only say what is written beside the run). Everything else must match, or the run is not a
# continuation (use --fork to branch with new values).
RESUME_MUTABLE_KEYS = frozenset(name for name, info in FIELDS.items() if info["resume_mutable"])
# Configuration keys that change what the data pipeline produces; a fork that changes
# one of them restarts the data order instead of continuing the parent's.
DATA_KEYS = tuple(name for name, info in FIELDS.items() if info["data_key"])
# Recorded by the run, not chosen by the user: a resume compares it with the data it loads.
RECORDED_KEYS = frozenset(name for name, info in FIELDS.items() if info["recorded"])
# Keys whose default changed: a recorded configuration without them was made with the old one.
LEGACY_DEFAULTS = {name: info["legacy_default"] for name, info in FIELDS.items() if "legacy_default" in info}
# Data set options that say where the data is or how it is read, not what it is (see dataset_options).
LOCATION_OPTIONS = frozenset(FIELDS["dataset_options"]["location_options"])


def same_data_options(a: Dict[str, Any], b: Dict[str, Any]) -> bool:
    """Whether two ``dataset_options`` ask for the same data (location options aside)."""
    strip = lambda options: {k: v for k, v in (options or {}).items() if k not in LOCATION_OPTIONS}  # noqa: E731
    return strip(a) == strip(b)


def trainer_options(config: RunConfig) -> Dict[str, Any]:
    """The ``Trainer`` arguments the configuration passes unchanged (fields with ``trainer=``)."""
    return {info["trainer"]: getattr(config, name) for name, info in FIELDS.items() if info["trainer"]}


def dataset_from_path(dataset: Any, dataset_options: Dict[str, Any]) -> Optional[Tuple[str, Dict[str, Any]]]:
    """``--dataset PATH``: ``("imagefolder", options with root=absolute PATH)`` when
    ``dataset`` is not a registered name but reads as a path; ``None`` otherwise.

    Raises:
        ConfigError: the path does not exist or is not a directory.
    """
    DatasetRegistry = _registries()[0]
    if not isinstance(dataset, str) or dataset in DatasetRegistry:
        return None
    looks_like_path = os.sep in dataset or dataset.startswith(".") or dataset.startswith("~") or os.path.isdir(dataset)
    if not looks_like_path:
        return None
    path = os.path.abspath(os.path.expanduser(dataset))
    if not os.path.exists(path):
        raise ConfigError(
            f"--dataset {dataset}: no such directory; give a folder holding train/<class>/ and "
            f"val/<class>/ images, or one of: {', '.join(DatasetRegistry.names())}.",
            key="dataset",
        )
    if not os.path.isdir(path):
        raise ConfigError(
            f"--dataset {dataset} is a file; give a folder holding train/<class>/ and val/<class>/ images.",
            key="dataset",
        )
    if "imagefolder" not in DatasetRegistry:
        raise ConfigError("--dataset PATH needs the imagefolder data set, which is not installed.", key="dataset")
    options = dict(dataset_options)
    if "root" in options and options["root"] != path:
        raise ConfigError(
            f"--dataset {dataset} and --dataset-option root={options['root']} disagree; give one.", key="dataset"
        )
    options["root"] = path
    return "imagefolder", options


def _registries():
    """The data set and model registries and the plug-in check, imported on first use:
    ``train.py --help`` and the tools read ``RunConfig`` without importing torch, which the
    registries' modules import. The one deferred import of this module."""
    from . import datasets, models, plugins  # noqa: PLC0415 - deferred: a torch-free --help (see the docstring)

    return datasets.DatasetRegistry, models.ModelRegistry, plugins.check_records


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

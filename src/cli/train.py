#!/usr/bin/env python
"""Command line: train a model in a new experiment, or resume / fork an existing one.

    python train.py --dataset mnist-sample --epochs 10     # new experiment runs/expN
    python train.py --resume exp1                          # continue exp1 in place
    python train.py --fork exp1 --lr 1e-4 --epochs 30      # branch exp1 into a new expN
    python train.py --import my_models.py --model mine     # your own model or data set
    python train.py --config configs/mnist-sample.yaml --lr 3e-3 --name quick   # a recipe, one option changed

Exit codes: 0 done (completed, stopped early, or a resume with nothing left to do);
1 a file could not be written (disk full, permissions) or an unexpected error;
2 bad input (nothing was written); 3 training diverged (NaN/inf loss; the last good
checkpoints are kept); 128+N stopped by signal N after saving (130 SIGINT / Ctrl-C,
143 SIGTERM, 129 SIGHUP); resume with --resume.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys

EXIT_OK = 0

# CLI option -> RunConfig field; argparse defaults are suppressed so that only the flags
# given on the command line become overrides (what --fork inherits and --resume checks).
OPTIONS = {
    "dataset": "dataset", "model": "model", "epochs": "epochs", "batch_size": "batch_size", "lr": "lr",
    "weight_decay": "weight_decay", "optimizer": "optimizer", "scheduler": "scheduler", "patience": "patience",
    "save_frequency": "save_frequency", "keep_last": "keep_last", "seed": "seed", "device": "device",
    "data_dir": "data_dir", "reapply_transforms": "reapply_transforms", "augment": "augment",
    "augmentation": "augmentation",
    "amp": "amp", "compile": "compile", "channels_last": "channels_last", "grad_accum": "grad_accum",
    "grad_clip": "grad_clip", "checkpoint_interval": "checkpoint_interval", "name": "name", "notes": "notes",
    "label_smoothing": "label_smoothing", "ema_decay": "ema_decay", "warmup_epochs": "warmup_epochs",
    "tta_flip": "tta_flip", "threads": "threads", "tensorboard": "tensorboard",
    "tensorboard_every": "tensorboard_every",
}
# RunConfig fields set by flags handled apart (repeatable KEY=VALUE items, plug-in specs);
# with OPTIONS, exactly the keys a --config file may hold (src/config_file.py; tested).
SPECIAL_OPTIONS = ("dataset_options", "model_options", "imports")


def build_parser() -> argparse.ArgumentParser:
    from src.config import OPTIMIZERS, SCHEDULERS, RunConfig

    d = RunConfig()
    parser = argparse.ArgumentParser(
        description="Train an image classifier in runs/expN; resume or fork experiments.",
        epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    add = parser.add_argument
    add("--dataset", metavar="NAME|PATH",
        help="data set: mnist, fashion_mnist, mnist-sample (bundled, offline), cifar10, cifar100, synthetic, "
             f"or a folder PATH with train/<class>/ and val/<class>/ images (default {d.dataset})")
    add("--model", help="model: mynet, lenet5, mlp, resnet18, resnet20, resnet56, fastnet, or one a --import "
                        f"registers (default {d.model})")
    add("--epochs", type=int, help=f"total epochs to train to; raise it to extend a finished run (default {d.epochs})")
    add("--batch-size", dest="batch_size", type=int, help=f"training batch size (default {d.batch_size})")
    add("--lr", type=float, help=f"learning rate (default {d.lr})")
    add("--weight-decay", dest="weight_decay", type=float, help=f"weight decay (default {d.weight_decay})")
    add("--optimizer", help=f"{', '.join(OPTIMIZERS)} (default {d.optimizer})")
    add("--scheduler", help=f"learning-rate schedule: {', '.join(SCHEDULERS)}; onecycle steps after every optimizer "
                            f"step, the others once per epoch (default {d.scheduler})")
    add("--patience", type=int, help="stop after N epochs without validation-accuracy improvement; 0 disables (default 0)")
    add("--save-frequency", dest="save_frequency", type=int,
        help=f"also keep checkpoints/epoch_N.pt every N epochs; 0 disables (default {d.save_frequency})")
    add("--keep-last", dest="keep_last", type=int, help="keep only the newest N epoch_N.pt files; 0 keeps all (default 0)")
    add("--seed", type=int, help=f"random seed for initialisation, shuffling and augmentation (default {d.seed})")
    add("--device", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps (default auto)")
    add("--data-dir", dest="data_dir", help="data root holding MNIST/raw and FashionMNIST/raw (default $EXPTRAIN_DATA_DIR or ./data)")
    parser.add_argument("--runs-dir", default="runs", help="where experiments live (default runs)")
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="read training options from a YAML or JSON file (keys: the option names with '_', "
                             "e.g. batch_size, plus dataset_options, model_options, imports); flags given here win")
    add("--name", metavar="TEXT", help="label the run (unique in --runs-dir; shown by exptrain list; "
                                       "--resume and --fork accept it in place of expN)")
    add("--notes", metavar="TEXT", help="free-text notes kept in config.json (may be changed on --resume)")
    add("--import", dest="imports", action="append", metavar="MODULE",
        help="import your own code first, repeatable: a module importable from the current directory or a path "
             "to a .py file; the models and data sets it registers become --model / --dataset names. Recorded "
             "(with a SHA-256 of the file) so --resume and --fork import it again")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--resume", metavar="EXP", default=None,
                       help="continue experiment EXP (expN or its --name) in place from its latest valid checkpoint, with its saved configuration")
    group.add_argument("--fork", metavar="EXP", default=None,
                       help="start a new experiment from EXP's (expN or its --name) latest checkpoint; flags given here override EXP's configuration")
    add("--reapply-transforms", dest="reapply_transforms", action="store_true",
        help="draw fresh random augmentations of the training set after every epoch")
    add("--no-augment", dest="augment", action="store_false", help="train on the original images, without augmentation")
    add("--augment", dest="augmentation", metavar="POLICY", choices=("affine", "crop-flip", "none"),
        help="augmentation policy: affine (small warp, digits), crop-flip (pad, random crop, mirror: natural "
             "images) or none (default: the data set's own, affine for grey, crop-flip for colour images)")
    add("--image-size", dest="image_size", type=int, metavar="N",
        help="image folders: resize the shorter side to N and centre-crop N x N (needed when sizes differ)")
    add("--model-option", dest="model_options", action="append", metavar="KEY=VALUE",
        help="extra model argument, repeatable, e.g. --model-option width=16 (values parsed as JSON, else text)")
    add("--dataset-option", dest="dataset_options", action="append", metavar="KEY=VALUE",
        help="extra data set argument, repeatable, e.g. --dataset synthetic --dataset-option num_samples=512")
    add("--amp", choices=("auto", "bf16", "fp16", "off"),
        help="mixed precision: bf16 (CPU and recent GPUs), fp16 (GPUs; uses a gradient scaler), off (float32), or "
             "auto: bf16 autocast with channels-last on a CPU with native bf16 for models measured with it "
             "(mynet), else float32; the start-up line says which (default auto)")
    add("--compile", action="store_true", help="compile the model with torch.compile (slow start, faster steps)")
    add("--channels-last", dest="channels_last", action="store_true", help="channels-last memory format (CNNs)")
    add("--grad-accum", dest="grad_accum", type=int, help="batches per optimizer step (default 1)")
    add("--grad-clip", dest="grad_clip", type=float, help="clip the gradient norm to this value; 0 disables (default 0)")
    add("--checkpoint-interval", dest="checkpoint_interval", type=float, metavar="SECONDS",
        help="also refresh latest_checkpoint.pt mid-epoch at most every SECONDS, so a kill loses at most that "
             f"much work; 0 disables (default {d.checkpoint_interval:g})")
    add("--label-smoothing", dest="label_smoothing", type=float, metavar="X",
        help="train on labels smoothed by X (0 <= X < 1, e.g. 0.1); the validation loss stays plain "
             "cross-entropy (default 0)")
    add("--ema", dest="ema_decay", type=float, metavar="DECAY",
        help="keep an exponential moving average of the weights (0 < DECAY < 1, e.g. 0.999), updated every "
             "optimizer step; it is what is evaluated, saved as best and held as the model in checkpoints "
             "(default off)")
    add("--warmup-epochs", dest="warmup_epochs", type=int, metavar="N",
        help="raise the learning rate linearly over the steps of the first N epochs, on top of --scheduler "
             "(default 0)")
    add("--tta-flip", dest="tta_flip", action="store_true",
        help="evaluate on each image and its mirror image (test-time augmentation); only for data sets "
             "whose images may be flipped (crop-flip augmentation policy)")
    add("--threads", type=int, metavar="N",
        help="CPU threads per process for torch's operations (default: torch's choice, one per core); on a "
             "machine other jobs share, fewer threads than cores is often much faster. Recorded: a resume "
             "keeps it unless given again")
    add("--tensorboard", action="store_true",
        help="also write TensorBoard event files into the experiment's tensorboard/ folder: the training loss "
             "every --tensorboard-every steps, and each epoch's losses, accuracies, learning rate and time; "
             "view with: tensorboard --logdir runs (needs: pip install tensorboard; may be switched on or off "
             "on --resume)")
    add("--no-tensorboard", dest="tensorboard", action="store_false",
        help="no TensorBoard event files (the default; turns them off on --resume)")
    add("--tensorboard-every", dest="tensorboard_every", type=_positive_steps, metavar="N",
        help=f"with --tensorboard, log the training loss every N steps (default {d.tensorboard_every})")
    parser.add_argument("--quiet", action="store_true", default=False, help="no progress bars")
    return parser


def _positive_steps(text: str) -> int:
    """argparse type: a positive whole number of steps."""
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < 1:
        raise argparse.ArgumentTypeError(f"expects a positive whole number of steps, e.g. 50, got {text!r}")
    return value


def parse_key_values(items, flag: str) -> dict:
    """``["width=16", "name=x"]`` -> ``{"width": 16, "name": "x"}`` (JSON values, else text)."""
    import json

    from src.config import ConfigError, is_finite_value

    result = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} expects KEY=VALUE, got {item!r}.")
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = value
        if not is_finite_value(parsed):
            raise ConfigError(f"{flag} {key.strip()}={value} is not a finite number; give a finite value.")
        result[key.strip()] = parsed
    return result


class _EarlySignal(BaseException):
    """A signal before the run's own handlers are in place (importing torch takes seconds)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


_outcome_decided = False  # set once the run's outcome is recorded and printed
_early_signum = None  # a signal seen before the run's handlers (its exception may have been lost)


def _on_signal_outside_run(signum, frame) -> None:
    """Before the run's handlers: stop at once (nothing written yet). After the outcome is
    decided: a late signal changes nothing (a note on stderr; no buffered I/O in a handler)."""
    global _early_signum
    if _early_signum is not None:
        return  # a repeat (Ctrl-C pressed twice) while the first one stops the process
    if not _outcome_decided:
        # Kept as well as raised: an exception raised by a handler while Python compiles a
        # module (every import under PYTHONDONTWRITEBYTECODE) can be dropped by the compiler.
        _early_signum = signum
        raise _EarlySignal(signum)
    os.write(2, f"{signal.Signals(signum).name} arrived after the run had ended; nothing changed.\n".encode())


def _outcome_recorded() -> None:
    """The run's outcome is recorded: from here on a signal changes nothing."""
    global _outcome_decided
    _outcome_decided = True
    _set_signal_handlers(_on_signal_outside_run)


def _set_signal_handlers(handler) -> dict:
    """Install ``handler`` for SIGINT/SIGTERM/SIGHUP; returns the previous ones ({} off the main thread)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}
    names = ("SIGINT", "SIGTERM", "SIGHUP")
    return {sig: signal.signal(sig, handler) for sig in (getattr(signal, n) for n in names if hasattr(signal, n))}


def main(argv=None, *, exiting: bool = False) -> int:
    """Run the command line; returns the exit code (see the module docstring).

    ``exiting``: the process ends right after (the script), so signals stay handled (and
    change nothing) until it has exited, instead of being handed back."""
    global _outcome_decided, _early_signum
    # Signals are caught from the first moment, before torch is imported: during start-up
    # (nothing written yet) they stop at once; from the creation of the experiment on they
    # are noted and obeyed at a safe point (see src/training/interrupts.py); once the
    # outcome is recorded they change nothing.
    _outcome_decided, _early_signum = False, None
    previous = _set_signal_handlers(_on_signal_outside_run)
    try:
        args = build_parser().parse_args(argv)
        from src.training.interrupts import StartupInterrupted, StopRequest

        if _early_signum is not None:  # its exception was lost inside an import
            raise _EarlySignal(_early_signum)
        try:
            with StopRequest(immediate=True) as stop:
                code = _main(args, stop)
                _outcome_recorded()  # StopRequest restores the same handler on exit
                return code
        except StartupInterrupted as exc:
            _early_signum = exc.signum  # a repeat now changes nothing
            print(str(exc), file=sys.stderr)
            return 128 + exc.signum
    except _EarlySignal as exc:
        print(f"Interrupted by {signal.Signals(exc.signum).name} during start-up; nothing was written.", file=sys.stderr)
        return 128 + exc.signum
    finally:
        _outcome_decided = True
        if exiting:
            # Ignored, not handled, from here: Python puts its own handlers back to the default
            # action during interpreter shutdown, so a signal then would kill the process.
            _set_signal_handlers(signal.SIG_IGN)
        else:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            _outcome_decided = False


def _main(args, stop) -> int:
    from src.config import ConfigError
    from src.errors import ExptrainError, report_error
    from src.training.run import run_training

    overrides = {field: getattr(args, option) for option, field in OPTIONS.items() if hasattr(args, option)}
    if overrides.get("amp") == "off":
        overrides["amp"] = None
    try:
        file_values = {}
        if args.config is not None:
            from src.config_file import read_config_file

            file_values = read_config_file(args.config)
        for name in ("lr", "weight_decay", "grad_clip", "checkpoint_interval", "label_smoothing", "ema_decay"):
            if name in overrides and not math.isfinite(overrides[name]):
                flag = "--ema" if name == "ema_decay" else "--" + name.replace("_", "-")
                raise ConfigError(f"{flag} must be a finite number, got {overrides[name]!r}.")
        for key in ("model_options", "dataset_options"):
            if hasattr(args, key):
                overrides[key] = parse_key_values(getattr(args, key), "--" + key[:-1].replace("_", "-"))
        specs = file_values.pop("imports", []) + getattr(args, "imports", [])
        if specs:  # before the configuration names the models and data sets they register
            from src.plugins import import_plugins

            overrides["imports"] = import_plugins(specs)
        if hasattr(args, "image_size"):
            if args.image_size < 1:
                raise ConfigError(f"--image-size must be a positive number of pixels, got {args.image_size}.")
            overrides["dataset_options"] = {**overrides.get("dataset_options", {}), "image_size": args.image_size}
        if args.config is not None:
            from src.config_file import check_config_values, merge_config_values

            check_config_values(args.config, file_values)
            if overrides.get("tensorboard") is False and "tensorboard_every" not in overrides:
                file_values.pop("tensorboard_every", None)  # --no-tensorboard wins over the file's logging
            overrides = merge_config_values(file_values, overrides)
        if overrides.get("augment") is False and overrides.get("augmentation") not in (None, "none"):
            where = f" ({args.config} and the command line)" if args.config is not None else ""
            raise ConfigError(f"Augmentation off (--no-augment, augment: false) and the augmentation policy "
                              f"{overrides['augmentation']!r} (--augment, augmentation:) contradict each other{where}; "
                              "give one of them (--augment none is the same as --no-augment).")
        if "dataset" in overrides:
            from src.config import dataset_from_path

            folder = dataset_from_path(overrides["dataset"], overrides.get("dataset_options", {}))
            if folder is not None:
                overrides["dataset"], overrides["dataset_options"] = folder
        results = run_training(
            overrides, runs_dir=args.runs_dir, resume=args.resume, fork=args.fork,
            show_progress=False if args.quiet else None, stop=stop,
        )
    except ExptrainError as exc:
        from src.errors import BadInputError

        if exc.exit_code < 128 and (not isinstance(exc, BadInputError) or _reports()):
            print(f"Error: {exc}", file=sys.stderr)  # bad input is the same on every rank: rank 0 says it
        elif exc.exit_code >= 128 and _reports():  # under torchrun rank 0 reports the stop for all
            print(str(exc), file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback, unless asked for
        return report_error(exc, "; the files written before are intact.")
    _outcome_recorded()  # before the result line: a signal sent on seeing it must find the run ended
    if results.get("nothing_to_do"):
        return EXIT_OK
    if not _reports():
        return EXIT_OK  # rank 0 reports for a torchrun job
    print(
        f"Done: {results['epochs_trained']} epochs, best validation accuracy {results['best_accuracy']:.2f}% "
        f"at epoch {results['best_epoch']}" + (" (stopped early)" if results["stopped_early"] else "")
        + f", {results['training_time']:.1f}s. Experiment: {results['experiment_dir']}"
    )
    return EXIT_OK


def _reports() -> bool:
    """Whether this process reports for the job: always, except a torchrun rank other than 0."""
    return os.environ.get("RANK", "0") in ("", "0")


if __name__ == "__main__":
    sys.exit(main(exiting=True))

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
import dataclasses
import math
import os
import signal
import sys
import typing

from src.config import FIELDS, RunConfig

EXIT_OK = 0

# The parser is built from RunConfig's field metadata (src/config.py ``option``): each field
# with a flag is one (or, like --no-augment, more) arguments whose dest is the field's name,
# so the flags given become the run's overrides as they are. argparse defaults are suppressed
# so that only the flags given on the command line become overrides (what --fork inherits and
# --resume checks); the help shows each field's default.
#
# Why not jsonargparse or tyro: both would generate flags from RunConfig too, but not these
# flags: --no-augment and --augment set two fields, --ema names ema_decay, defaults must stay
# unset (overrides, not values), and every refusal must be one "Error:" line with exit 2; both
# libraries also bring their own config-file format and type coercion beside --config. A
# generator of about 60 lines keeps every flag, help text and exit code as it was, and adds
# no dependency.


# CLI option (argparse dest) -> RunConfig field: every field with a flag of its own.
OPTIONS = {
    name: name
    for name, info in FIELDS.items()
    if (info["flag"] is not None or info["extra_flags"]) and not info["special"]
}
# RunConfig fields set by flags handled apart (repeatable KEY=VALUE items, plug-in specs);
# with OPTIONS, exactly the keys a --config file may hold (src/config_file.py; tested).
SPECIAL_OPTIONS = tuple(name for name, info in FIELDS.items() if info["special"])


# Flags that are not RunConfig fields, by argument group: (flags, argparse keywords).
_GROUP_FLAGS = {
    "data and model": [
        (
            ("--image-size",),
            dict(
                dest="image_size",
                type=int,
                metavar="N",
                help="image folders: resize the shorter side to N and centre-crop N x N (needed when sizes differ)",
            ),
        ),
    ],
}


def _help(info, default) -> str:
    """A field's help text: its registry's names for ``{choices}``, and its default
    (``default_text`` or the field's default, if any) unless the text says it already."""
    from src.optim import OptimizerRegistry, SchedulerRegistry

    text = info["help"]
    if info["choices_from"]:
        registry = {"optimizer": OptimizerRegistry, "scheduler": SchedulerRegistry}[info["choices_from"]]
        text = text.format(choices=", ".join(registry.names()))
    if "default" not in text and (default is not None or info["default_text"]):
        shown = info["default_text"] or (f"{default:g}" if isinstance(default, float) else default)
        text += f" (default {shown})"
    return text


def _add_field_flags(groups, parser) -> None:
    """Each RunConfig field's flags, in the argument group its metadata names."""
    types = typing.get_type_hints(RunConfig)
    argparse_keys = ("metavar", "choices", "type", "action")
    for f in dataclasses.fields(RunConfig):
        info = f.metadata
        if info["flag"] is None and not info["extra_flags"]:
            continue  # recorded by the run
        if info["group"] not in groups:
            groups[info["group"]] = parser.add_argument_group(info["group"])
        group = groups[info["group"]]
        default = f.default if f.default is not dataclasses.MISSING else None
        if info["flag"] is not None and info["help"] is not None:
            kwargs = {k: info[k] for k in argparse_keys if k in info}
            kind = types[f.name]
            if typing.get_origin(kind) is typing.Union:
                kind = next(a for a in typing.get_args(kind) if a is not type(None))
            if info.get("positive_steps"):
                kwargs["type"] = _positive_steps
            elif kind is bool and "action" not in kwargs:
                kwargs["action"] = "store_true"
            elif kind in (int, float) and "type" not in kwargs:
                kwargs["type"] = kind
            flag = info["flag"] or "--" + f.name.replace("_", "-")
            help_text = info["help"] if kwargs.get("action") == "store_true" else _help(info, default)
            group.add_argument(flag, dest=f.name, help=help_text, **kwargs)
        for extra in info["extra_flags"]:
            extra = dict(extra)
            group.add_argument(extra.pop("flag"), dest=f.name, **extra)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train an image classifier in runs/expN; resume or fork experiments.",
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    runs = parser.add_argument_group("experiments")
    runs.add_argument("--runs-dir", default="runs", help="where experiments live (default runs)")
    runs.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help="read training options from a YAML or JSON file (keys: the option names with '_', "
        "e.g. batch_size, plus dataset_options, model_options, imports); flags given here win",
    )
    exclusive = runs.add_mutually_exclusive_group()
    exclusive.add_argument(
        "--resume",
        metavar="EXP",
        default=None,
        help="continue experiment EXP (expN or its --name) in place from its latest valid checkpoint, with its saved configuration",
    )
    exclusive.add_argument(
        "--fork",
        metavar="EXP",
        default=None,
        help="start a new experiment from EXP's (expN or its --name) latest checkpoint; flags given here override EXP's configuration",
    )
    runs.add_argument("--quiet", action="store_true", default=False, help="no progress bars")
    groups = {}
    _add_field_flags(groups, parser)
    for group, flags in _GROUP_FLAGS.items():
        for names, kwargs in flags:
            groups[group].add_argument(*names, **kwargs)
    return parser


def finite_float_flags():
    """``{field: flag}`` of the float options, whose values must be finite numbers."""
    types = typing.get_type_hints(RunConfig)
    return {
        f.name: FIELDS[f.name]["flag"] or "--" + f.name.replace("_", "-")
        for f in dataclasses.fields(RunConfig)
        if types[f.name] is float and FIELDS[f.name]["flag"] is not None
    }


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
        print(
            f"Interrupted by {signal.Signals(exc.signum).name} during start-up; nothing was written.", file=sys.stderr
        )
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
    from src.errors import BadInputError, ExptrainError, report_error

    try:
        overrides, file_values, flags = _requested_options(args)
        results = _train(args, overrides, file_values, flags, stop)
    except ExptrainError as exc:
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
        f"at epoch {results['best_epoch']}"
        + (" (stopped early)" if results["stopped_early"] else "")
        + f", {results['training_time']:.1f}s. Experiment: {results['experiment_dir']}"
    )
    return EXIT_OK


def _requested_options(args):
    """``(overrides, file_values, flags)``: the options the flags and ``--config`` ask for,
    merged (flags win), with plug-ins imported first; ``flags`` names the keys a flag set."""
    from src.config import ConfigError

    overrides = {field: getattr(args, option) for option, field in OPTIONS.items() if hasattr(args, option)}
    if overrides.get("amp") == "off":
        overrides["amp"] = None
    file_values = {}
    if args.config is not None:
        from src.config_file import read_config_file

        file_values = read_config_file(args.config)
    for name, flag in finite_float_flags().items():
        if name in overrides and not math.isfinite(overrides[name]):
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
    flags = set(overrides)
    if args.config is not None:
        from src.config_file import merge_config_values

        if overrides.get("tensorboard") is False and "tensorboard_every" not in overrides:
            file_values.pop("tensorboard_every", None)  # --no-tensorboard wins over the file's logging
        overrides = merge_config_values(file_values, overrides)
    return overrides, file_values, flags


def _train(args, overrides, file_values, flags, stop):
    """``run_training`` on the merged options; a bad value that came from the ``--config``
    file (and no flag) is reported as the file's (``--config FILE: key: ...``)."""
    from src.config import ConfigError, dataset_from_path
    from src.run import run_training

    try:  # the merged options are checked once, by RunConfig.validate in run_training
        if "dataset" in overrides:
            folder = dataset_from_path(overrides["dataset"], overrides.get("dataset_options", {}))
            if folder is not None:
                overrides["dataset"], overrides["dataset_options"] = folder
        return run_training(
            overrides,
            runs_dir=args.runs_dir,
            resume=args.resume,
            fork=args.fork,
            show_progress=False if args.quiet else None,
            stop=stop,
        )
    except ConfigError as exc:
        if exc.key is not None and exc.key in file_values and exc.key not in flags:
            raise ConfigError(f"--config {args.config}: {exc.key}: {exc}", key=exc.key) from None
        raise


def _reports() -> bool:
    """Whether this process reports for the job: always, except a torchrun rank other than 0."""
    return os.environ.get("RANK", "0") in ("", "0")


if __name__ == "__main__":
    sys.exit(main(exiting=True))

"""The ``exptrain`` command (also ``python -m src``): train, list, compare, evaluate,
export, predict.

Each subcommand's module is imported only when it runs, so ``exptrain list`` and
``--help`` never import torch. Every error is one line on stderr and the exit code of
its class in ``src/errors.py`` (2 for bad input: unknown experiment, damaged files, a
running experiment, a bad checkpoint name).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from typing import List, Optional

from ..errors import BadInputError, report_error

CHECKPOINT_HELP = "best (default), latest (the newest valid one) or epoch_N"

EPILOG = """\
examples:
  exptrain train --dataset mnist-sample --epochs 5     same flags as train.py
  exptrain list --sort best                            every experiment, best first
  exptrain compare exp1 exp2                           differing settings, results, curves
  exptrain evaluate exp1 --checkpoint best             metrics, confusion matrix, mistakes
  exptrain predict exp1 digit.png                      top classes for image files
  exptrain export exp1 --format safetensors            weights + JSON model config

exit codes: 0 done; 1 a file could not be written or an unexpected error;
2 bad input (unknown experiment, damaged files, a running experiment, a bad name).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="exptrain",
        description="Train image classifiers and inspect, compare, evaluate and export the runs.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands.add_parser(
        "train", add_help=False, help="train, resume or fork (exactly train.py's flags; see train --help)"
    )

    def command(name: str, help_text: str, description: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=description)
        sub.add_argument("--runs-dir", default="runs", help="where the experiments live (default runs)")
        return sub

    listing = command(
        "list",
        "one line per experiment",
        "List every experiment: status (a running one with its "
        "live epoch; killed = recorded as running but no process holds its lock), data, model, epochs "
        "done/target, best validation accuracy and its epoch, wall time, parent, start time. "
        "Read-only: never locks or changes anything.",
    )
    listing.add_argument(
        "--sort",
        default="name",
        metavar="COLUMN",
        help="name (default), status, dataset, model, epochs, best, wall, parent or started; "
        "best, epochs and wall sort largest first",
    )
    listing.add_argument("--reverse", action="store_true", help="reverse the order")
    listing.add_argument("--json", action="store_true", help="print the records as JSON instead of a table")

    compare = command(
        "compare",
        "side-by-side settings, results and curves",
        "Compare experiments: a table of the configuration keys that differ and of the results, "
        "and one PNG overlaying validation accuracy and loss (forks drawn from their branch point).",
    )
    compare.add_argument("experiments", nargs="+", metavar="EXP", help="two or more experiment names")
    compare.add_argument(
        "--plot",
        default="comparison.png",
        metavar="PNG",
        help="where to write the curves (default comparison.png in the current directory)",
    )
    compare.add_argument(
        "--all-keys", action="store_true", help="show every configuration key, not only those that differ"
    )

    evaluate = command(
        "evaluate",
        "accuracy, per-class metrics, confusion matrix, worst mistakes",
        "Rebuild the model from a checkpoint alone and evaluate it; writes evaluation.json, "
        "confusion_matrix.png and mistakes.png into EXP/evaluation/CHECKPOINT-SPLIT/ (or --out).",
    )
    evaluate.add_argument("experiment", metavar="EXP")
    evaluate.add_argument("--checkpoint", default="best", help=CHECKPOINT_HELP)
    evaluate.add_argument(
        "--split",
        default="test",
        choices=("test", "train"),
        help="test (the validation split the run reports, default) or train (un-augmented)",
    )
    evaluate.add_argument(
        "--tta",
        action="store_true",
        help="test-time augmentation: average the predictions for each image and its mirror image",
    )
    evaluate.add_argument("--out", metavar="DIR", help="write the results here instead of into the experiment")
    evaluate.add_argument(
        "--mistakes",
        type=int,
        default=25,
        metavar="N",
        help="how many confidently wrong examples to show (default 25; 0 for none)",
    )
    evaluate.add_argument("--data-dir", help="data root, when the data has moved since training")
    evaluate.add_argument("--device", default="cpu", help="cpu (default), auto, cuda, cuda:N or mps")

    predict = command("predict", "top classes for image files", "Classify image files with an experiment's model.")
    predict.add_argument("experiment", metavar="EXP")
    predict.add_argument(
        "images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ... anything Pillow reads)"
    )
    predict.add_argument("--checkpoint", default="best", help=CHECKPOINT_HELP)
    predict.add_argument("--top-k", type=int, default=3, metavar="K", help="classes to show per image (default 3)")
    predict.add_argument(
        "--invert",
        action="store_true",
        help="invert the images first (dark ink on white paper -> MNIST's white on black)",
    )
    predict.add_argument("--json", action="store_true", help="print the predictions as JSON")

    export = command(
        "export",
        "weights for use without this code's checkpoints",
        "Export a checkpoint's model: safetensors weights + model.json (rebuilt by ModelRegistry "
        "without unpickling), TorchScript, or ONNX. Writes into EXP/export/CHECKPOINT/ (or --out) "
        "and checks that the exported model gives the same outputs.",
    )
    export.add_argument("experiment", metavar="EXP")
    export.add_argument("--checkpoint", default="best", help=CHECKPOINT_HELP)
    export.add_argument(
        "--format",
        default="safetensors",
        choices=("safetensors", "torchscript", "onnx"),
        help="safetensors (default), torchscript or onnx (needs the onnx package)",
    )
    export.add_argument("--out", metavar="DIR", help="write here instead of into the experiment")
    return parser


COMMAND_MODULES = {
    "list": "listing",
    "compare": "compare",
    "evaluate": "evaluate",
    "predict": "predict",
    "export": "export",
}


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:
        return run_train(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        if not args.runs_dir.strip():
            raise BadInputError("--runs-dir must name a directory, got ''.")
        module = importlib.import_module(f"{__package__}.{COMMAND_MODULES[args.command]}")
        return module.run(args)
    except BrokenPipeError:  # exptrain list | head
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("Interrupted; nothing was left half-written.", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback, unless asked for
        return report_error(exc)


def run_train(argv: List[str]) -> int:
    """``exptrain train``: exactly ``python train.py`` (the same code, ``src/cli/train.py``)."""
    from .train import main as train_main

    sys.argv[0] = "exptrain train"  # the name the usage line shows
    return train_main(argv, exiting=True)


if __name__ == "__main__":
    sys.exit(main())

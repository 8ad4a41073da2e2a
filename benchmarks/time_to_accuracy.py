#!/usr/bin/env python
"""Time to accuracy of recipes the CLI runs, each seed in a fresh process.

Each run is ``train.py RECIPE --seed S`` started as a new process (start-up, data loading
and every per-epoch cost are counted). Measured from the process launch: the time to the
end of the first optimizer step, the time until the epoch line reporting the target
validation (= test split) accuracy is printed, and the whole run. Peak memory is the
child's maximum resident set size (``wait4`` rusage); CPU is its user + system time.

Recipes (``--recipe``, repeatable; default all):

* ``quickstart``: the README's offline quick start, ``--dataset mnist-sample --epochs
  10`` (target 98.0%, seeds 42 1 2), side by side with ``_hand_loop.py``, a hand-written
  loop with the same network, data and precision, alternating per seed. On a shared
  machine the wall times move with the load; the trainer/hand ratio of the same seed,
  measured back to back, is the comparison that holds.
* ``fashion91``: full Fashion-MNIST to 91% (seeds 0 1 2).
* ``fashion93``: full Fashion-MNIST to 93% (seeds 0 1 2).

    python benchmarks/time_to_accuracy.py [--recipe quickstart] [--seeds 0 1 2] [--smoke]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import _common  # noqa: F401
from _common import REPO_ROOT, data_root, print_table

BENCH = REPO_ROOT / "benchmarks"
FASHION = ["--dataset", "fashion_mnist", "--save-frequency", "0", "--quiet"]
RECIPES = {
    "quickstart": {
        "args": ["--dataset", "mnist-sample", "--epochs", "10", "--quiet"],
        "target": 98.0,
        "seeds": [42, 1, 2],
        "hand": 10,
        "data": False,
    },
    # mynet v3 (pooling before BN-ReLU, a 128-unit hidden layer) at width 16, bf16 + channels-last
    # by --amp auto, no augmentation (it slows convergence in a short run), 2 epochs of one-cycle.
    "fashion91": {
        "args": [
            *FASHION,
            "--model-option",
            "version=3",
            "--model-option",
            "width=16",
            "--no-augment",
            "--batch-size",
            "128",
            "--lr",
            "6e-3",
            "--scheduler",
            "onecycle",
            "--epochs",
            "3",
        ],
        "target": 91.0,
        "seeds": [0, 1, 2],
        "hand": 0,
        "data": True,
    },
    # mynet v3 at width 32 (its 128-unit hidden layer with dropout 0.2), no augmentation (in 7
    # epochs it costs more accuracy than it regularises), label smoothing, 7 epochs of one-cycle.
    "fashion93": {
        "args": [
            *FASHION,
            "--model-option",
            "version=3",
            "--model-option",
            "dropout=0.2",
            "--no-augment",
            "--batch-size",
            "128",
            "--lr",
            "4e-3",
            "--scheduler",
            "onecycle",
            "--epochs",
            "7",
            "--label-smoothing",
            "0.1",
        ],
        "target": 93.0,
        "seeds": [0, 1, 2],
        "hand": 0,
        "data": True,
    },
}
EPOCH_LINE = re.compile(r"Epoch (\d+)/\d+ .* acc ([\d.]+)%")


def run_process(command, target: float, threads=None):
    """Run ``command`` (with ``threads`` intra-op threads, default torch's own); returns
    first step, time to ``target``, total (s from launch), accuracies, peak RSS (MB) and
    CPU seconds."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    launched, start = time.time(), time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    reached, first_step, accuracies, lines = None, None, [], []
    for line in process.stdout:
        lines.append(line)
        if line.startswith("FIRST_STEP "):
            first_step = float(line.split()[1]) - launched
        match = EPOCH_LINE.search(line)
        if match:
            accuracies.append(float(match.group(2)))
            if reached is None and accuracies[-1] >= target:
                reached = time.perf_counter() - start
    _, status, usage = os.wait4(process.pid, 0)
    total = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0 or not accuracies:
        sys.exit(f"{' '.join(command)} failed:\n{''.join(lines)}")
    return {
        "first_step": first_step,
        "reached": reached,
        "total": total,
        "final": accuracies[-1],
        "best": max(accuracies),
        "epochs": len(accuracies),
        "peak_mb": usage.ru_maxrss / 1024,
        "cpu": usage.ru_utime + usage.ru_stime,
    }


def run_recipe(name: str, recipe, seeds, data_dir: str, extra, threads=None):
    rows, results = [], {"trainer": [], "hand": []}
    print(f"{name}: python train.py {' '.join(recipe['args'] + extra)}  (target {recipe['target']:g}%)", flush=True)
    for seed in seeds:
        with tempfile.TemporaryDirectory() as runs:
            command = [
                sys.executable,
                str(BENCH / "_first_step.py"),
                *recipe["args"],
                *extra,
                "--seed",
                str(seed),
                "--runs-dir",
                runs,
            ] + (["--data-dir", data_dir] if recipe["data"] else [])
            contenders = [("trainer", command)]
            if recipe["hand"]:
                hand = [
                    sys.executable,
                    str(BENCH / "_hand_loop.py"),
                    str(seed),
                    str(recipe["hand"]),
                    str(recipe.get("hand_steps", 0)),
                ]
                contenders.append(("hand", hand))
                if seed % 2:  # alternate who goes first
                    contenders.reverse()
            for who, cmd in contenders:
                result = run_process(cmd, recipe["target"], threads)
                results[who].append(result)
                rows.append(
                    [
                        who,
                        seed,
                        f"{result['first_step']:.1f}" if result["first_step"] else "-",
                        f"{result['reached']:.1f}" if result["reached"] else "never",
                        f"{result['best']:.2f}",
                        f"{result['final']:.2f}",
                        f"{result['total']:.1f}",
                        f"{result['cpu']:.1f}",
                        f"{result['peak_mb']:.0f}",
                    ]
                )
                print("  " + " ".join(str(c) for c in rows[-1]), flush=True)
    print()
    print_table(
        [
            "run",
            "seed",
            "s to first step",
            f"s to {recipe['target']:g}%",
            "best acc %",
            "final acc %",
            "total s",
            "CPU s",
            "peak RSS MB",
        ],
        rows,
    )
    for who, found in results.items():
        if not found:
            continue
        reached = [r["reached"] for r in found if r["reached"]]
        print(
            f"\n{who}: median whole run {statistics.median(r['total'] for r in found):.1f} s, first step "
            f"{statistics.median(r['first_step'] for r in found):.1f} s, best accuracy "
            f"{min(r['best'] for r in found):.2f}-{max(r['best'] for r in found):.2f}%, "
            f"{len(reached)}/{len(found)} seeds reached {recipe['target']:g}%"
            + (f" (median {statistics.median(reached):.1f} s)" if reached else "")
            + f", peak RSS max {max(r['peak_mb'] for r in found):.0f} MB"
        )
    if results["hand"]:
        ratios = [t["total"] / h["total"] for t, h in zip(results["trainer"], results["hand"])]
        cpu = [t["cpu"] / h["cpu"] for t, h in zip(results["trainer"], results["hand"])]
        print(
            f"trainer/hand whole run per seed: {', '.join(f'{r:.2f}' for r in ratios)} (median "
            f"{statistics.median(ratios):.2f}); CPU time {', '.join(f'{r:.2f}' for r in cpu)}"
        )
    print(flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", action="append", choices=sorted(RECIPES), help="recipe(s) to run (default all)")
    parser.add_argument("--data-dir", help="folder holding FashionMNIST/raw (default ../shared/data)")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds (default: each recipe's own)")
    parser.add_argument("--device", help="passed to train.py (e.g. cuda); default: its own choice")
    parser.add_argument(
        "--threads",
        type=int,
        help="OMP_NUM_THREADS for every run (default: torch's choice, one "
        "per core); 1 keeps the CPU times comparable on a machine other jobs oversubscribe",
    )
    parser.add_argument("--smoke", action="store_true", help="one short run on the bundled sample")
    args = parser.parse_args()
    extra = ["--device", args.device] if args.device else []
    if args.smoke:
        smoke = {
            "args": ["--dataset", "mnist-sample", "--model", "mlp", "--epochs", "1", "--quiet"],
            "target": 50.0,
            "seeds": [0],
            "hand": 1,
            "hand_steps": 2,
            "data": False,
        }
        run_recipe("smoke", smoke, [0], ".", extra)
        return
    names = args.recipe or list(RECIPES)
    data_dir = str(data_root(args.data_dir)) if any(RECIPES[n]["data"] for n in names) else "."
    for name in names:
        run_recipe(name, RECIPES[name], args.seeds or RECIPES[name]["seeds"], data_dir, extra, args.threads)


if __name__ == "__main__":
    main()

"""Two processes under torchrun next to one process, on the same data, side by side.

    python benchmarks/distributed.py [--model mynet] [--epochs 3] [--rounds 3] [--batch-size 64]

Each round runs ``train.py`` once as a single process at batch 2B and once as
``torchrun --standalone --nproc_per_node=2`` at batch B per process (the same global
batch, the same order), alternating, and reads the epoch times the runs print (start-up
excluded). On a 2-core machine no speed-up is expected: two processes share the cores
the single one uses, so the ratio shows the cost of DDP (gradient all-reduce, the
agreement every 8 steps) rather than a gain. On a machine with free cores or GPUs the
same command shows the scaling.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import REPO_ROOT, median, print_table, spread

EPOCH = re.compile(r"Epoch (\d+)/\d+ .* (\d+\.\d+)s \(")


def epoch_times(command, cwd: Path, threads: str) -> list:
    env = {"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": threads, "PATH": "/usr/bin:/bin"}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    times = [float(m.group(2)) for m in EPOCH.finditer(result.stdout)]
    return times[1:] if len(times) > 1 else times  # the first epoch includes warm-up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mynet")
    parser.add_argument("--dataset", default="mnist-sample")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--batch-size", type=int, default=64, help="per process under torchrun (B); one process gets 2B"
    )
    parser.add_argument("--smoke", action="store_true", help="one round of 2 tiny epochs (tests)")
    args = parser.parse_args()
    if args.smoke:
        args.model, args.epochs, args.rounds = "mlp", 2, 1
    train = str(REPO_ROOT / "train.py")
    common = [
        "--dataset",
        args.dataset,
        "--model",
        args.model,
        "--epochs",
        str(args.epochs),
        "--quiet",
        "--device",
        "cpu",
        "--no-augment",
    ]
    single, single1, double = [], [], []
    samples = None
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for name in ("single", "single1", "ddp") if round_ % 2 == 0 else ("ddp", "single1", "single"):
                cwd = Path(tmp) / f"{name}{round_}"
                cwd.mkdir()
                if name.startswith("single"):
                    # One process with both cores (as a user would run it), and with one thread.
                    times = epoch_times(
                        [sys.executable, train, *common, "--batch-size", str(2 * args.batch_size)],
                        cwd,
                        threads="2" if name == "single" else "1",
                    )
                    (single if name == "single" else single1).append(median(times))
                else:
                    times = epoch_times(
                        [
                            sys.executable,
                            "-m",
                            "torch.distributed.run",
                            "--standalone",
                            "--nproc_per_node=2",
                            train,
                            *common,
                            "--batch-size",
                            str(args.batch_size),
                        ],
                        cwd,
                        threads="1",
                    )
                    double.append(median(times))
        import torch  # noqa: F401  (after the runs: the parent's import does not compete with them)
        from src.datasets import DatasetRegistry

        samples = len(DatasetRegistry.create(args.dataset, augment=False))
    rows = [
        [
            "1 process, batch %d" % (2 * args.batch_size),
            f"{median(single):.3f}",
            spread(single),
            f"{samples / median(single):,.0f}",
            "1.00x",
        ],
        [
            "1 process, 1 thread, batch %d" % (2 * args.batch_size),
            f"{median(single1):.3f}",
            spread(single1),
            f"{samples / median(single1):,.0f}",
            f"{median(single1) / median(single):.2f}x",
        ],
        [
            "2 processes (torchrun, 1 thread each), batch %d each" % args.batch_size,
            f"{median(double):.3f}",
            spread(double),
            f"{samples / median(double):,.0f}",
            f"{median(double) / median(single):.2f}x",
        ],
    ]
    print(
        f"{args.model} on {args.dataset}, {args.epochs} epochs, {args.rounds} alternating rounds "
        "(epoch times after the first, medians)\n"
    )
    print_table(["run", "s/epoch", "range", "samples/s", "time vs 1 process"], rows)


if __name__ == "__main__":
    main()

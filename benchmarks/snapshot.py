#!/usr/bin/env python
"""What an epoch-end save costs the training thread: the background writer's snapshot
(``FrozenState`` of model and optimizer: a copy of their state) against the synchronous
save it replaces (``CheckpointManager.save_epoch_end``: serialize, SHA-256, write and fsync
``latest_checkpoint.pt`` and, on an improvement, ``best_model.pt``). Alternating, medians.

    python benchmarks/snapshot.py [--models mlp resnet18] [--rounds 5] [--smoke]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import _common  # noqa: F401  (puts the repository on sys.path)
import torch

from _common import median, print_table
from src.models import ModelRegistry
from src.training import CheckpointManager
from src.training.background import FrozenState


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["mlp", "resnet18"], help="models (default mlp resnet18)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--smoke", action="store_true", help="one round of the MLP: only checks the script works")
    args = parser.parse_args()
    if args.smoke:
        args.models, args.rounds = ["mlp"], 1
    torch.set_num_threads(1)
    rows = []
    for name in args.models:
        model = ModelRegistry.create(name, num_classes=10)
        optimizer = torch.optim.AdamW(model.parameters())
        for parameter in model.parameters():
            parameter.grad = torch.zeros_like(parameter)
        optimizer.step()  # the optimizer's moments exist, as in training
        snapshot, save = [], []
        with tempfile.TemporaryDirectory() as directory:
            manager = CheckpointManager(directory, save_frequency=0)
            for round_number in range(args.rounds):
                started = time.perf_counter()
                FrozenState(model), FrozenState(optimizer)
                snapshot.append(time.perf_counter() - started)
                started = time.perf_counter()
                manager.save_epoch_end(
                    model, optimizer, round_number + 1, 0.1, 50.0 + round_number, {"global_step": round_number}
                )
                save.append(time.perf_counter() - started)
        parameters = sum(p.numel() for p in model.parameters())
        rows.append(
            [
                name,
                f"{parameters / 1e6:.2f}M",
                f"{median(snapshot) * 1e3:.1f}",
                f"{median(save) * 1e3:.1f}",
                f"{median(save) / median(snapshot):.0f}x",
            ]
        )
    print_table(["model", "parameters", "snapshot ms (training thread)", "synchronous save ms", "saved"], rows)


if __name__ == "__main__":
    main()

"""The hand-written contender of the quick start: the same data (the bundled mnist-sample
with its seeded affine draw), the same network (mynet version 2 written out as an
``nn.Sequential``), AdamW 1e-3, batch 64, bf16 autocast with channels-last where the CPU
has native bf16 (what ``--amp auto`` picks), and a validation pass per epoch. Nothing
else: no checkpoints, log, plot or status. Prints the same ``Epoch N/M ... acc X%``
lines as train.py, and ``FIRST_STEP``."""

from __future__ import annotations

import sys
import time

import _common  # noqa: F401
import torch
import torch.nn as nn

from src.datasets import DatasetRegistry
from src.training.fast_path import cpu_has_native_bf16
from src.utils import seed_everything


def block(a: int, b: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(a, b, 3, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU(inplace=True), nn.MaxPool2d(2)
    )


def main(seed: int, epochs: int, max_steps: int = 0) -> None:
    """Train ``epochs`` epochs (``max_steps`` > 0: at most that many steps each, a smoke run)."""
    seed_everything(seed)
    data = DatasetRegistry.create("mnist-sample", seed=seed)
    model = nn.Sequential(
        block(1, 32), block(32, 64), block(64, 128), nn.Flatten(), nn.Dropout(0.1), nn.Linear(128 * 9, 10)
    )
    train_loader, val_loader = data.get_dataloaders(batch_size=64)
    fast = cpu_has_native_bf16()
    if fast:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    criterion = nn.CrossEntropyLoss()
    first = True
    for epoch in range(1, epochs + 1):
        model.train()
        for step, (images, labels) in enumerate(train_loader):
            if max_steps and step == max_steps:
                break
            if fast:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", torch.bfloat16, enabled=fast):
                loss = criterion(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if first:
                print(f"FIRST_STEP {time.time():.6f}", flush=True)
                first = False
        model.eval()
        correct = 0
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=fast):
            for images, labels in val_loader:
                if fast:
                    images = images.contiguous(memory_format=torch.channels_last)
                correct += int((model(images).argmax(1) == labels).sum())
        print(f"Epoch {epoch}/{epochs}  val loss 0 acc {100.0 * correct / len(val_loader.labels):.2f}%", flush=True)


if __name__ == "__main__":
    main(*(int(argument) for argument in sys.argv[1:4]))

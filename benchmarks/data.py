#!/usr/bin/env python
"""Data path: one augmented training epoch of Fashion-MNIST (60,000 images, batch 64).

* ours:       ``reapply_transforms(epoch)`` (a fresh affine warp of the whole training set
              as batched tensor ops) + one pass of the tensor-resident loader;
* per-sample: a ``Dataset`` whose ``__getitem__`` converts one uint8 image to float,
              warps it with an equivalent random affine (rotation, shift, scale), and
              normalises it - what torchvision's MNIST + RandomAffine + ToTensor +
              Normalize does per item - behind a ``DataLoader`` with 0 and 2 workers.

Each contender's epochs alternate after a warm-up; the table shows median samples/s.

    python benchmarks/data.py [--rounds 3] [--smoke]
"""

from __future__ import annotations

import argparse
import math
import time

import _common  # noqa: F401
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from _common import data_root, median, print_table
from src.datasets import DatasetRegistry
from src.datasets.transforms import AffineAugmentation


class PerSampleAffine(Dataset):
    """One image at a time, as a classic torchvision pipeline does."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: float, std: float):
        self.images, self.labels, self.mean, self.std = images, labels, mean, std
        self.augmentation = AffineAugmentation()

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        image = self.images[index].float().div(255).unsqueeze(0)  # (1, C, H, W)
        a = self.augmentation
        angle = math.radians(a.max_rotation) * (torch.rand(()).item() * 2 - 1)
        scale = 1 + a.max_scale_change * (torch.rand(()).item() * 2 - 1)
        dx, dy = (torch.rand(2) * 2 - 1).mul(2 * a.max_shift).tolist()
        cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
        theta = torch.tensor([[[cos, -sin, dx], [sin, cos, dy]]])
        grid = F.affine_grid(theta, list(image.shape), align_corners=False)
        warped = F.grid_sample(image, grid, align_corners=False)[0]
        return (warped - self.mean) / self.std, self.labels[index]


def epoch_ours(dataset, loader, epoch):
    start = time.perf_counter()
    dataset.reapply_transforms(epoch)
    seen = 0
    for images, labels in loader:
        seen += images.shape[0]
    return seen / (time.perf_counter() - start)


def epoch_per_sample(loader):
    start = time.perf_counter()
    seen = 0
    for images, labels in loader:
        seen += images.shape[0]
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help="folder holding FashionMNIST/raw (default ../shared/data)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="tiny run that only checks the script works")
    args = parser.parse_args()
    dataset = DatasetRegistry.create(
        "fashion_mnist", data_dir=str(data_root(args.data_dir)), augment=True, download=False
    )
    if args.smoke:
        dataset._set_data(
            dataset.train_images[:2048], dataset.train_labels[:2048], dataset.test_images[:64], dataset.test_labels[:64]
        )
        args.rounds = 1
    loader, _ = dataset.get_dataloaders(batch_size=64)
    per_sample = PerSampleAffine(dataset.train_images, dataset.train_labels, dataset.mean, dataset.std)
    contenders = {
        "ours": lambda e: epoch_ours(dataset, loader, e),
        "per-sample, 0 workers": lambda e: epoch_per_sample(DataLoader(per_sample, batch_size=64, shuffle=True)),
        "per-sample, 2 workers": lambda e: epoch_per_sample(
            DataLoader(per_sample, batch_size=64, shuffle=True, num_workers=2)
        ),
    }
    for run in contenders.values():
        run(100)  # warm-up
    rates = {name: [] for name in contenders}
    for round_number in range(args.rounds):
        for name, run in contenders.items():
            rates[name].append(run(round_number + 1))
    best = median(rates["ours"])
    rows = [[name, f"{median(r):,.0f}", f"{best / median(r):.1f}x"] for name, r in rates.items()]
    print(
        f"One augmented epoch, {len(dataset)} images, batch 64, torch {torch.__version__}, {torch.get_num_threads()} threads\n"
    )
    print_table(["pipeline", "samples/s (median)", "ours is faster by"], rows)


if __name__ == "__main__":
    main()

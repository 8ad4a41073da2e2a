#!/usr/bin/env python
"""Image folders: cache build, cache reuse, and training-batch throughput.

Builds a folder of generated 32x32 JPEGs (10 classes of coloured shapes), then measures:

* cache build: decoding every image into the uint8 cache (images/s), from scratch each round;
* cache reuse: creating the data set again with its cache present (seconds);
* training batches (batch 256, crop-flip with 4-pixel padding, normalised float batches):
  - ours, in memory: ``reapply_transforms(epoch)`` + one pass of ``get_dataloaders``' loader;
  - ours, memory-mapped: the same data set over the budget (``memory_budget_mb=0``): the
    cache is a memory map and each batch is gathered and augmented on its own;
  - per-sample Pillow: a ``Dataset`` whose ``__getitem__`` opens one JPEG with Pillow, pads
    by 4, crops and flips at random and normalises by hand (what torchvision's ImageFolder
    + RandomCrop(32, padding=4) + RandomHorizontalFlip + ToTensor + Normalize does, without
    torchvision), behind ``DataLoader(num_workers=2, shuffle=True, persistent_workers=True)``.
  Steady state: one warm-up epoch each, then the contenders' epochs alternate.

    python benchmarks/imagefolder.py [--images 5000] [--rounds 3] [--folder PATH] [--smoke]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch.utils.data import DataLoader, Dataset

from _common import QuietOutput, median, print_table
from src.datasets import DatasetRegistry

COLOURS = [
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
]


def make_folder(root: Path, train: int, val: int, seed: int = 0) -> None:
    """``train`` and ``val`` 32x32 JPEGs spread over 10 classes (a shape in a class colour)."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("val", val)):
        for index in range(count):
            label = index % len(COLOURS)
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            image = Image.new("RGB", (32, 32), tuple(int(v) for v in rng.integers(0, 80, 3)))
            r = int(rng.integers(5, 11))
            x, y = (int(v) for v in rng.integers(r, 32 - r, 2))
            box = (x - r, y - r, x + r, y + r)
            (ImageDraw.Draw(image).ellipse if label % 2 else ImageDraw.Draw(image).rectangle)(box, fill=COLOURS[label])
            image.save(folder / f"{index:06d}.jpg", quality=90)


class PillowCropFlip(Dataset):
    """One JPEG at a time: decode, random crop (pad 4) and flip, to tensor, normalise."""

    def __init__(self, files, labels, mean, std):
        self.files, self.labels = files, labels
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __len__(self):
        return len(self.files)

    def __getitem__(self, index):
        with Image.open(self.files[index]) as image:
            pixels = torch.from_numpy(np.asarray(image.convert("RGB"))).permute(2, 0, 1)
        padded = F.pad(pixels, (4, 4, 4, 4))
        top, left = torch.randint(0, 9, (2,)).tolist()
        crop = padded[:, top : top + 32, left : left + 32]
        if torch.rand(()) < 0.5:
            crop = crop.flip(-1)
        return (crop.float().div_(255) - self.mean) / self.std, self.labels[index]


def epoch_ours(dataset, loader, epoch: int) -> float:
    start = time.perf_counter()
    dataset.reapply_transforms(epoch)
    loader.set_epoch(epoch)
    seen = sum(images.shape[0] for images, _ in loader)
    return seen / (time.perf_counter() - start)


def epoch_pillow(loader) -> float:
    start = time.perf_counter()
    seen = sum(images.shape[0] for images, _ in loader)
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=5000, help="training images (validation: a fifth)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--folder", help="where to build the image folder (default: a temporary folder)")
    parser.add_argument("--smoke", action="store_true", help="200 images, 1 round: checks the script runs")
    args = parser.parse_args()
    if args.smoke:
        args.images, args.rounds = 200, 1
    torch.set_num_threads(1)
    temporary = None if args.folder else tempfile.mkdtemp(prefix="imagefolder-bench-")
    root = Path(args.folder or temporary) / "folder"
    try:
        start = time.perf_counter()
        make_folder(root, args.images, max(10, args.images // 5))
        print(
            f"Generated {args.images} + {max(10, args.images // 5)} JPEGs (32x32) in "
            f"{time.perf_counter() - start:.1f} s under {root}"
        )
        run(root, args.rounds)
    finally:
        if temporary:
            shutil.rmtree(temporary, ignore_errors=True)


def run(root: Path, rounds: int) -> None:
    build, reuse = [], []
    for _ in range(rounds):
        shutil.rmtree(root / ".exptrain-cache", ignore_errors=True)
        start = time.perf_counter()
        with QuietOutput():
            dataset = DatasetRegistry.create("imagefolder", root=str(root), progress=False)
        build.append((len(dataset) + len(dataset.test_labels)) / (time.perf_counter() - start))
    reuse_plain = []
    for _ in range(max(5, rounds)):
        start = time.perf_counter()
        plain = DatasetRegistry.create("imagefolder", root=str(root), progress=False, augment=False)
        reuse_plain.append(time.perf_counter() - start)
        start = time.perf_counter()
        dataset = DatasetRegistry.create("imagefolder", root=str(root), progress=False)
        reuse.append(time.perf_counter() - start)
        assert dataset.cache_reused and plain.cache_reused
    workers = dataset_workers()
    print(
        f"\nCache: build {median(build):,.0f} images/s ({workers} decoding processes), "
        f"{(dataset.train_images.numel() + dataset.test_images.numel()) / 2**20:.1f} MiB; reuse "
        f"{median(reuse_plain) * 1000:.0f} ms (scan, check, load; augment=False), "
        f"{median(reuse) * 1000:.0f} ms with the first crop-flip draw (medians of {len(reuse)})\n"
    )

    mapped = DatasetRegistry.create("imagefolder", root=str(root), progress=False, memory_budget_mb=0)
    assert mapped.memory_mapped and not dataset.memory_mapped
    files = sorted(str(p) for p in (root / "train").rglob("*.jpg"))
    labels = [int(Path(f).parent.name[len("class") :]) for f in files]
    pillow = DataLoader(
        PillowCropFlip(files, labels, dataset.mean, dataset.std),
        batch_size=256,
        shuffle=True,
        num_workers=2,
        persistent_workers=True,
    )
    contenders = {
        "ours, in memory": (
            lambda loader, epoch: epoch_ours(dataset, loader, epoch),
            dataset.get_dataloaders(batch_size=256)[0],
        ),
        "ours, memory-mapped": (
            lambda loader, epoch: epoch_ours(mapped, loader, epoch),
            mapped.get_dataloaders(batch_size=256)[0],
        ),
        "per-sample Pillow, 2 workers": (lambda loader, epoch: epoch_pillow(loader), pillow),
    }
    rates = {name: [] for name in contenders}
    for epoch in range(rounds + 1):  # epoch 0 warms up (worker start, first reads)
        for name, (measure, loader) in contenders.items():
            rate = measure(loader, epoch)
            if epoch:
                rates[name].append(rate)
    ours = median(rates["ours, in memory"])
    rows = [
        [name, f"{median(values):,.0f}", f"{min(values):,.0f}-{max(values):,.0f}", f"{ours / median(values):.2f}x"]
        for name, values in rates.items()
    ]
    print_table(
        ["training batches (crop-flip, batch 256)", "samples/s (median)", "range", "in-memory ours / this"], rows
    )
    print(
        f"\nmemory-mapped / in-memory: {median(rates['ours, memory-mapped']) / ours:.2f}; "
        f"ours (in memory) / per-sample Pillow: {ours / median(rates['per-sample Pillow, 2 workers']):.1f}x"
    )


def dataset_workers() -> int:
    import os

    return min(4, os.cpu_count() or 1)


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Framework overhead: a hand-written loop vs this project's Trainer vs PyTorch Lightning.

Same model, data (Fashion-MNIST, no augmentation), optimizer (AdamW 1e-3) and batch size.
Each contender trains and validates every epoch:

* hand:      the floor - a minimal loop over pre-normalised tensors, one sync per epoch;
* trainer:   ``src.training.Trainer`` with its defaults on (per-epoch validation, log,
             plot, latest/best checkpoints, progress bar to a silenced stderr);
* lightning: ``pytorch_lightning.Trainer`` with its defaults (checkpointing, logger,
             progress bar, sanity check), fed by DataLoader(TensorDataset) of the same
             pre-normalised tensors, logging train loss per step and val loss/acc.

After a warm-up run of each, the contenders are run in alternating order; the table shows
the median time per epoch and the ratios to the hand-written loop.

    python benchmarks/overhead.py [--rounds 3] [--smoke]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import warnings

import _common  # noqa: F401  (puts the repository on sys.path)
import torch
import torch.nn as nn

from _common import QuietOutput, data_root, median, print_table
from src.datasets import DatasetRegistry, TensorLoader
from src.models import ModelRegistry
from src.training import CheckpointManager, ExperimentManager, Trainer


def make_model(name: str) -> nn.Module:
    return ModelRegistry.create(name, num_classes=10)


def run_hand(name, data, tensors, batch_size, epochs):
    x, y, xv, yv = tensors
    torch.manual_seed(0)
    model = make_model(name)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    criterion = nn.CrossEntropyLoss()
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(y))
        for i in range(0, len(y), batch_size):
            index = order[i : i + batch_size]
            loss = criterion(model(x[index]), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        correct = torch.zeros((), dtype=torch.long)
        with torch.inference_mode():
            for i in range(0, len(yv), 256):
                correct += (model(xv[i : i + 256]).argmax(1) == yv[i : i + 256]).sum()
        correct.item()
    return time.perf_counter() - start


def run_trainer(name, data, tensors, batch_size, epochs):
    torch.manual_seed(0)
    model = make_model(name)
    images, labels, test_images, test_labels, mean, std = data
    train_loader = TensorLoader(images, labels, batch_size, mean, std, shuffle=True)
    val_loader = TensorLoader(test_images, test_labels, 256, mean, std)
    with tempfile.TemporaryDirectory() as runs:
        experiment = ExperimentManager(base_dir=runs)
        trainer = Trainer(
            model, train_loader, val_loader, nn.CrossEntropyLoss(), torch.optim.AdamW(model.parameters(), lr=1e-3),
            torch.device("cpu"), experiment, CheckpointManager(experiment.checkpoints_dir), show_progress=True,
        )
        start = time.perf_counter()
        with QuietOutput():
            trainer.train(epochs=epochs)
        elapsed = time.perf_counter() - start
        experiment.release()
    return elapsed


def run_lightning(name, data, tensors, batch_size, epochs):
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset

    x, y, xv, yv = tensors

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = make_model(name)
            self.criterion = nn.CrossEntropyLoss()

        def training_step(self, batch, batch_index):
            images, labels = batch
            loss = self.criterion(self.model(images), labels)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, batch_index):
            images, labels = batch
            outputs = self.model(images)
            self.log("val_loss", self.criterion(outputs, labels))
            self.log("val_acc", (outputs.argmax(1) == labels).float().mean())

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=1e-3)

    torch.manual_seed(0)
    module = Module()
    train = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True)
    val = DataLoader(TensorDataset(xv, yv), batch_size=256)
    with tempfile.TemporaryDirectory() as root:
        trainer = pl.Trainer(max_epochs=epochs, default_root_dir=root, accelerator="cpu", devices=1)
        start = time.perf_counter()
        with QuietOutput():
            trainer.fit(module, train, val)
        return time.perf_counter() - start


CONTENDERS = {"hand": run_hand, "trainer": run_trainer, "lightning": run_lightning}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help="folder holding FashionMNIST/raw (default ../shared/data)")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds per configuration (default 3)")
    parser.add_argument("--mynet-subset", type=int, default=10000, help="training images for mynet (default 10000)")
    parser.add_argument("--models", nargs="+", default=["mlp", "mynet"], help="models to measure (default both)")
    parser.add_argument("--smoke", action="store_true", help="tiny run that only checks the script works")
    parser.add_argument("--no-lightning", action="store_true", help="skip Lightning (if it is not installed)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    if not args.no_lightning:
        try:
            import pytorch_lightning  # noqa: F401
        except ImportError:
            print("PyTorch Lightning is not installed (pip install -e '.[bench]'); measuring without it.\n")
            args.no_lightning = True
    contenders = {k: v for k, v in CONTENDERS.items() if not (args.no_lightning and k == "lightning")}

    full = DatasetRegistry.create("fashion_mnist", data_dir=str(data_root(args.data_dir)), augment=False, download=False)
    configs = [("mlp", 64, 5, None), ("mlp", 256, 5, None), ("mynet", 64, 1, args.mynet_subset), ("mynet", 256, 1, args.mynet_subset)]
    configs = [c for c in configs if c[0] in args.models]
    if args.smoke:
        configs, args.rounds = [("mlp", 256, 1, 2048)], 1
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; median seconds per epoch over {args.rounds} rounds\n")
    rows = []
    for model_name, batch_size, epochs, subset in configs:
        count = subset or len(full.train_labels)
        data = (full.train_images[:count], full.train_labels[:count], full.test_images, full.test_labels, full.mean, full.std)
        normalise = lambda images: (images.float() / 255 - full.mean) / full.std  # noqa: E731
        tensors = (normalise(data[0]), data[1], normalise(data[2]), data[3])
        for name, run in contenders.items():  # warm-up: imports, allocator, first-call costs
            run(model_name, data, tensors, batch_size, 1)
        times = {name: [] for name in contenders}
        names = list(contenders)
        for round_number in range(args.rounds):
            for name in names[round_number % len(names):] + names[: round_number % len(names)]:
                times[name].append(contenders[name](model_name, data, tensors, batch_size, epochs) / epochs)
        per_epoch = {name: median(values) for name, values in times.items()}
        row = [model_name, batch_size, count] + [f"{per_epoch[n]:.2f}" for n in contenders]
        row.append(f"{per_epoch['trainer'] / per_epoch['hand']:.3f}")
        if "lightning" in per_epoch:
            row += [f"{per_epoch['lightning'] / per_epoch['hand']:.3f}", f"{per_epoch['lightning'] / per_epoch['trainer']:.2f}"]
        rows.append(row)
        print(f"{model_name} b{batch_size}: " + ", ".join(f"{n} {per_epoch[n]:.2f}s" for n in contenders), flush=True)
    headers = ["model", "batch", "train images"] + [f"{n} s/epoch" for n in contenders] + ["trainer/hand"]
    if "lightning" in contenders:
        headers += ["lightning/hand", "lightning/trainer"]
    print()
    print_table(headers, rows)


if __name__ == "__main__":
    main()

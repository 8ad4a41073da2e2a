#!/usr/bin/env python
"""Framework overhead: a hand-written loop vs this project's Trainer vs PyTorch Lightning.

Same model, data (Fashion-MNIST, no augmentation), optimizer (AdamW 1e-3) and batch size.
Each contender trains and validates every epoch:

* hand:      the floor - a minimal loop over pre-normalised tensors, one sync per epoch;
* trainer:   ``src.training.Trainer`` with its defaults on (per-epoch validation, log,
             plot, latest/best checkpoints written by the background writer, progress
             bar to a silenced stderr);
* trainer-sync: the same with ``background_writes=False`` (checkpoints, log and status
             written on the training thread, as before the background writer);
* lightning: ``pytorch_lightning.Trainer`` with its defaults (checkpointing, logger,
             progress bar, sanity check), fed by DataLoader(TensorDataset) of the same
             pre-normalised tensors, logging train loss per step and val loss/acc.

After a warm-up run of each, the contenders are run in alternating order (``--rounds``,
default 7). For each contender the table shows the median wall time and process CPU time
(user + system) per epoch, and the ratios to the hand-written loop: the median over rounds
of the ratio of each round's pair, with its spread (min-max). Where ``perf stat`` can
count instructions (often not in a VM), their ratio is printed too. On a shared machine
CPU time moves less than wall time; a ratio's spread says how far to trust it.

A second table splits the trainers' extra time on the training thread: the per-epoch
bookkeeping (everything in an epoch but the step loop and validation: the state snapshot,
the hand-off to the writer or the synchronous save, log, status, a throttled plot), the
final plot at the end of the run, and the step loop's overhead per step against the
hand-written loop's training time.

    python benchmarks/overhead.py [--rounds 7] [--smoke]
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

from _common import Measure, QuietOutput, data_root, median, print_table
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
    with Measure() as measured:
        measured.train_times = _hand_epochs(model, optimizer, criterion, x, y, xv, yv, batch_size, epochs)
    return measured


def _hand_epochs(model, optimizer, criterion, x, y, xv, yv, batch_size, epochs):
    """Returns the seconds of each epoch's training loop (validation excluded)."""
    train_times = []
    for _ in range(epochs):
        started = time.perf_counter()
        model.train()
        order = torch.randperm(len(y))
        for i in range(0, len(y), batch_size):
            index = order[i : i + batch_size]
            loss = criterion(model(x[index]), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        loss.item()
        train_times.append(time.perf_counter() - started)
        model.eval()
        correct = torch.zeros((), dtype=torch.long)
        with torch.inference_mode():
            for i in range(0, len(yv), 256):
                correct += (model(xv[i : i + 256]).argmax(1) == yv[i : i + 256]).sum()
        correct.item()
    return train_times


def run_trainer(name, data, tensors, batch_size, epochs, background_writes=True):
    torch.manual_seed(0)
    model = make_model(name)
    images, labels, test_images, test_labels, mean, std = data
    train_loader = TensorLoader(images, labels, batch_size, mean, std, shuffle=True)
    val_loader = TensorLoader(test_images, test_labels, 256, mean, std)
    with tempfile.TemporaryDirectory() as runs:
        experiment = ExperimentManager(base_dir=runs)
        trainer = Trainer(
            model,
            train_loader,
            val_loader,
            nn.CrossEntropyLoss(),
            torch.optim.AdamW(model.parameters(), lr=1e-3),
            torch.device("cpu"),
            experiment,
            CheckpointManager(experiment.checkpoints_dir),
            show_progress=True,
            background_writes=background_writes,
        )
        timed = {name: _timed(trainer, name) for name in ("train_epoch", "validate", "_run_epoch")}
        timed["plot_if_stale"] = _timed(trainer.records, "plot_if_stale")  # the curves: the run records helper
        with QuietOutput(), Measure() as measured:
            trainer.train(epochs=epochs)
        experiment.release()
    # Where the time on the training thread goes: the step loop (train_epoch), validation,
    # the per-epoch bookkeeping (the rest of _run_epoch: snapshot, hand-off, log, status,
    # throttled plots) and the end of the run (the final plot).
    measured.train_times = timed["train_epoch"]
    measured.bookkeeping = [
        run - train - val for run, train, val in zip(timed["_run_epoch"], timed["train_epoch"], timed["validate"])
    ]
    measured.final_plot = sum(timed["plot_if_stale"])
    return measured


def run_trainer_sync(name, data, tensors, batch_size, epochs):
    return run_trainer(name, data, tensors, batch_size, epochs, background_writes=False)


def _timed(owner, name):
    """Record the seconds of every call of ``owner.name`` in the returned list."""
    method, times = getattr(owner, name), []

    def timed(*args, **kwargs):
        started = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            times.append(time.perf_counter() - started)

    setattr(owner, name, timed)
    return times


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
        with QuietOutput(), Measure() as measured:
            trainer.fit(module, train, val)
        return measured


CONTENDERS = {"hand": run_hand, "trainer": run_trainer, "trainer-sync": run_trainer_sync, "lightning": run_lightning}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help="folder holding FashionMNIST/raw (default ../shared/data)")
    parser.add_argument("--rounds", type=int, default=7, help="measured rounds per configuration (default 7)")
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

    full = DatasetRegistry.create(
        "fashion_mnist", data_dir=str(data_root(args.data_dir)), augment=False, download=False
    )
    configs = [
        ("mlp", 64, 5, None),
        ("mlp", 256, 5, None),
        ("mynet", 64, 1, args.mynet_subset),
        ("mynet", 256, 1, args.mynet_subset),
    ]
    configs = [c for c in configs if c[0] in args.models]
    if args.smoke:
        configs, args.rounds = [("mlp", 256, 1, 2048)], 1
    perf = (
        "instruction counts by perf" if Measure.perf_available() else "no instruction counts (perf cannot count here)"
    )
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; per epoch, median over {args.rounds} "
        f"alternating rounds; {perf}\n"
    )
    rows, costs = [], []
    for model_name, batch_size, epochs, subset in configs:
        count = subset or len(full.train_labels)
        data = (
            full.train_images[:count],
            full.train_labels[:count],
            full.test_images,
            full.test_labels,
            full.mean,
            full.std,
        )
        normalise = lambda images: (images.float() / 255 - full.mean) / full.std  # noqa: E731
        tensors = (normalise(data[0]), data[1], normalise(data[2]), data[3])
        for name, run in contenders.items():  # warm-up: imports, allocator, first-call costs
            run(model_name, data, tensors, batch_size, 1)
        runs = {name: [] for name in contenders}
        names = list(contenders)
        for round_number in range(args.rounds):
            for name in names[round_number % len(names) :] + names[: round_number % len(names)]:
                runs[name].append(contenders[name](model_name, data, tensors, batch_size, epochs))
        wall = {n: median([m.wall / epochs for m in runs[n]]) for n in contenders}
        cpu = {n: median([m.cpu / epochs for m in runs[n]]) for n in contenders}
        row = [model_name, batch_size, count] + [f"{wall[n]:.3f} / {cpu[n]:.3f}" for n in contenders]
        for other in [n for n in contenders if n != "hand"]:
            row += [_ratio(runs[other], runs["hand"], "wall"), _ratio(runs[other], runs["hand"], "cpu")]
            if Measure.perf_available():
                row.append(_ratio(runs[other], runs["hand"], "instructions"))
        rows.append(row)
        steps = -(-count // batch_size)
        hand_train = median([t for m in runs["hand"] for t in m.train_times])
        for name in [n for n in contenders if n.startswith("trainer")]:
            bookkeeping = [t for m in runs[name] for t in m.bookkeeping]
            per_step = (median([t for m in runs[name] for t in m.train_times]) - hand_train) / steps
            costs.append(
                [
                    model_name,
                    batch_size,
                    name,
                    f"{median(bookkeeping) * 1e3:.1f} ({spread_ms(bookkeeping)})",
                    f"{median([m.final_plot for m in runs[name]]) * 1e3:.0f}",
                    f"{per_step * 1e6:.0f}",
                ]
            )
        print(
            f"{model_name} b{batch_size}: "
            + ", ".join(f"{n} {wall[n]:.3f}s wall {cpu[n]:.3f}s CPU" for n in contenders),
            flush=True,
        )
    headers = ["model", "batch", "train images"] + [f"{n} s/epoch wall / CPU" for n in contenders]
    for other in [n for n in contenders if n != "hand"]:
        headers += [f"{other}/hand wall", f"{other}/hand CPU"] + (
            [f"{other}/hand instr."] if Measure.perf_available() else []
        )
    print()
    print_table(headers, rows)
    print(
        "\nThe trainer's extra time on the training thread (medians over rounds and epochs; trainer-sync "
        "writes its checkpoints on the training thread, as before the background writer):\n"
    )
    print_table(
        [
            "model",
            "batch",
            "contender",
            "bookkeeping ms/epoch (spread)",
            "final plot ms",
            "step loop overhead us/step (vs hand)",
        ],
        costs,
    )


def spread_ms(values) -> str:
    return f"{min(values) * 1e3:.1f}-{max(values) * 1e3:.1f}"


def _ratio(mine, hands, field: str) -> str:
    """Median of the per-round ratios, with their spread."""
    ratios = [
        getattr(a, field) / getattr(b, field)
        for a, b in zip(mine, hands)
        if getattr(a, field) is not None and getattr(b, field)
    ]
    if not ratios:
        return "-"
    return f"{median(ratios):.3f} ({min(ratios):.2f}-{max(ratios):.2f})"


if __name__ == "__main__":
    main()

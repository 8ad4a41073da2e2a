"""Training curves as one PNG: loss, accuracy and learning rate per epoch.

Train and validation share the loss and the accuracy axes; the best epoch (the one
``best_model.pt`` holds) is marked, and so are the points where the run was resumed or
forked (``Trainer.starts``). The title names the experiment, model and data set.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional

from ..utils.io import atomic_write_bytes

_START_STYLE = {"resume": ("tab:gray", "resumed"), "fork": ("tab:purple", "forked")}


def run_title(experiment: Optional[str], config: Optional[Mapping[str, Any]]) -> str:
    """``"exp3 (baseline): mynet on fashion_mnist"`` from a name and a run configuration."""
    config = config or {}
    label = config.get("name") if isinstance(config.get("name"), str) else None
    head = (experiment or "training") + (f" ({label})" if label else "")
    model, dataset = config.get("model"), config.get("dataset")
    if isinstance(model, str) and isinstance(dataset, str):
        return f"{head}: {model} on {dataset}"
    return head


def best_epoch_of(history: Dict[str, List[Any]]) -> Optional[int]:
    """The first epoch with the highest validation accuracy (None for an empty history)."""
    pairs = list(zip(history.get("epoch", []), history.get("val_accuracy", [])))
    if not pairs:
        return None
    best = max(accuracy for _, accuracy in pairs)
    return next(epoch for epoch, accuracy in pairs if accuracy == best)


def plot_history(
    history: Dict[str, List[Any]],
    path: Path,
    *,
    title: Optional[str] = None,
    best_epoch: Optional[int] = None,
    starts: Iterable[Mapping[str, Any]] = (),
) -> None:
    """Draw the curves of ``history`` and write them atomically to ``path``.

    Args:
        title: the figure's title (``run_title``); none when omitted.
        best_epoch: the epoch to mark as best (default: the highest validation accuracy).
        starts: resume and fork points, ``{"kind": "resume"|"fork", "epoch": completed
            epochs, "mid_epoch": bool}``; drawn as vertical lines (inside the next epoch
            for a mid-epoch resume).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    epochs = list(history["epoch"])
    if best_epoch is None or best_epoch not in epochs:
        best_epoch = best_epoch_of(history)
    # Fixed margins and legend places: tight_layout and legend "best" double the cost.
    figure = Figure(figsize=(14, 4.2), dpi=80)
    figure.subplots_adjust(left=0.05, right=0.99, bottom=0.13, top=0.86 if title else 0.93, wspace=0.25)
    loss_axes, accuracy_axes, lr_axes = figure.subplots(1, 3, sharex=True)
    if title:
        figure.suptitle(title, fontsize=12)
    for axes, key, label, corner in (
        (loss_axes, "loss", "Loss", "upper right"),
        (accuracy_axes, "accuracy", "Accuracy (%)", "lower right"),
    ):
        axes.plot(epochs, history[f"train_{key}"], marker="o", markersize=3, label="train")
        axes.plot(epochs, history[f"val_{key}"], marker="o", markersize=3, label="validation")
        axes.set_title(label, fontsize=10, y=1.0)  # a fixed place: automatic placement costs a third of the drawing
        axes.set_ylabel(label)
        axes.legend(loc=corner)
    lr_axes.plot(epochs, history["learning_rate"], marker="o", markersize=3, color="tab:green")
    lr_axes.set_title("Learning rate", fontsize=10, y=1.0)
    rates = [r for r in history["learning_rate"] if r > 0]
    if rates and max(rates) / min(rates) > 50:
        lr_axes.set_yscale("log")
    if best_epoch is not None:
        index = epochs.index(best_epoch)
        accuracy = history["val_accuracy"][index]
        accuracy_axes.plot(
            [best_epoch],
            [accuracy],
            marker="*",
            markersize=14,
            color="tab:red",
            linestyle="none",
            label=f"best {accuracy:.2f}% @{best_epoch}",
            zorder=5,
        )
        accuracy_axes.legend(loc="lower right")
        for axes in (loss_axes, accuracy_axes, lr_axes):
            axes.axvline(best_epoch, color="tab:red", alpha=0.25, linewidth=1)
    _mark_starts((loss_axes, accuracy_axes, lr_axes), starts)
    # Whole epochs on the shared x axis (one epoch: just its own tick).
    if len(set(epochs)) > 1:
        loss_axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    elif epochs:
        loss_axes.set_xticks(epochs[:1])
    for axes in (loss_axes, accuracy_axes, lr_axes):
        axes.set_xlabel("epoch")
        axes.grid(alpha=0.3)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    atomic_write_bytes(path, buffer.getvalue())


def _mark_starts(all_axes, starts: Iterable[Mapping[str, Any]]) -> None:
    for start in starts:
        kind, epoch = start.get("kind"), start.get("epoch")
        if kind not in _START_STYLE or not isinstance(epoch, int) or isinstance(epoch, bool):
            continue
        color, text = _START_STYLE[kind]
        x = epoch + (0.5 if start.get("mid_epoch") else 0.0)
        for axes in all_axes:
            axes.axvline(x, color=color, linestyle="--", linewidth=1.2)
        axes = all_axes[-1]  # the learning-rate panel has no legend to collide with
        axes.annotate(
            text,
            xy=(x, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(2, -12),
            textcoords="offset points",
            fontsize=8,
            color=color,
        )

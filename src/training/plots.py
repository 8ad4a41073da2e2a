"""Training curves: loss and accuracy, train and validation, as one PNG."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Dict, List

from ..utils.io import atomic_write_bytes


def plot_history(history: Dict[str, List[Any]], path: Path) -> None:
    """Draw the curves of ``history`` and write them atomically to ``path``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    # Fixed margins and legend places: tight_layout and legend "best" double the cost.
    figure = Figure(figsize=(10, 4), dpi=80)
    figure.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.95, wspace=0.22)
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    epochs = history["epoch"]
    for axes, key, label, corner in ((loss_axes, "loss", "Loss", "upper right"),
                                     (accuracy_axes, "accuracy", "Accuracy (%)", "lower right")):
        axes.plot(epochs, history[f"train_{key}"], marker="o", markersize=3, label="train")
        axes.plot(epochs, history[f"val_{key}"], marker="o", markersize=3, label="validation")
        axes.set_xlabel("epoch")
        axes.set_ylabel(label)
        axes.grid(alpha=0.3)
        axes.legend(loc=corner)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    atomic_write_bytes(path, buffer.getvalue())

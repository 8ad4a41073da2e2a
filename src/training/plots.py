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

    figure = Figure(figsize=(10, 4), dpi=100)
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    epochs = history["epoch"]
    for axes, key, label in ((loss_axes, "loss", "Loss"), (accuracy_axes, "accuracy", "Accuracy (%)")):
        axes.plot(epochs, history[f"train_{key}"], marker="o", markersize=3, label="train")
        axes.plot(epochs, history[f"val_{key}"], marker="o", markersize=3, label="validation")
        axes.set_xlabel("epoch")
        axes.set_ylabel(label)
        axes.grid(alpha=0.3)
        axes.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    atomic_write_bytes(path, buffer.getvalue())

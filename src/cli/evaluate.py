"""``exptrain evaluate``: evaluate a checkpoint on a split and keep the numbers and pictures.

The model is rebuilt from the checkpoint alone (``checkpoints.load_model``), the data
from ``config.json`` through ``DatasetRegistry`` (never downloaded here), and batches are
normalised exactly as the run's validation loader does, so the accuracy of a checkpoint
saved at an epoch's end equals the validation accuracy the run logged for that epoch.

Writes ``evaluation.json``, ``confusion_matrix.png`` and ``mistakes.png`` atomically into
``EXP/evaluation/CHECKPOINT-SPLIT[-tta]/`` (refused while a live process trains in the
experiment: only it writes there) or into ``--out DIR``.
"""

from __future__ import annotations

import inspect
import io
import json
import math
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
import torch.nn.functional as F

from ..datasets import DatasetRegistry, TensorLoader
from ..utils import get_device
from ..utils.io import atomic_write_bytes
from .checkpoints import describe, load_model
from .common import (
    EVALUATION_DIR,
    ToolError,
    checkpoint_file_name,
    class_names_for,
    find_experiment,
    output_directory,
    print_warning,
    read_config,
    refuse_if_running,
)

RESULT_FILE = "evaluation.json"
CONFUSION_FILE = "confusion_matrix.png"
MISTAKES_FILE = "mistakes.png"
SPLITS = ("test", "train")


def build_dataset(config: Dict[str, Any], data_dir: Optional[str] = None):
    """The run's data set from its configuration, without augmentation and without
    downloading (a missing file is a ``DataError`` naming it).

    Raises:
        ToolError: the configuration names no registered data set.
        DataError, ConfigError: the data cannot be read, or an option is bad.
    """
    name = config.get("dataset")
    if not isinstance(name, str) or name not in DatasetRegistry:
        raise ToolError(
            f"The configuration's dataset {name!r} is not available: {DatasetRegistry.unknown_message(name)}"
        )
    options = config.get("dataset_options") or {}
    if not isinstance(options, dict):
        raise ToolError(f"The configuration's dataset_options {options!r} is not a mapping of options.")
    accepted = inspect.signature(DatasetRegistry.get(name)).parameters
    wanted = {
        "data_dir": data_dir or config.get("data_dir"),
        "augment": False,
        "seed": config.get("seed"),
        "download": False,
        "progress": False,
    }
    fixed = {k: v for k, v in wanted.items() if k in accepted and k not in options}
    return DatasetRegistry.create(name, **fixed, **options)


def split_tensors(dataset, split: str):
    """``(uint8 images, labels)`` of ``split``: test (the validation split) or train (un-augmented)."""
    if split == "test":
        return dataset.test_images, dataset.test_labels
    if split == "train":
        return dataset.train_images, dataset.train_labels
    raise ToolError(f"Unknown split {split!r}; choose test or train.")


def split_loader(dataset, split: str, batch_size: int, device) -> TensorLoader:
    """Batches of ``split`` in order, normalised by the data set's own loader: the run's
    validation loader for ``test``, the same over the un-augmented images for ``train``."""
    if split == "test":
        return dataset.get_dataloaders(batch_size=batch_size, shuffle=False, device=device, val_batch_size=batch_size)[
            1
        ]
    images, labels = split_tensors(dataset, split)
    return TensorLoader(
        images,
        labels,
        batch_size,
        dataset.mean,
        dataset.std,
        shuffle=False,
        device=device,
        mapped=bool(getattr(dataset, "memory_mapped", False)),
    )


@torch.inference_mode()
def predict_split(model, loader, device, tta: bool = False):
    """Run ``model`` over the batches of ``loader``.

    Returns ``(probabilities (N, C), predictions (N,), mean loss)``; the loss is summed
    per batch as ``MetricsTracker`` does. With ``tta``, each image's probabilities are
    averaged with those of its mirror image (and predictions and loss follow them).
    """
    model = model.to(device).eval()
    probabilities, predictions, loss_sum = [], [], 0.0
    for batch, targets in loader:
        logits = model(batch).float()
        if tta:
            probs = (logits.softmax(1) + model(batch.flip(-1)).float().softmax(1)) / 2
            loss = F.nll_loss(probs.clamp_min(1e-12).log(), targets)
            predicted = probs.argmax(1)
        else:
            probs, loss, predicted = logits.softmax(1), F.cross_entropy(logits, targets), logits.argmax(1)
        loss_sum += float(loss) * targets.shape[0]
        probabilities.append(probs.cpu())
        predictions.append(predicted.cpu())
    total = sum(p.shape[0] for p in predictions)
    if not total:
        raise ToolError("The split holds no images; there is nothing to evaluate.")
    return torch.cat(probabilities), torch.cat(predictions), loss_sum / total


def class_metrics(confusion: torch.Tensor, names: List[str]) -> List[Dict[str, Any]]:
    """Precision, recall, F1 and support per class from a confusion matrix (rows: true
    class, columns: predicted); a ratio with nothing to divide by is None."""
    rows = []
    for index, name in enumerate(names):
        hits = int(confusion[index, index])
        predicted, actual = int(confusion[:, index].sum()), int(confusion[index].sum())
        precision = hits / predicted if predicted else None
        recall = hits / actual if actual else None
        f1 = (
            2 * precision * recall / (precision + recall)
            if precision and recall
            else (0.0 if precision is not None and recall is not None else None)
        )
        rows.append(
            {"class": index, "name": name, "precision": precision, "recall": recall, "f1": f1, "support": actual}
        )
    return rows


def _mean(values: List[Optional[float]]) -> Optional[float]:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def confusion_png(confusion: torch.Tensor, names: List[str], title: str) -> bytes:
    """The confusion matrix as a PNG, class names on both axes, counts in the cells."""
    from matplotlib.figure import Figure

    count = len(names)
    side = min(max(5.0, 0.55 * count + 2.5), 30.0)
    figure = Figure(figsize=(side, side), dpi=90)
    axes = figure.subplots()
    axes.imshow(confusion.numpy(), cmap="Blues")
    long_names = max((len(n) for n in names), default=0) > 3
    axes.set_xticks(
        range(count), labels=names, rotation=45 if long_names else 0, ha="right" if long_names else "center", fontsize=8
    )
    axes.set_yticks(range(count), labels=names, fontsize=8)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(title, fontsize=9)
    if count <= 30:
        top = int(confusion.max()) if confusion.numel() else 0
        for true in range(count):
            for predicted in range(count):
                value = int(confusion[true, predicted])
                if value:
                    axes.text(
                        predicted,
                        true,
                        str(value),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if value > top / 2 else "black",
                    )
    figure.tight_layout()
    return _png(figure)


def mistakes_png(images: torch.Tensor, true: List[str], predicted: List[str], confidence: List[float]) -> bytes:
    """A grid of images titled with their true and predicted classes."""
    from matplotlib.figure import Figure

    count = len(true)
    columns = min(5, max(count, 1))
    rows = max(1, math.ceil(count / columns))
    figure = Figure(figsize=(2.2 * columns, 2.5 * rows), dpi=80)
    axes_grid = figure.subplots(rows, columns, squeeze=False)
    for index, axes in enumerate(axes_grid.flat):
        axes.axis("off")
        if index >= count:
            continue
        image = images[index]
        if image.shape[0] == 3:
            axes.imshow(image.permute(1, 2, 0).numpy())
        else:  # grey, or a channel count no picture shows: its first channel
            axes.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=255)
        axes.set_title(f"true: {true[index]}\npred: {predicted[index]} ({confidence[index]:.0%})", fontsize=8)
    if not count:
        axes_grid[0][0].text(0.5, 0.5, "no mistakes", ha="center", va="center")
    figure.tight_layout()
    return _png(figure)


def evaluate_experiment(
    runs_dir: str,
    name: str,
    checkpoint: str = "best",
    split: str = "test",
    tta: bool = False,
    out: Optional[str] = None,
    mistakes: int = 25,
    data_dir: Optional[str] = None,
    device: str = "cpu",
) -> Dict[str, Any]:
    """Evaluate checkpoint ``checkpoint`` of experiment ``name`` and write the results.

    Returns the record written as ``evaluation.json`` (with ``files``: what was written).

    Raises:
        ToolError: a bad name, a running experiment (without ``out``), a model that does
            not fit the data. CheckpointError / DataError: damaged files, missing data.
        WriteError: the results could not be written.
    """
    experiment_dir = find_experiment(Path(runs_dir), name)
    checkpoint_file_name(checkpoint)
    if not isinstance(mistakes, int) or isinstance(mistakes, bool) or not 0 <= mistakes <= 200:
        raise ToolError(f"--mistakes must be a whole number from 0 to 200, got {mistakes!r}.")
    if split not in SPLITS:
        raise ToolError(f"Unknown split {split!r}; choose one of: {', '.join(SPLITS)}.")
    target, inside = output_directory(
        experiment_dir, out, experiment_dir / EVALUATION_DIR / f"{checkpoint}-{split}{'-tta' if tta else ''}"
    )
    config = read_config(experiment_dir)
    loaded = load_model(experiment_dir, checkpoint)
    dataset = build_dataset(config, data_dir)
    images, labels = split_tensors(dataset, split)
    classes = int(dataset.num_classes)
    expected = loaded.model_config.get("num_classes")
    if expected is not None and expected != classes:
        raise ToolError(
            f"{loaded.path} predicts {expected} classes but {config.get('dataset')} has {classes}; "
            "evaluate it on the data it was trained on."
        )
    names = class_names_for(config.get("dataset"), classes, dataset)
    batch_size = max(int(config.get("batch_size") or 64), 256)  # the run's validation batch size
    device = get_device(device)
    probabilities, predictions, loss = predict_split(
        loaded.model, split_loader(dataset, split, batch_size, device), device, tta
    )
    labels = labels.cpu()
    correct = int((predictions == labels).sum())
    confusion = torch.bincount(labels * classes + predictions, minlength=classes * classes).reshape(classes, classes)
    per_class = class_metrics(confusion, names)
    recorded = (
        (config.get("data_fingerprint") or {}).get("sha256")
        if isinstance(config.get("data_fingerprint"), dict)
        else None
    )
    matches = None if recorded is None else recorded == dataset.fingerprint()["sha256"]
    if matches is False:
        print_warning(
            f"the {config.get('dataset')} data found now differs from the data {name} was trained on "
            "(its fingerprint changed)."
        )
    accuracy = 100.0 * correct / int(labels.shape[0])
    record = {
        "experiment": name,
        "checkpoint": {"name": checkpoint, **describe(loaded)},
        "split": split,
        "tta": tta,
        "dataset": config.get("dataset"),
        "data_matches_training": matches,
        "samples": int(labels.shape[0]),
        "accuracy": accuracy,
        "loss": loss,
        "class_names": names,
        "per_class": per_class,
        "macro_average": {k: _mean([row[k] for row in per_class]) for k in ("precision", "recall", "f1")},
        "confusion_matrix": confusion.tolist(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    wrong = (predictions != labels).nonzero().flatten()
    confidence = probabilities[wrong, predictions[wrong]]
    worst = wrong[confidence.argsort(descending=True)[:mistakes]].tolist()
    record["most_confident_mistakes"] = [
        {
            "index": i,
            "true": names[int(labels[i])],
            "predicted": names[int(predictions[i])],
            "confidence": float(probabilities[i, predictions[i]]),
        }
        for i in worst
    ]
    title = (
        f"{name} {checkpoint} (epoch {loaded.epoch}), {split} split{' + flip TTA' if tta else ''}: "
        f"accuracy {accuracy:.2f}%"
    )
    pictures = {CONFUSION_FILE: confusion_png(confusion, names, title)}
    if mistakes:
        shown = record["most_confident_mistakes"]
        pictures[MISTAKES_FILE] = mistakes_png(
            images[worst].cpu(),
            [m["true"] for m in shown],
            [m["predicted"] for m in shown],
            [m["confidence"] for m in shown],
        )
    record["files"] = {key: str(target / key) for key in [RESULT_FILE, *pictures]}
    if inside:
        refuse_if_running(experiment_dir)  # a resume may have started meanwhile
    _write(target, pictures, record)
    return record


def _write(target: Path, pictures: Dict[str, bytes], record: Dict[str, Any]) -> None:
    from ..errors import write_error

    try:
        target.mkdir(parents=True, exist_ok=True)
        for file_name, data in pictures.items():
            atomic_write_bytes(target / file_name, data)
        atomic_write_bytes(target / RESULT_FILE, (json.dumps(record, indent=2) + "\n").encode())
    except OSError as exc:
        raise write_error(target, exc, "write the evaluation into") from None


def _ratio(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.3f}"


def run(args) -> int:
    """``exptrain evaluate``: evaluate, print the numbers, write the files."""
    record = evaluate_experiment(
        args.runs_dir,
        args.experiment,
        args.checkpoint,
        args.split,
        args.tta,
        args.out,
        args.mistakes,
        args.data_dir,
        args.device,
    )
    source = record["checkpoint"]
    kind = f", saved during epoch {source['epoch'] + 1}" if source["mid_epoch"] else ""
    print(
        f"{record['experiment']}: {Path(source['file']).name} (epoch {source['epoch']}{kind}) on the "
        f"{record['split']} split, {record['samples']} images{' with flip TTA' if record['tta'] else ''}: "
        f"accuracy {record['accuracy']:.2f}%, loss {record['loss']:.4f}"
    )
    width = max(len("macro avg"), *(len(row["name"]) for row in record["per_class"]))
    print(f"{'class'.ljust(width)}  precision  recall  f1     support")
    for row in record["per_class"] + [{"name": "macro avg", **record["macro_average"], "support": record["samples"]}]:
        print(
            f"{row['name'].ljust(width)}  {_ratio(row['precision']):9}  {_ratio(row['recall']):6}  "
            f"{_ratio(row['f1']):5}  {row['support']}"
        )
    for path in record["files"].values():
        print(f"Wrote {path}")
    return 0

"""The per-epoch training history, its machine-readable log (JSON lines) and its table
(``metrics.csv``).

One JSON object (one CSV row) per epoch; both files are rewritten atomically from the
history after every epoch, so they always match the checkpointed history, and a resumed
run continues them (its history starts with the epochs already trained). Reading tolerates a partial last line (a log
written by an older version or another tool), never a silent gap.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..errors import ExperimentError
from ..utils.io import atomic_write_text

METRICS_FILE = "metrics.csv"  # beside the log: the same records as a spreadsheet table

HISTORY_KEYS = (
    "epoch",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "learning_rate",
    "epoch_time",
)


def empty_history() -> Dict[str, List[Any]]:
    return {key: [] for key in HISTORY_KEYS}


def append_epoch(history: Dict[str, List[Any]], record: Dict[str, Any]) -> None:
    for key in HISTORY_KEYS:
        history[key].append(record[key])


def history_records(history: Dict[str, List[Any]]) -> List[Dict[str, Any]]:
    return [{key: history[key][i] for key in HISTORY_KEYS} for i in range(len(history["epoch"]))]


def write_log(path: Path, history: Dict[str, List[Any]]) -> None:
    # Strict JSON: a non-finite number never reaches the log (a diverged epoch is not recorded).
    lines = [json.dumps(record, allow_nan=False) for record in history_records(history)]
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def record_start(starts: List[Dict[str, Any]], kind: str, epoch: int, global_step: int, mid_epoch: bool) -> None:
    """Append a resume or fork point to ``starts`` (a run's list of them); a point at
    the same step as the last one replaces it (a resume stopped before its first step)."""
    point = {"kind": str(kind), "epoch": int(epoch), "global_step": int(global_step), "mid_epoch": bool(mid_epoch)}
    if starts and starts[-1].get("global_step") == point["global_step"] and starts[-1].get("epoch") == point["epoch"]:
        starts[-1] = point if starts[-1].get("kind") != "fork" else starts[-1]
    else:
        starts.append(point)


def write_metrics_csv(path: Path, history: Dict[str, List[Any]]) -> None:
    """Write ``history`` as a CSV table (header ``HISTORY_KEYS``, one row per epoch,
    numbers in full precision) atomically to ``path``; ``pandas.read_csv`` and
    spreadsheets open it unchanged."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HISTORY_KEYS)
    for record in history_records(history):
        writer.writerow([repr(float(record[k])) if isinstance(record[k], float) else record[k] for k in HISTORY_KEYS])
    atomic_write_text(path, buffer.getvalue())


def write_history_files(log_path: Path, history: Dict[str, List[Any]]) -> None:
    """The log at ``log_path`` and ``metrics.csv`` beside it, both from ``history``.

    Raises:
        OSError: a write failed (its ``filename`` names the file); the older file is intact.
    """
    write_log(Path(log_path), history)
    write_metrics_csv(Path(log_path).with_name(METRICS_FILE), history)


def read_metrics_epochs(path: Path) -> Optional[List[Any]]:
    """The epoch column of a ``metrics.csv`` (None when the file is missing); a file that
    cannot be read as one gives ``[]`` (it differs from any history, so it is rewritten)."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        return [int(row["epoch"]) for row in rows]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, csv.Error):
        return []


def read_log(path: Path) -> Dict[str, List[Any]]:
    """Rebuild the history from a log file; a missing file gives an empty history.

    A last line without its newline (cut off by a crash) is ignored; a damaged line in
    the middle raises ``ValueError`` naming the line.
    """
    history = empty_history()
    path = Path(path)
    if not path.exists():
        return history
    # Only newline-terminated lines are records: an unterminated last line is an
    # interrupted write and is left out.
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ExperimentError(
            f"{path} cannot be read as a training log ({getattr(exc, 'strerror', None) or exc})."
        ) from None
    lines = text.split("\n")[:-1]
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError(f"a {type(record).__name__}, not an object")
            bad = [
                k
                for k in HISTORY_KEYS
                if not isinstance(record.get(k), (int, float))
                or isinstance(record.get(k), bool)
                or (isinstance(record[k], float) and not math.isfinite(record[k]))
            ]  # NaN/Infinity are damage
            if bad:
                raise ValueError(f"{bad[0]} is {record.get(bad[0])!r}, not a finite number")
            if not isinstance(record["epoch"], int) or record["epoch"] < 1:
                raise ValueError(f"epoch is {record['epoch']!r}, not an epoch number")
            append_epoch(history, record)
        except ValueError as exc:
            raise ExperimentError(f"Line {number} of {path} is not a valid history record ({exc}).") from None
    return history

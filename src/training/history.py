"""The per-epoch training history and its machine-readable log (JSON lines).

One JSON object per epoch; the file is rewritten atomically after every epoch, so it
always matches the checkpointed history. Reading tolerates a partial last line (a log
written by an older version or another tool), never a silent gap.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List

from ..utils.io import atomic_write_text

HISTORY_KEYS = (
    "epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "learning_rate", "epoch_time",
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
        raise ValueError(f"{path} cannot be read as a training log ({getattr(exc, 'strerror', None) or exc}).") from None
    lines = text.split("\n")[:-1]
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError(f"a {type(record).__name__}, not an object")
            bad = [k for k in HISTORY_KEYS if not isinstance(record.get(k), (int, float)) or isinstance(record.get(k), bool)
                   or (isinstance(record[k], float) and not math.isfinite(record[k]))]  # NaN/Infinity are damage
            if bad:
                raise ValueError(f"{bad[0]} is {record.get(bad[0])!r}, not a finite number")
            if not isinstance(record["epoch"], int) or record["epoch"] < 1:
                raise ValueError(f"epoch is {record['epoch']!r}, not an epoch number")
            append_epoch(history, record)
        except ValueError as exc:
            raise ValueError(f"Line {number} of {path} is not a valid history record ({exc}).") from None
    return history

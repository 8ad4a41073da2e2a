"""The per-epoch training history and its machine-readable log (JSON lines).

One JSON object per epoch; the file is rewritten atomically after every epoch, so it
always matches the checkpointed history. Reading tolerates a partial last line (a log
written by an older version or another tool), never a silent gap.
"""

from __future__ import annotations

import json
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
    lines = [json.dumps(record, allow_nan=True) for record in history_records(history)]
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
    lines = path.read_text(encoding="utf-8").split("\n")[:-1]
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            append_epoch(history, json.loads(line))
        except (ValueError, KeyError) as exc:
            raise ValueError(f"Line {number} of {path} is not a valid history record ({exc}).") from None
    return history

"""``exptrain list``: one line per experiment, read strictly read-only and without torch.

Each experiment costs a handful of small file reads (config, status, lineage, log) and
one ``stat`` of its lock file against a lock table read once, so hundreds of experiments
list in a fraction of a second. Nothing is locked, created or modified.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from .common import (
    CONFIG_FILE,
    LINEAGE_FILE,
    LOG_FILE,
    STATUS_FILE,
    LockTable,
    ToolError,
    experiment_names,
    experiment_sort_key,
    lock_holder,
    number,
    read_json,
    read_log_records,
)

# State recorded in status.json -> what the list shows.
STATE_LABELS = {"stopped_early": "stopped early"}
COLUMNS = ("name", "status", "dataset", "model", "epochs", "best", "wall", "parent", "started")
HEADERS = {
    "name": "NAME",
    "status": "STATUS",
    "dataset": "DATA",
    "model": "MODEL",
    "epochs": "EPOCHS",
    "best": "BEST VAL",
    "wall": "WALL",
    "parent": "PARENT",
    "started": "STARTED",
}
# Columns sorted largest first (the best run on top); the others ascending.
DESCENDING = {"best", "epochs", "wall"}


def summarize(experiment_dir: Path, locks: Optional[LockTable] = None) -> Dict[str, Any]:
    """What is known about one experiment, from its files alone (never raises for damage).

    Returns a dict: ``name``, ``label``, ``state`` (running, completed, stopped_early,
    interrupted, failed, killed, starting, not_started, damaged, or a state recorded by
    another version), ``status`` (the text shown), ``pid`` (of a running one),
    ``dataset``, ``model``, ``epochs_done``, ``epochs_target``, ``best_accuracy``,
    ``best_epoch``, ``last_accuracy``, ``last_loss``, ``wall_time`` (seconds spent in
    this experiment's own epochs), ``parent``, ``branch_epoch``, ``started`` (Unix time),
    ``updated`` (the status heartbeat's time text) and ``problems`` (one line each).
    """
    experiment_dir = Path(experiment_dir)
    problems: List[str] = []

    def load(name: str, what: str) -> Optional[Dict[str, Any]]:
        try:
            return read_json(experiment_dir / name, what)
        except ToolError as exc:
            problems.append(str(exc))
            return {}

    config = load(CONFIG_FILE, "configuration")
    status_record = load(STATUS_FILE, "status")
    lineage = load(LINEAGE_FILE, "lineage") or {}
    records, log_problem = read_log_records(experiment_dir / LOG_FILE)
    if log_problem:
        problems.append(log_problem)
    if config is None:
        problems.append(f"{CONFIG_FILE} is missing")
    config = config or {}

    state, pid = _state(experiment_dir, status_record, locks, problems)
    parent = lineage.get("parent") if isinstance(lineage.get("parent"), str) else None
    branch_epoch = lineage.get("epoch") if isinstance(lineage.get("epoch"), int) else None
    status = status_record or {}

    best_accuracy, best_epoch = None, None
    for record in records:
        accuracy = number(record.get("val_accuracy"))
        if accuracy is not None and (best_accuracy is None or accuracy > best_accuracy):
            best_accuracy, best_epoch = accuracy, record["epoch"]
    if best_accuracy is None and number(status.get("best_accuracy")) is not None and status.get("best_epoch"):
        best_accuracy, best_epoch = number(status["best_accuracy"]), status.get("best_epoch")
    done = status.get("epoch") if _count(status.get("epoch")) else (records[-1]["epoch"] if records else 0)
    target = status.get("target_epochs") if _count(status.get("target_epochs")) else config.get("epochs")
    own = [r for r in records if branch_epoch is None or r["epoch"] > branch_epoch]
    last = records[-1] if records else {}
    return {
        "name": experiment_dir.name,
        "label": _text(config.get("label") or config.get("name")),
        "state": state,
        "status": _status_text(state, status),
        "pid": pid,
        "dataset": _text(config.get("dataset")),
        "model": _text(config.get("model")),
        "epochs_done": done if _count(done) else 0,
        "epochs_target": target if _count(target) else None,
        "best_accuracy": best_accuracy,
        "best_epoch": best_epoch,
        "last_accuracy": number(last.get("val_accuracy")),
        "last_loss": number(last.get("val_loss")),
        "wall_time": sum(number(r.get("epoch_time")) or 0.0 for r in own),
        "parent": parent,
        "branch_epoch": branch_epoch,
        "started": _started(experiment_dir, status),
        "updated": _text(status.get("updated")),
        "problems": problems,
    }


def _state(experiment_dir: Path, status: Optional[Dict[str, Any]], locks: Optional[LockTable], problems: List[str]):
    """``(state, pid of the live holder)``: the recorded state, corrected by the lock."""
    holder = lock_holder(experiment_dir, locks, status)
    pid = int(holder) if holder and holder.isdigit() else None
    if status is None:
        return ("starting" if holder else "not_started"), pid
    if not status:  # damaged (the problem is recorded already)
        return "damaged", pid
    state = status.get("state")
    if not isinstance(state, str):
        problems.append(f"{STATUS_FILE} records no state")
        return "damaged", pid
    if state == "running" and holder is None:
        return "killed", None  # the process died without recording how the run ended
    if holder is not None:
        return "running", pid  # a resume that has not written its first heartbeat yet
    return state, None


def _status_text(state: str, status: Dict[str, Any]) -> str:
    text = STATE_LABELS.get(state, state.replace("_", " "))
    if state == "interrupted" and isinstance(status.get("signal"), str):
        text += f" ({status['signal']})"
    elif state == "failed" and status.get("reason") == "non-finite loss":
        text += " (diverged)"
    return text


def _started(experiment_dir: Path, status: Dict[str, Any]) -> Optional[float]:
    """When the experiment started: ``status.json``'s ``started`` if recorded, else the
    time ``config.json`` was written (at creation; a resume rewrites it)."""
    started = status.get("started")
    if isinstance(started, str):
        try:
            return time.mktime(time.strptime(started[:19], "%Y-%m-%dT%H:%M:%S"))
        except ValueError:
            pass
    try:
        return os.stat(experiment_dir / CONFIG_FILE).st_mtime
    except OSError:
        return None


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _text(value: Any) -> Optional[str]:
    return value if isinstance(value, str) and value else None


def list_experiments(runs_dir: Path) -> List[Dict[str, Any]]:
    """``summarize`` for every experiment in ``runs_dir``, in experiment order.

    Raises:
        ToolError: ``runs_dir`` is missing, a file or unreadable.
    """
    names = experiment_names(Path(runs_dir))
    locks = LockTable()
    return [summarize(Path(runs_dir) / name, locks) for name in names]


def sort_rows(rows: List[Dict[str, Any]], column: str, reverse: bool = False) -> List[Dict[str, Any]]:
    """Sort summaries by a column of the table; missing values go last.

    Raises:
        ToolError: an unknown column (the known ones are listed).
    """
    if column not in COLUMNS:
        raise ToolError(f"Unknown --sort column {column!r}; choose one of: {', '.join(COLUMNS)}.")
    field = {"best": "best_accuracy", "epochs": "epochs_done", "wall": "wall_time", "status": "state"}.get(
        column, column
    )

    def key(row):
        value = row.get(field)
        return value if not isinstance(value, str) else value.lower()

    by_name = sorted(rows, key=lambda r: experiment_sort_key(r["name"]))
    present = [r for r in by_name if r.get(field) is not None]
    missing = [r for r in by_name if r.get(field) is None]
    if column == "name":
        ordered = by_name
    else:
        ordered = sorted(present, key=key, reverse=column in DESCENDING)
    if reverse:
        ordered.reverse()
    return ordered + missing if column != "name" else ordered


def format_duration(seconds: Optional[float]) -> str:
    """0.4s, 12s, 3m05s, 2h01m."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f}s"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def cells(row: Dict[str, Any]) -> Dict[str, str]:
    """The text of each column for one summary."""
    target = row["epochs_target"]
    best = "-" if row["best_accuracy"] is None else f"{row['best_accuracy']:.2f}% @{row['best_epoch']}"
    parent = (
        "-" if row["parent"] is None else row["parent"] + (f"@{row['branch_epoch']}" if row["branch_epoch"] else "")
    )
    started = "-" if row["started"] is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(row["started"]))
    name = row["name"] + (f" ({row['label']})" if row["label"] else "")
    return {
        "name": name,
        "status": row["status"],
        "dataset": row["dataset"] or "-",
        "model": row["model"] or "-",
        "epochs": f"{row['epochs_done']}/{target if target is not None else '?'}",
        "best": best,
        "wall": format_duration(row["wall_time"]) if row["epochs_done"] else "-",
        "parent": parent,
        "started": started,
    }


def render_table(rows: List[Dict[str, Any]], columns=COLUMNS, headers=HEADERS) -> str:
    """Left-aligned text columns separated by two spaces."""
    table = [[headers[c] for c in columns]] + [[r[c] for c in columns] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    return "\n".join("  ".join(text.ljust(width) for text, width in zip(line, widths)).rstrip() for line in table)


def run(args) -> int:
    """``exptrain list``: print the table (or JSON) of every experiment."""
    rows = sort_rows(list_experiments(Path(args.runs_dir)), args.sort, args.reverse)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"No experiments in {args.runs_dir} yet; start one with: exptrain train --runs-dir {args.runs_dir}")
        return 0
    print(render_table([cells(r) for r in rows]))
    notes = [(r["name"], p) for r in rows for p in r["problems"]]
    if notes:
        print()
        for name, problem in notes:
            print(f"{name}: {problem}")
    return 0

"""``exptrain compare``: settings that differ, results, and overlaid validation curves.

Reads each experiment's ``config.json``, log and records (read-only) and writes one PNG
wherever ``--plot`` says (never inside an experiment). A fork's log starts with the
epochs it inherited from its parent; its curve is drawn from the branch point on, so
the branch is seen leaving the parent's curve.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Dict, List, Sequence

from .common import LOG_FILE, LockTable, ToolError, find_experiment, read_config, read_log_records
from .listing import format_duration, render_table, summarize

MAX_VALUE_WIDTH = 40


def flatten(config: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    """Nested mappings as dotted keys: ``{"dataset_options": {"noise": 5}}`` ->
    ``{"dataset_options.noise": 5}``; an empty mapping adds nothing (options not given)."""
    flat: Dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _show(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= MAX_VALUE_WIDTH else text[: MAX_VALUE_WIDTH - 3] + "..."


MISSING = object()


def compare_experiments(runs_dir: str, names: Sequence[str], all_keys: bool = False) -> Dict[str, Any]:
    """The comparison of experiments ``names`` (at least two, no repeats).

    Returns ``{"names", "settings": [(key, [values])], "results": [(row, [values])],
    "summaries", "logs"}``; settings are the configuration keys whose values differ
    (every key with ``all_keys``), a key an experiment lacks shown as ``-``.

    Raises:
        ToolError: fewer than two names, a repeated, unknown or damaged experiment.
    """
    names = list(names)
    if len(names) < 2:
        raise ToolError(f"Compare needs at least two experiments, got {len(names)}; e.g. exptrain compare exp1 exp2.")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ToolError(f"Experiment {repeated[0]} is named twice; name each experiment once.")
    directories = [find_experiment(Path(runs_dir), name) for name in names]
    configs = [flatten(read_config(directory)) for directory in directories]
    locks = LockTable()
    summaries = [summarize(directory, locks) for directory in directories]
    logs = []
    for directory in directories:
        records, problem = read_log_records(directory / LOG_FILE)
        if problem:
            raise ToolError(f"{directory.name}: {problem}; the curves cannot be drawn.")
        logs.append(records)
    keys = sorted(set().union(*configs))
    settings = []
    for key in keys:
        values = [config.get(key, MISSING) for config in configs]
        if all_keys or any(v != values[0] for v in values[1:]):
            settings.append((key, ["-" if v is MISSING else _show(v) for v in values]))
    results = [
        ("status", [s["status"] for s in summaries]),
        (
            "epochs",
            [f"{s['epochs_done']}/{s['epochs_target'] if s['epochs_target'] is not None else '?'}" for s in summaries],
        ),
        (
            "best val accuracy",
            ["-" if s["best_accuracy"] is None else f"{s['best_accuracy']:.2f}% @{s['best_epoch']}" for s in summaries],
        ),
        ("last val accuracy", ["-" if s["last_accuracy"] is None else f"{s['last_accuracy']:.2f}%" for s in summaries]),
        ("last val loss", ["-" if s["last_loss"] is None else f"{s['last_loss']:.4f}" for s in summaries]),
        ("wall time", [format_duration(s["wall_time"]) if s["epochs_done"] else "-" for s in summaries]),
        ("parent", [f"{s['parent']}@{s['branch_epoch']}" if s["parent"] else "-" for s in summaries]),
    ]
    return {"names": names, "settings": settings, "results": results, "summaries": summaries, "logs": logs}


def branch_records(records: List[Dict[str, Any]], branch_epoch: Any) -> List[Dict[str, Any]]:
    """The records a curve shows: a fork's from its branch epoch on (the first point is
    the parent's epoch it started from), everything otherwise."""
    if not isinstance(branch_epoch, int):
        return list(records)
    return [r for r in records if r["epoch"] >= branch_epoch]


def curves_png(
    names: Sequence[str], logs: Sequence[List[Dict[str, Any]]], summaries: Sequence[Dict[str, Any]]
) -> bytes:
    """Validation accuracy and loss of each experiment on shared axes; a fork's curve
    starts at its branch epoch (marked with a diamond)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4.2), dpi=80)
    accuracy_axes, loss_axes = figure.subplots(1, 2)
    for name, records, summary in zip(names, logs, summaries):
        branch = summary["branch_epoch"]
        shown = branch_records(records, branch)
        label = name + (f" (fork of {summary['parent']} @{branch})" if summary["parent"] else "")
        for axes, key in ((accuracy_axes, "val_accuracy"), (loss_axes, "val_loss")):
            points = [(r["epoch"], r[key]) for r in shown if isinstance(r.get(key), (int, float))]
            if not points:
                continue
            (line,) = axes.plot(*zip(*points), marker="o", markersize=3, label=label)
            if branch is not None and points[0][0] == branch:
                axes.plot([points[0][0]], [points[0][1]], marker="D", markersize=7, color=line.get_color())
    for axes, title in ((accuracy_axes, "validation accuracy (%)"), (loss_axes, "validation loss")):
        axes.set_xlabel("epoch")
        axes.set_title(title)
        axes.grid(alpha=0.3)
        axes.xaxis.get_major_locator().set_params(integer=True)
    accuracy_axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def write_plot(path: Path, data: bytes) -> None:
    from ..errors import write_error
    from ..utils.io import atomic_write_bytes

    path = Path(path)
    if path.is_dir():
        raise ToolError(f"--plot {path} is a directory; give a file name such as comparison.png.")
    if path.suffix.lower() != ".png":
        raise ToolError(f"--plot {path} must end in .png.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
    except OSError as exc:
        raise write_error(path, exc, "write the comparison plot") from None


def run(args) -> int:
    """``exptrain compare``: print the tables and write the curves."""
    if Path(args.plot).suffix.lower() != ".png":
        raise ToolError(f"--plot {args.plot} must end in .png.")
    comparison = compare_experiments(args.runs_dir, args.experiments, args.all_keys)
    names = comparison["names"]
    headers = {n: n for n in names}
    columns = ("#", *names)
    settings = comparison["settings"] or [("(no setting differs)", [""] * len(names))]
    print(
        render_table(
            [{"#": k, **dict(zip(names, values))} for k, values in settings], columns, {**headers, "#": "SETTING"}
        )
    )
    print()
    print(
        render_table(
            [{"#": k, **dict(zip(names, values))} for k, values in comparison["results"]],
            columns,
            {**headers, "#": "RESULT"},
        )
    )
    write_plot(Path(args.plot), curves_png(names, comparison["logs"], comparison["summaries"]))
    print(f"\nWrote {args.plot}")
    return 0

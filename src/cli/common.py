"""Read-only access to experiment directories for the tools, without importing torch.

``exptrain list`` must answer in well under a second, and importing torch alone takes
longer than that, while ``src.training`` and ``src.utils`` import torch on import. So the
few read-only pieces the listing needs (file names, the name rule, "is the lock held?")
live here; ``tests/unit/cli/test_common.py`` checks that they agree with
``src/training/experiment.py``, the owner of the layout.

Whether an experiment's lock is held is read from ``/proc/locks`` (Linux), which lists
every ``flock`` with the locked file's device and inode: a reader never takes the lock,
not even for an instant, so a ``train.py --resume`` starting at that moment is never
refused because of a listing. Elsewhere (or for a run that takes no lock, so has no lock
file) the pid recorded in ``status.json`` is checked.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ..errors import ToolError  # noqa: F401 (re-exported: the tools raise it as common.ToolError)
from ..layout import (  # noqa: F401 (re-exported: the tools' names for the layout)
    CHECKPOINTS_DIR,
    CONFIG_FILE,
    EVALUATION_DIR,
    EXPORT_DIR,
    LINEAGE_FILE,
    LOCK_FILE,
    LOG_FILE,
    NAME_PATTERN,
    PROC_LOCKS,
    STATUS_FILE,
    LockTable,
    experiment_sort_key,
    lock_file_pid,
    pid_alive,
    read_json_object,
)

# The names a data set without a ``class_names`` attribute is known to use.
KNOWN_CLASS_NAMES = {
    "mnist": [str(d) for d in range(10)],
    "mnist-sample": [str(d) for d in range(10)],
    "fashion_mnist": [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ],
}


def print_warning(message: str) -> None:
    """One ``Warning: ...`` line on stderr (something was passed over, the command goes on)."""
    print(f"Warning: {message}", file=sys.stderr)


# -- experiments -----------------------------------------------------------------------
def experiment_names(runs_dir: Path) -> List[str]:
    """The experiment directories in ``runs_dir`` (hidden staging directories excluded).

    Raises:
        ToolError: ``runs_dir`` is missing, a file, or unreadable.
    """
    runs_dir = Path(runs_dir)
    if not runs_dir.exists():
        raise ToolError(
            f"The runs directory {runs_dir} does not exist; pass --runs-dir DIR (where train.py wrote runs)."
        )
    if not runs_dir.is_dir():
        raise ToolError(f"The runs directory {runs_dir} is a file, not a directory; pass --runs-dir DIR.")
    try:
        entries = list(os.scandir(runs_dir))
    except OSError as exc:
        raise ToolError(f"The runs directory {runs_dir} cannot be read ({exc.strerror or exc}).") from None
    names = []
    for entry in entries:
        try:
            if NAME_PATTERN.match(entry.name) and entry.is_dir():
                names.append(entry.name)
        except OSError:
            continue
    return sorted(names, key=experiment_sort_key)


def find_experiment(runs_dir: Path, name: Any) -> Path:
    """The directory of experiment ``name`` (``expN`` or a run's ``--name``) in ``runs_dir``.

    Raises:
        ToolError: an invalid name (a path), a missing experiment (the existing ones are
            listed), or a symlink leading out of ``runs_dir``.
    """
    from ..run_names import resolve_experiment

    name = resolve_experiment(Path(runs_dir), name, ToolError)
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ToolError(
            f"Invalid experiment name {name!r}: use a plain name such as exp3 "
            "(letters, digits, '.', '_', '-'; no path separators)."
        )
    runs_dir = Path(runs_dir)
    path = runs_dir / name
    if not path.is_dir():
        try:
            known = experiment_names(runs_dir)
        except ToolError as exc:
            raise ToolError(f"Experiment {name!r} not found: {exc}") from None
        listing = (
            ", ".join(known[:20]) + (f" and {len(known) - 20} more" if len(known) > 20 else "") if known else "none"
        )
        raise ToolError(f"Experiment {name!r} does not exist in {runs_dir}; existing experiments: {listing}.")
    if os.path.dirname(os.path.realpath(path)) != os.path.realpath(runs_dir):
        raise ToolError(f"Experiment {name!r} points outside {runs_dir} (a symlink); refusing to use it.")
    return path


def read_json(path: Path, what: str) -> Optional[Dict[str, Any]]:
    """The JSON object in ``path``; None when the file does not exist.

    Raises:
        ToolError: unreadable, not JSON, or not a JSON object (the message names the file).
    """
    try:
        return read_json_object(path, what, ToolError)
    except FileNotFoundError:
        return None


def read_config(experiment_dir: Path) -> Dict[str, Any]:
    """The ``config.json`` of an experiment (``ToolError`` when missing or damaged)."""
    config = read_json(Path(experiment_dir) / CONFIG_FILE, "configuration")
    if config is None:
        raise ToolError(
            f"{Path(experiment_dir) / CONFIG_FILE} is missing; this experiment has no recorded configuration."
        )
    return config


def read_log_records(path: Path) -> Tuple[List[Dict[str, Any]], Optional[str]]:
    """The per-epoch records of a ``training_log.jsonl``: ``(records, problem)``.

    Tolerant, for display: an unterminated last line (an interrupted write) is left out;
    the first damaged line stops reading and is reported as ``problem``.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return [], None
    except (OSError, UnicodeDecodeError) as exc:
        return [], f"{Path(path).name} cannot be read ({getattr(exc, 'strerror', None) or exc})"
    records = []
    for number, line in enumerate(text.split("\n")[:-1], start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict) or not _is_epoch(record.get("epoch")):
            return records, f"{Path(path).name} line {number} is damaged"
        records.append(record)
    return records, None


def _is_epoch(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def number(value: Any) -> Optional[float]:
    """``value`` as a float when it is a real finite number, else None."""
    if (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and value == value
        and abs(value) != float("inf")
    ):
        return float(value)
    return None


# -- locks -----------------------------------------------------------------------------
def lock_holder(
    experiment_dir: Path, table: Optional[LockTable] = None, status: Optional[Dict[str, Any]] = None
) -> Optional[str]:
    """Who trains in ``experiment_dir`` now: the holder's pid as text ("unknown" when the
    lock file names none), or None when no live process holds its lock. Never takes the lock."""
    lock_file = Path(experiment_dir) / LOCK_FILE
    held = (table or LockTable()).held(lock_file)
    if held is None:  # no lock table here, or no lock file: the pid recorded by a running process
        pid = (status or {}).get("pid")
        return str(pid) if (status or {}).get("state") == "running" and pid_alive(pid) else None
    if not held:
        return None
    pid = lock_file_pid(lock_file)
    return str(pid) if pid is not None else "unknown"


def output_directory(experiment_dir: Path, out: Optional[str], default: Path) -> Tuple[Path, bool]:
    """Where a tool writes its results: ``out`` if given, else ``default``; returns the
    directory and whether it lies inside the experiment (then, as again just before
    writing, a running experiment is refused).

    Raises:
        ToolError: the experiment is running (and the target is inside it); the target is
            a file.
    """
    target = Path(out) if out else Path(default)
    inside = is_inside(target, experiment_dir)
    if inside:
        refuse_if_running(experiment_dir)
    if target.exists() and not target.is_dir():
        raise ToolError(f"--out {target} is a file, not a directory; choose a directory.")
    return target, inside


def is_inside(path: Path, directory: Path) -> bool:
    """Whether ``path`` is ``directory`` or lies under it (links resolved)."""
    try:
        Path(path).resolve().relative_to(Path(directory).resolve())
        return True
    except ValueError:
        return False


def refuse_if_running(experiment_dir: Path, out_flag: str = "--out DIR") -> None:
    """Refuse to write into an experiment a live process is training in.

    Raises:
        ToolError: naming the process and the way out (``out_flag``).
    """
    holder = lock_holder(experiment_dir, status=_quiet_status(experiment_dir))
    if holder is not None:
        raise ToolError(
            f"Experiment {Path(experiment_dir).name!r} is running (process {holder} holds its lock), and only that "
            f"process writes inside it; write the results elsewhere with {out_flag}, or wait for it to finish."
        )


def _quiet_status(experiment_dir: Path) -> Optional[Dict[str, Any]]:
    try:
        return read_json(Path(experiment_dir) / STATUS_FILE, "status")
    except ToolError:
        return None


# -- class names -----------------------------------------------------------------------
def class_names_for(dataset_name: str, num_classes: int, source: Any = None) -> List[str]:
    """The class names of a data set: ``source.class_names`` (a data set or its class)
    when it has one of the right length, else the known names, else "0" .. "N-1"."""
    names = getattr(source, "class_names", None) if source is not None else None
    if isinstance(names, (list, tuple)) and len(names) == num_classes and all(isinstance(n, str) for n in names):
        return list(names)
    known = KNOWN_CLASS_NAMES.get(dataset_name)
    if known is not None and len(known) == num_classes:
        return list(known)
    return [str(i) for i in range(num_classes)]


# -- checkpoint names ------------------------------------------------------------------
_EPOCH_NAME = re.compile(r"^epoch_([1-9]\d{0,8})$")


def checkpoint_file_name(choice: str) -> Optional[str]:
    """``best`` -> best_model.pt, ``epoch_N`` -> epoch_N.pt, ``latest`` -> None (the newest
    valid checkpoint is searched for).

    Raises:
        ToolError: any other name.
    """
    if choice == "best":
        return "best_model.pt"
    if choice == "latest":
        return None
    if isinstance(choice, str) and _EPOCH_NAME.match(choice):
        return f"{choice}.pt"
    raise ToolError(f"Unknown checkpoint {choice!r}; use best, latest or epoch_N (N >= 1, e.g. epoch_10).")

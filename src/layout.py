"""The experiment directory's layout, without torch: file names, name rules, JSON records,
listing, and the probes that say whether a process (and so a lock) is alive.

One source for what the training side (``src/training/experiment.py``, the checkpoint
files, torchrun followers) and the torch-free tools (``src/cli``: ``exptrain list`` must
answer before torch could even be imported) both need. It imports nothing of the project
but ``errors``, so every layer may use it.

Layout of one experiment::

    runs/exp3/
        config.json            the resolved run configuration (what --resume reads)
        status.json            running / completed / stopped_early / interrupted / failed
        lineage.json           for a fork: parent name, epoch, checkpoint and its SHA-256
        training_log.jsonl     one JSON line per epoch (the machine-readable history)
        metrics.csv            the same records as a CSV table (src/training/history.py)
        training_curves.png    loss and accuracy curves
        checkpoints/           best_model.pt, latest_checkpoint.pt, epoch_N.pt (+ manifests)
        tensorboard/           TensorBoard event files, with --tensorboard (tb_logger.py)
        evaluation/, export/   what exptrain evaluate and exptrain export write by default
        .lock                  held (OS lock) by the process training in this directory
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Dict, Set, Tuple

from .errors import ExperimentError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; concurrent resumes are not detected.
    fcntl = None

CONFIG_FILE = "config.json"
STATUS_FILE = "status.json"
LINEAGE_FILE = "lineage.json"
LOG_FILE = "training_log.jsonl"
PLOT_FILE = "training_curves.png"
CHECKPOINTS_DIR = "checkpoints"
TENSORBOARD_DIR = "tensorboard"
EVALUATION_DIR = "evaluation"
EXPORT_DIR = "export"
LOCK_FILE = ".lock"

BEST_MODEL = "best_model.pt"
LATEST_CHECKPOINT = "latest_checkpoint.pt"
EPOCH_CHECKPOINT = "epoch_{}.pt"
EPOCH_FILE = re.compile(r"^epoch_(\d+)\.pt$")
MANIFEST_SUFFIX = ".manifest.json"

# A plain directory name: what an experiment's directory may be called (expN or --name's).
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
EXP_NUMBER = re.compile(r"^exp(\d+)$")


def experiment_sort_key(name: str) -> Tuple[int, int, str]:
    """exp1, exp2, ..., exp10 in numeric order, then other names alphabetically."""
    match = EXP_NUMBER.match(name)
    return (0, int(match.group(1)), "") if match else (1, 0, name)


def short_json(value: Any) -> str:
    """``value`` as JSON, cut to 40 characters (for messages about a damaged record)."""
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def read_json_object(path: Path, what: str, error: type = ExperimentError) -> Dict[str, Any]:
    """A JSON object from ``path``; any other content is one ``error`` naming the file.

    Args:
        what: the record's name in messages ("configuration", "status").
        error: the error class to raise (the tools raise their own ``ToolError``).

    Raises:
        FileNotFoundError: the file does not exist (callers decide what that means).
        error: unreadable, a directory, not JSON, or JSON that is not an object.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise
    except IsADirectoryError:
        raise error(f"{path} is a directory, not the {what} file; move it away.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path} cannot be read ({getattr(exc, 'strerror', None) or exc}).") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise error(f"{path} is not valid JSON ({exc}).") from None
    if not isinstance(data, dict):
        raise error(
            f"{path} holds a JSON {type(data).__name__} {short_json(data)}, not the {what} object; "
            "restore it or fork from the experiment's checkpoints."
        )
    return data


# -- processes and locks ---------------------------------------------------------------
# Locks this process holds: realpath of the experiment directory -> the open lock file.
# Owned here (not by ExperimentManager) because the checkpoint files ask "may I clean
# temporaries in this directory?" without depending on the experiment's manager.
HELD_LOCKS: Dict[str, Any] = {}
PROC_LOCKS = Path("/proc/locks")


def pid_alive(pid: Any) -> bool:
    """True when a process with this pid exists (owned by anyone); False for a pid that is
    not a positive int. Used to tell a live writer's temporaries from a killed one's."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # no such process (or a pid no system has)
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def holds_lock(experiment_dir: Path) -> bool:
    """True when this process holds the lock of ``experiment_dir``."""
    return os.path.realpath(experiment_dir) in HELD_LOCKS


def lock_is_free(lock_file: Path) -> bool:
    """True when no process holds ``lock_file`` (or it does not exist); never creates it.
    Takes the lock for an instant to find out: the tools use ``LockTable`` instead."""
    if fcntl is None or not lock_file.is_file():
        return True
    try:
        with open(lock_file, "rb") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return False
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            return True
    except OSError:
        return False


def lock_file_pid(lock_file: Path):
    """The pid written in a lock file, or None."""
    try:
        text = Path(lock_file).read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


class LockTable:
    """The ``flock`` locks held on this machine, read once from ``/proc/locks`` (Linux),
    which lists every lock with the locked file's device and inode: a reader never takes
    the lock, not even for an instant, so a ``train.py --resume`` starting at that moment
    is never refused because of a listing.

    ``held(lock_file)`` is True when some process holds ``lock_file``; None when this
    system offers no such table or there is no lock file (a run made with
    ``ExperimentManager(lock=False)``): the caller then checks the recorded pid.
    """

    def __init__(self) -> None:
        self.available = False
        self._exact: Set[Tuple[int, int, int]] = set()
        self._by_inode: Dict[int, Set[int]] = {}
        try:
            text = PROC_LOCKS.read_text()
        except OSError:
            return
        self.available = True
        for line in text.splitlines():
            fields = line.split()
            if "->" in fields:  # a waiter, not a holder
                continue
            try:
                kind_at = fields.index("FLOCK")
                pid = int(fields[kind_at + 3])
                major, minor, inode = fields[kind_at + 4].split(":")
                self._exact.add((int(major, 16), int(minor, 16), int(inode)))
                self._by_inode.setdefault(int(inode), set()).add(pid)
            except (ValueError, IndexError):
                continue

    def held(self, lock_file: Path):
        if not self.available:
            return None
        try:
            st = os.stat(lock_file)
        except OSError:
            return None  # no lock file: a run that does not lock; its recorded pid tells
        if (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino) in self._exact:
            return True
        # Overlay file systems may report another device number than the kernel's
        # lock table: accept the inode when its holder is the pid the lock file names.
        holders = self._by_inode.get(st.st_ino)
        if holders:
            return lock_file_pid(lock_file) in holders
        return False


def read_experiment_config(experiment_dir: Path) -> Dict[str, Any]:
    """The ``config.json`` of an experiment directory."""
    path = Path(experiment_dir) / CONFIG_FILE
    try:
        return read_json_object(path, "configuration")
    except FileNotFoundError:
        raise ExperimentError(f"{path} is missing; this experiment has no recorded configuration.") from None


def refuse_directories_as_files(experiment_dir: Path) -> None:
    """A directory where a file of the run belongs (status, log, curves, lock, a
    checkpoint or manifest) is bad input, refused before anything is written or trained
    (read-only: the start plan of a resume calls it, and so does reopening)."""
    experiment_dir = Path(experiment_dir)
    checkpoints = experiment_dir / CHECKPOINTS_DIR
    names = [STATUS_FILE, LOG_FILE, PLOT_FILE, LOCK_FILE]
    names += [f"{CHECKPOINTS_DIR}/{n}{s}" for n in (BEST_MODEL, LATEST_CHECKPOINT) for s in ("", MANIFEST_SUFFIX)]
    if checkpoints.is_dir():
        names += [
            f"{CHECKPOINTS_DIR}/{p.name}" for p in checkpoints.iterdir() if p.name.endswith((".pt", MANIFEST_SUFFIX))
        ]
    for name in names:
        if (experiment_dir / name).is_dir():
            raise ExperimentError(
                f"{experiment_dir / name} is a directory, not the file this run keeps there; "
                "move it away and resume again."
            )


class ExperimentPaths:
    """The files of the experiment in ``self._dir`` (shared by ``ExperimentManager`` and
    the read-only view other torchrun ranks get, ``distributed.FollowerExperiment``)."""

    _dir: Path

    @property
    def experiment_dir(self) -> str:
        return str(self._dir)

    @property
    def checkpoints_path(self) -> Path:
        return self._dir / CHECKPOINTS_DIR

    @property
    def checkpoints_dir(self) -> str:
        return str(self.checkpoints_path)

    @property
    def log_file(self) -> str:
        return str(self._dir / LOG_FILE)

    @property
    def plot_file(self) -> str:
        return str(self._dir / PLOT_FILE)

    @property
    def config_file(self) -> str:
        return str(self._dir / CONFIG_FILE)

    @property
    def tensorboard_dir(self) -> str:
        return str(self._dir / TENSORBOARD_DIR)

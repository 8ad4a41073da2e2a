"""ExperimentManager: the ``runs/expN`` directories, resume and fork, locks, status.

Layout of one experiment::

    runs/exp3/
        config.json            the resolved run configuration (what --resume reads)
        status.json            running / completed / stopped_early / interrupted / failed
        lineage.json           for a fork: parent name, epoch, checkpoint and its SHA-256
        training_log.jsonl     one JSON line per epoch (the machine-readable history)
        training_curves.png    loss and accuracy curves
        checkpoints/           best_model.pt, latest_checkpoint.pt, epoch_N.pt (+ manifests)
        .lock                  held (OS lock) by the process training in this directory

Names are validated before anything touches the disk; new directories are created
atomically (``mkdir`` and retry on collision), so concurrent starts never share one.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..utils.io import atomic_write_text, is_temp_file

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
LOCK_FILE = ".lock"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_EXP_NUMBER = re.compile(r"^exp(\d+)$")
_HELD_LOCKS: Dict[str, Any] = {}  # realpath -> open lock file, so one process may reopen its own run


class ExperimentError(ValueError):
    """A bad experiment name, a missing or busy experiment; the message says what to do."""


def validate_experiment_name(name: Any) -> str:
    """Return ``name`` if it is a plain directory name.

    Raises:
        ExperimentError: for paths (``../x``, ``/abs``, ``a/b``), empty or odd names.
    """
    if not isinstance(name, str) or not _NAME.match(name) or name in (".", ".."):
        raise ExperimentError(
            f"Invalid experiment name {name!r}: use a plain name such as exp3 "
            "(letters, digits, '.', '_', '-'; no path separators)."
        )
    return name


def list_experiments(base_dir: Path) -> List[str]:
    """Experiment names in ``base_dir``, exp1, exp2, ... in numeric order first."""
    base_dir = Path(base_dir)
    if not base_dir.is_dir():
        return []
    names = [p.name for p in base_dir.iterdir() if p.is_dir() and _NAME.match(p.name)]
    return sorted(names, key=lambda n: (0, int(m.group(1)), "") if (m := _EXP_NUMBER.match(n)) else (1, 0, n))


def existing_experiment_dir(base_dir: Path, name: str) -> Path:
    """The directory of experiment ``name``, which must exist inside ``base_dir``.

    Raises:
        ExperimentError: invalid name, missing experiment (the existing ones are listed),
            or a symlink pointing out of ``base_dir``.
    """
    validate_experiment_name(name)
    base_dir = Path(base_dir)
    path = base_dir / name
    if not path.is_dir():
        known = list_experiments(base_dir)
        listing = ", ".join(known) if known else f"none yet in {base_dir}"
        raise ExperimentError(f"Experiment {name!r} does not exist in {base_dir}; existing experiments: {listing}.")
    if os.path.dirname(os.path.realpath(path)) != os.path.realpath(base_dir):
        raise ExperimentError(f"Experiment {name!r} points outside {base_dir} (a symlink); refusing to use it.")
    return path


def read_experiment_config(experiment_dir: Path) -> Dict[str, Any]:
    """The ``config.json`` of an experiment directory."""
    path = Path(experiment_dir) / CONFIG_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExperimentError(f"{path} is missing; this experiment has no recorded configuration.") from None
    except ValueError as exc:
        raise ExperimentError(f"{path} is not valid JSON ({exc}).") from None


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ExperimentManager:
    """Creates, reopens (``resume_exp``) or branches (``fork_exp``) an experiment.

    Args:
        base_dir: the runs directory (created if missing).
        resume_exp: reopen this experiment in place.
        fork_exp: create a new experiment that starts from this one (recorded as parent).
        lock: hold an OS lock on the experiment so a second process cannot train in it.

    Raises:
        ExperimentError: for an invalid or missing name, both ``resume_exp`` and
            ``fork_exp``, or an experiment locked by another live process.
    """

    def __init__(self, base_dir: str = "runs", resume_exp: Optional[str] = None,
                 fork_exp: Optional[str] = None, lock: bool = True):
        if resume_exp is not None and fork_exp is not None:
            raise ExperimentError("Give either resume_exp or fork_exp, not both (--resume and --fork exclude each other).")
        self.base_dir = Path(base_dir)
        self.resume_exp = resume_exp
        self.fork_exp = fork_exp
        self.parent_dir: Optional[Path] = None
        if resume_exp is not None:
            self._dir = self._existing(resume_exp)
        else:
            if fork_exp is not None:
                self.parent_dir = self._existing(fork_exp)
            self._dir = self._create_new()
        self.name = self._dir.name
        self.checkpoints_path.mkdir(exist_ok=True)
        if lock:
            self._acquire_lock()
            # Only the lock holder may clean: another process's save could be in flight.
            for leftover in self._dir.iterdir():
                if is_temp_file(leftover):
                    leftover.unlink(missing_ok=True)

    # -- names and directories -------------------------------------------------------
    def _existing(self, name: str) -> Path:
        return existing_experiment_dir(self.base_dir, name)

    def _create_new(self) -> Path:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        numbers = [int(m.group(1)) for n in os.listdir(self.base_dir) if (m := _EXP_NUMBER.match(n))]
        number = max(numbers, default=0) + 1
        while True:
            path = self.base_dir / f"exp{number}"
            try:
                os.mkdir(path)  # atomic: exactly one process wins each name
                return path
            except FileExistsError:
                number += 1

    # -- locking ---------------------------------------------------------------------
    def _acquire_lock(self) -> None:
        if fcntl is None:
            return
        key = os.path.realpath(self._dir)
        if key in _HELD_LOCKS:
            return
        handle = open(self._dir / LOCK_FILE, "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise ExperimentError(
                f"Experiment {self.name!r} is in use by process {holder}; wait for it to finish or stop it first."
            ) from None
        # The OS releases the lock when the process dies, so a stale file never blocks.
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        _HELD_LOCKS[key] = handle

    def release(self) -> None:
        """Release the experiment lock (also released when the process exits)."""
        handle = _HELD_LOCKS.pop(os.path.realpath(self._dir), None)
        if handle is not None:
            handle.close()

    # -- paths -----------------------------------------------------------------------
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

    # -- records ---------------------------------------------------------------------
    def save_config(self, config: Dict[str, Any]) -> None:
        atomic_write_text(self.config_file, json.dumps(config, indent=2, sort_keys=True) + "\n")

    def load_config(self) -> Dict[str, Any]:
        """The saved configuration of this experiment."""
        return read_experiment_config(self._dir)

    def write_status(self, state: str, **details: Any) -> None:
        record = {"state": state, "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "pid": os.getpid(), **details}
        atomic_write_text(self._dir / STATUS_FILE, json.dumps(record, indent=2) + "\n")

    def read_status(self) -> Optional[Dict[str, Any]]:
        """The recorded status; a "running" record whose process is gone reads "killed"."""
        try:
            status = json.loads((self._dir / STATUS_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        other_process = status.get("pid") != os.getpid()
        holding_lock = os.path.realpath(self._dir) in _HELD_LOCKS  # then no one else can be running here
        if status.get("state") == "running" and other_process and (holding_lock or not _alive(status.get("pid"))):
            status["state"] = "killed"
        return status

    def record_lineage(self, parent: str, epoch: int, checkpoint: str, sha256: str) -> None:
        record = {"parent": parent, "epoch": epoch, "checkpoint": checkpoint, "sha256": sha256}
        atomic_write_text(self._dir / LINEAGE_FILE, json.dumps(record, indent=2) + "\n")

    def __repr__(self) -> str:
        return f"ExperimentManager({self.experiment_dir!r})"

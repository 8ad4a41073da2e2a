"""ExperimentManager: the ``runs/expN`` directories, resume and fork, locks, status.

The layout of one experiment (its file names) is in ``src/layout.py``.

Names are validated before anything touches the disk. A new experiment is built complete
in a hidden staging directory (checkpoints/, config.json, lineage.json for a fork, the
lock already held) and then renamed to the next free ``expN`` (retrying on collision), so
concurrent starts never share a directory and no visible experiment ever lacks its
configuration. Only the lock holder writes or deletes inside an experiment: reading one
(a refused resume, a fork's parent) is strictly read-only. Every write failure (a full
disk, permissions) is a ``WriteError``: one line, exit code 1, older files intact.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..errors import ExperimentError, PeerFailedError, WriteError, write_error  # noqa: F401 (re-exported)
from ..layout import (  # noqa: F401 (TENSORBOARD_DIR: re-exported)
    BEST_MODEL,
    CHECKPOINTS_DIR,
    CONFIG_FILE,
    EXP_NUMBER,
    HELD_LOCKS,
    LATEST_CHECKPOINT,
    LINEAGE_FILE,
    LOCK_FILE,
    LOG_FILE,
    MANIFEST_SUFFIX,
    NAME_PATTERN,
    PLOT_FILE,
    STATUS_FILE,
    TENSORBOARD_DIR,
    ExperimentPaths,
    experiment_sort_key,
    holds_lock,
    lock_is_free,
    pid_alive,
    read_experiment_config,
    read_json_object,
    refuse_directories_as_files,
)
from .checkpoint import CheckpointManager
from .distributed import FollowerExperiment, current_job
from ..utils.io import TEMP_MARKER, atomic_write_text, fsync_directory, is_temp_file, remove_stale_temporaries

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; concurrent resumes are not detected.
    fcntl = None


def refuse_if_busy(experiment_dir: Path) -> None:
    """Refuse (``ExperimentError`` naming the holder's PID) an experiment another live
    process is training in; read-only, so a resume is refused before it loads anything."""
    experiment_dir = Path(experiment_dir)
    if holds_lock(experiment_dir) or lock_is_free(experiment_dir / LOCK_FILE):
        return
    try:
        holder = (experiment_dir / LOCK_FILE).read_text().strip() or "unknown"
    except OSError:
        holder = "unknown"
    raise ExperimentError(
        f"Experiment {experiment_dir.name!r} is in use by process {holder}; wait for it to finish or stop it first."
    )


def validate_experiment_name(name: Any) -> str:
    """Return ``name`` if it is a plain directory name.

    Raises:
        ExperimentError: for paths (``../x``, ``/abs``, ``a/b``), empty or odd names.
    """
    if not isinstance(name, str) or not NAME_PATTERN.match(name) or name in (".", ".."):
        raise ExperimentError(
            f"Invalid experiment name {name!r}: use a plain name such as exp3 "
            "(letters, digits, '.', '_', '-'; no path separators)."
        )
    return name


def list_experiments(base_dir: Path) -> List[str]:
    """Experiment names in ``base_dir``, exp1, exp2, ... in numeric order first."""
    base_dir = Path(base_dir)
    try:
        names = [p.name for p in base_dir.iterdir() if NAME_PATTERN.match(p.name) and p.is_dir()]
    except OSError:
        return []
    return sorted(names, key=experiment_sort_key)


def existing_experiment_dir(base_dir: Path, name: str) -> Path:
    """The directory of experiment ``name``, which must exist inside ``base_dir``.

    Raises:
        ExperimentError: invalid name, missing experiment (the existing ones are listed),
            or a symlink pointing out of ``base_dir``.
    """
    validate_experiment_name(name)
    base_dir = Path(base_dir)
    if base_dir.exists() and not base_dir.is_dir():
        raise ExperimentError(f"The runs directory {base_dir} is a file, not a directory; pass --runs-dir DIR.")
    path = base_dir / name
    if not path.is_dir():
        known = list_experiments(base_dir)
        listing = ", ".join(known) if known else f"none yet in {base_dir}"
        raise ExperimentError(f"Experiment {name!r} does not exist in {base_dir}; existing experiments: {listing}.")
    if os.path.dirname(os.path.realpath(path)) != os.path.realpath(base_dir):
        raise ExperimentError(f"Experiment {name!r} points outside {base_dir} (a symlink); refusing to use it.")
    return path


class ExperimentManager(ExperimentPaths):
    """Creates, reopens (``resume_exp``) or branches (``fork_exp``) an experiment.

    Args:
        base_dir: the runs directory (created if missing).
        resume_exp: reopen this experiment in place.
        fork_exp: create a new experiment that starts from this one: its newest valid
            checkpoint is chosen and loaded (verified) at once, exposed as
            ``parent_checkpoint`` (path) and ``parent_state`` (the loaded dict, to pass to
            ``Trainer.load_state_dict`` or ``model.load_state_dict``), and recorded in
            ``lineage.json`` with the SHA-256 of the very bytes loaded.
        lock: hold an OS lock on the experiment so a second process cannot train in it.
        config: the run configuration, written as ``config.json`` before a new
            experiment becomes visible (the CLI always passes it).
        parent: for ``fork_exp``, an already chosen ``LoadedCheckpoint`` of the parent
            (the CLI checks it before creating anything).

    Raises:
        ExperimentError: for an invalid or missing name, both ``resume_exp`` and
            ``fork_exp``, a parent with no checkpoint, or an experiment locked by
            another live process.
        WriteError: the experiment could not be created (disk full, permissions);
            nothing is left behind.
    """

    def __new__(
        cls,
        base_dir: str = "runs",
        resume_exp: Optional[str] = None,
        fork_exp: Optional[str] = None,
        lock: bool = True,
        *,
        config: Optional[Dict[str, Any]] = None,
        parent: Any = None,
    ):
        # Under torchrun only rank 0 creates or reopens the experiment; every other rank
        # gets a read-only view of the directory rank 0 names (distributed.py).

        job = current_job()
        if job is None or job.is_main:
            return super().__new__(cls)
        outcome = job.broadcast_object(None)  # pairs with rank 0's at the end of __init__
        if outcome[0] == "error":
            try:
                error = outcome[1](outcome[2])
            except Exception:
                error = PeerFailedError(f"Rank 0: {outcome[2]}")
            raise error
        return FollowerExperiment(base_dir, *outcome[1:])

    def __init__(
        self,
        base_dir: str = "runs",
        resume_exp: Optional[str] = None,
        fork_exp: Optional[str] = None,
        lock: bool = True,
        *,
        config: Optional[Dict[str, Any]] = None,
        parent: Any = None,
    ):

        job = current_job()
        if job is None:
            self._open(base_dir, resume_exp, fork_exp, lock, config, parent)
            return
        try:
            self._open(base_dir, resume_exp, fork_exp, lock, config, parent)
        except Exception as exc:
            job.broadcast_object(("error", type(exc), str(exc)))
            raise
        job.broadcast_object(
            (
                "ok",
                self.name,
                self.resume_exp,
                self.fork_exp,
                str(self.parent_checkpoint) if self.parent_checkpoint else None,
            )
        )

    def _open(self, base_dir, resume_exp, fork_exp, lock, config, parent) -> None:
        if resume_exp is not None and fork_exp is not None:
            raise ExperimentError(
                "Give either resume_exp or fork_exp, not both (--resume and --fork exclude each other)."
            )
        self.base_dir = Path(base_dir)
        self.resume_exp = resume_exp
        self.fork_exp = fork_exp
        self.parent_dir: Optional[Path] = None
        self.parent_checkpoint: Optional[Path] = None
        self.parent_state: Optional[Dict[str, Any]] = None
        self._lock_wanted = lock
        if resume_exp is not None:
            self._dir = self._existing(resume_exp)
            self.name = self._dir.name
            if self.checkpoints_path.exists() and not self.checkpoints_path.is_dir():
                raise ExperimentError(
                    f"{self.checkpoints_path} is a file, not a directory; move it away and resume again."
                )
            self._refuse_directories_as_files()
            if lock:
                self._acquire_lock(self._dir)
            try:
                self.checkpoints_path.mkdir(exist_ok=True)
                if config is not None:
                    self.save_config(config)
            except WriteError:  # config.json could not be written (save_config names it)
                self.release()
                raise
            except OSError as exc:
                self.release()
                raise write_error(self.checkpoints_path, exc, "write to") from None
            if lock:
                self._remove_temporary_files()
            return
        lineage = None
        if fork_exp is not None:
            self.parent_dir = self._existing(fork_exp)
            lineage = self._choose_parent(fork_exp, parent, config)
        self._dir = self._create_new(config, lineage)
        self.name = self._dir.name

    # -- names and directories -------------------------------------------------------
    def _existing(self, name: str) -> Path:
        return existing_experiment_dir(self.base_dir, name)

    def _refuse_directories_as_files(self) -> None:
        refuse_directories_as_files(self._dir)

    def _choose_parent(self, fork_exp: str, parent: Any, config: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        """Pick (or take) the parent's checkpoint; return the lineage record."""
        if parent is None:
            parent = CheckpointManager(self.parent_dir / CHECKPOINTS_DIR, read_only=True).latest_valid()
            if parent.path is None:
                detail = f" ({'; '.join(parent.problems)})" if parent.problems else ""
                raise ExperimentError(
                    f"Experiment {fork_exp!r} has no valid checkpoint{detail}; there is nothing to fork from."
                )
        self.parent_checkpoint, self.parent_state = Path(parent.path), parent.payload
        record = {
            "parent": fork_exp,
            "epoch": int(parent.entry["epoch"]),
            "step": int(parent.entry["step"]),
            "checkpoint": str(parent.path),
            "sha256": parent.entry["sha256"],
        }
        try:
            parent_config = read_experiment_config(self.parent_dir)
        except ExperimentError:
            parent_config = {}
        if parent_config.get("data_fingerprint") or (config or {}).get("data_fingerprint"):
            record["parent_data_fingerprint"] = parent_config.get("data_fingerprint")
            record["data_fingerprint"] = (config or {}).get("data_fingerprint")
        return record

    def _create_new(self, config: Optional[Dict[str, Any]], lineage: Optional[Dict[str, Any]]) -> Path:
        """Build the experiment in a hidden staging directory, then rename it to the next
        free ``expN``; on any failure nothing visible is left."""
        try:
            self.base_dir.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise ExperimentError(
                f"The runs directory {self.base_dir} is a file, not a directory; pass --runs-dir DIR."
            ) from None
        except OSError as exc:
            raise write_error(self.base_dir, exc, "create the runs directory") from None
        self._remove_stale_staging()
        staging = self.base_dir / f".new-exp{TEMP_MARKER}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            os.mkdir(staging)
            os.mkdir(staging / CHECKPOINTS_DIR)
            if config is not None:
                atomic_write_text(staging / CONFIG_FILE, _dumps(config))
            if lineage is not None:
                atomic_write_text(staging / LINEAGE_FILE, _dumps(lineage))
            handle = self._lock_handle(staging) if self._lock_wanted else None
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise write_error(self.base_dir, exc, "create a new experiment in") from None
        numbers = [int(m.group(1)) for n in os.listdir(self.base_dir) if (m := EXP_NUMBER.match(n))]
        number = max(numbers, default=0) + 1
        while True:
            path = self.base_dir / f"exp{number}"
            try:
                if path.exists() or path.is_symlink():
                    raise FileExistsError(errno.EEXIST, "exists")
                os.rename(staging, path)  # atomic: the experiment appears complete
                break
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
                    number += 1
                    continue
                if handle is not None:
                    handle.close()
                shutil.rmtree(staging, ignore_errors=True)
                raise write_error(self.base_dir, exc, "create a new experiment in") from None
        fsync_directory_quietly(self.base_dir)
        if handle is not None:
            HELD_LOCKS[os.path.realpath(path)] = handle
        return path

    def _remove_stale_staging(self) -> None:
        """Delete staging directories left by processes that died while creating one."""
        remove_stale_temporaries(self.base_dir, ("new-exp",))

    # -- locking ---------------------------------------------------------------------
    def _lock_handle(self, directory: Path):
        """Open and lock ``directory/.lock``; returns the open file (None without fcntl)."""
        if fcntl is None:
            return None
        handle = open(directory / LOCK_FILE, "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise ExperimentError(
                f"Experiment {directory.name!r} is in use by process {holder}; wait for it to finish or stop it first."
            ) from None
        # The OS releases the lock when the process dies, so a stale file never blocks.
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        return handle

    def _acquire_lock(self, directory: Path) -> None:
        key = os.path.realpath(directory)
        if key in HELD_LOCKS:
            return
        try:
            handle = self._lock_handle(directory)
        except ExperimentError:
            raise
        except OSError as exc:
            raise write_error(directory / LOCK_FILE, exc, "lock") from None
        if handle is not None:
            HELD_LOCKS[key] = handle

    def _remove_temporary_files(self) -> None:
        """Only the lock holder cleans: another process's save could be in flight."""
        for folder in (self._dir, self.checkpoints_path):
            try:
                leftovers = [p for p in folder.iterdir() if is_temp_file(p)]
            except OSError:
                continue
            for leftover in leftovers:
                try:
                    leftover.unlink()
                except OSError:
                    pass

    def reacquire(self) -> None:
        """Take the lock again after ``release`` (``Trainer.train`` calls this, so a
        notebook can train, let ``train.py --resume`` run, and train again).

        Raises:
            ExperimentError: another process holds it now.
        """
        if self._lock_wanted:
            self._acquire_lock(self._dir)

    def release(self) -> None:
        """Release the experiment lock (also released when the process exits)."""
        handle = HELD_LOCKS.pop(os.path.realpath(self._dir), None)
        if handle is not None:
            handle.close()

    # -- records ---------------------------------------------------------------------
    def _write(self, path: Path, text: str, what: str) -> None:
        try:
            atomic_write_text(path, text)
        except OSError as exc:
            raise write_error(path, exc, f"write the {what}") from None

    def save_config(self, config: Dict[str, Any]) -> None:
        """Write ``config.json`` (raises ``WriteError``; the old file stays on failure)."""
        self._write(Path(self.config_file), _dumps(config), "configuration")

    def load_config(self) -> Dict[str, Any]:
        """The saved configuration of this experiment."""
        return read_experiment_config(self._dir)

    def write_status(self, state: str, **details: Any) -> None:
        """Write ``status.json`` (raises ``WriteError``)."""
        record = {"state": state, "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "pid": os.getpid(), **details}
        self._write(self._dir / STATUS_FILE, json.dumps(record, indent=2, allow_nan=False) + "\n", "status")

    def read_status(self) -> Optional[Dict[str, Any]]:
        """The recorded status; a "running" record whose process is gone reads "killed".

        Returns None when there is no status file; a damaged one (not JSON, the wrong
        shape, a directory) reads ``{"state": "damaged", "error": why}``, so it is reported,
        never silently taken for another state.
        """
        try:
            status = read_json_object(self._dir / STATUS_FILE, "status")
        except FileNotFoundError:
            return None
        except ExperimentError as exc:
            return {"state": "damaged", "error": str(exc)}
        if not isinstance(status.get("state"), str):
            return {"state": "damaged", "error": f"{self._dir / STATUS_FILE} records no state."}
        other_process = status.get("pid") != os.getpid()
        holding_lock = os.path.realpath(self._dir) in HELD_LOCKS  # then no one else can be running here
        if status.get("state") == "running" and other_process and (holding_lock or not pid_alive(status.get("pid"))):
            status["state"] = "killed"
        return status

    def __repr__(self) -> str:
        return f"ExperimentManager({str(getattr(self, '_dir', None))!r})"


def _dumps(record: Dict[str, Any]) -> str:
    return json.dumps(record, indent=2, sort_keys=True, allow_nan=False) + "\n"


def fsync_directory_quietly(directory: Path) -> None:

    fsync_directory(directory)

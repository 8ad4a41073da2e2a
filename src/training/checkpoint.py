"""CheckpointManager: checkpoint file names, crash-safe writes, verification, loading
(the file-level reading, verifying and unpickling live in ``checkpoint_files.py``).

Each checkpoint ``X.pt`` has a manifest ``X.pt.manifest.json`` listing the SHA-256, size,
epoch and global step of the content(s) that may legitimately be at ``X.pt``. A save:

1. writes the new bytes to a temporary file and fsyncs it;
2. writes the manifest listing both the current and the new content;
3. renames the temporary file over ``X.pt``;
4. writes the manifest listing only the new content.

A crash at any point leaves ``X.pt`` matching its manifest, so a truncated, empty or
bit-flipped file is always detected and never mistaken for a good one. "Latest" is
chosen by the recorded (epoch, step), never by file modification times.

Loading reads the file's bytes once, checks them against the manifest, and unpickles
those very bytes with ``torch.load(weights_only=True)``: a checkpoint cannot run code, a
file replaced while it is read is never half-trusted, and the SHA-256 of what was loaded
is known (a fork records it). The manifest's claims must agree with the payload (epoch,
step); a file whose manifest says otherwise is damaged.

Only the process holding an experiment's lock writes or deletes inside it: a manager
opened with ``read_only=True`` (resume look-ups, forks, listings) creates and removes
nothing, and temporary files are only cleaned by the lock holder (or in a directory that
belongs to no experiment).
"""

from __future__ import annotations

import hashlib
import io
import math
import warnings
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import torch
import torch.nn as nn

from ..errors import ConfigError, BadInputError, NonFiniteLossError
from ..layout import BEST_MODEL, EPOCH_CHECKPOINT, EPOCH_FILE, LATEST_CHECKPOINT  # noqa: F401 (re-exported)
from ..utils.io import atomic_write_bytes, is_temp_file
from . import state_keys as keys
from .early_stopping import is_improvement
from .checkpoint_files import (  # noqa: F401  (re-exported: part of this module's API)
    CheckpointCorruptError,
    CheckpointError,
    CheckpointSaveError,
    _finite,
    _identity,
    _match_manifest,
    _may_clean,
    _read_bytes,
    _reason,
    _unpickle,
    library_versions,
    load_model_state,
    non_finite_tensors,
    sha256_file,
)
from .manifest import manifest_path, newest_claim, read_manifest, write_manifest
from .protocols import model_config

FORMAT_VERSION = 1


class LoadedCheckpoint(NamedTuple):
    """What ``CheckpointManager.latest_valid`` found: the file, its contents, the manifest
    entry (with the SHA-256 of the very bytes loaded), and one warning per bad file."""

    path: Optional[Path]
    payload: Optional[Dict[str, Any]]
    entry: Optional[Dict[str, Any]]
    problems: List[str]


class CheckpointManager:
    """Owns the files in ``checkpoints_dir``.

    Args:
        checkpoints_dir: the directory (created if missing).
        save_frequency: ``save_epoch_checkpoint`` is written every this many epochs
            (0 disables epoch checkpoints).
        keep_last: keep only the newest this many ``epoch_N.pt`` files (0 keeps all);
            best and latest are always kept.
    """

    def __init__(self, checkpoints_dir: str, save_frequency: int = 10, keep_last: int = 0, *, read_only: bool = False):
        for name, value in (("save_frequency", save_frequency), ("keep_last", keep_last)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{name} must be a non-negative integer, got {value!r}.")
        self.checkpoints_dir = Path(checkpoints_dir)
        self.read_only = read_only
        if self.checkpoints_dir.exists() and not self.checkpoints_dir.is_dir():
            raise BadInputError(
                f"{self.checkpoints_dir} is a file, not a directory; move it away so checkpoints can be kept there."
            )
        if not read_only:
            try:
                self.checkpoints_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise CheckpointSaveError(f"Could not create {self.checkpoints_dir}: {exc.strerror or exc}.") from None
        self.save_frequency = save_frequency
        self.keep_last = keep_last
        # The best so far comes from the files, so a manager reopened on a run never
        # replaces a better best_model.pt (restored state overrides it).
        self.best_accuracy: Optional[float] = self._best_accuracy_on_disk()
        if not read_only and _may_clean(self.checkpoints_dir):
            self.remove_temporary_files()

    # -- paths ---------------------------------------------------------------------
    @property
    def best_path(self) -> Path:
        return self.checkpoints_dir / BEST_MODEL

    @property
    def latest_path(self) -> Path:
        return self.checkpoints_dir / LATEST_CHECKPOINT

    def epoch_path(self, epoch: int) -> Path:
        return self.checkpoints_dir / EPOCH_CHECKPOINT.format(epoch)

    def _best_accuracy_on_disk(self, verify: bool = False) -> Optional[float]:
        """The accuracy recorded for ``best_model.pt`` (manifest, else the payload), or None;
        ``verify``: the payload's own, and None unless the file verifies (a claim that decides)."""
        if not self.best_path.is_file():
            return None
        entries, _ = read_manifest(self.best_path)
        if entries and entries[-1].get("accuracy") is not None and not verify:
            return float(entries[-1]["accuracy"])
        try:  # a manifest from before accuracies were recorded: read the file once
            accuracy = self._load_verified(self.best_path)[0].get(keys.ACCURACY)
        except CheckpointError:
            return None
        return float(accuracy) if isinstance(accuracy, (int, float)) and math.isfinite(accuracy) else None

    def remove_temporary_files(self) -> List[Path]:
        """Delete temporary files left by a save that was killed; returns them. Only the
        lock holder of an experiment may call this (another process's save may be in flight)."""
        if not self.checkpoints_dir.is_dir():
            return []
        removed = [p for p in self.checkpoints_dir.iterdir() if is_temp_file(p)]
        for path in removed:
            try:
                path.unlink()
            except OSError:
                pass
        return removed

    # -- saving --------------------------------------------------------------------
    def build_payload(
        self,
        model: nn.Module,
        optimizer: Optional[torch.optim.Optimizer],
        epoch: int,
        loss: float,
        accuracy: float,
        additional_info: Optional[Dict[str, Any]] = None,
    ) -> Dict[str, Any]:
        payload: Dict[str, Any] = {
            keys.FORMAT_VERSION: FORMAT_VERSION,
            keys.EPOCH: int(epoch),
            keys.MODEL: model.state_dict(),
            keys.OPTIMIZER: optimizer.state_dict() if optimizer is not None else None,
            keys.LOSS: float(loss),
            keys.ACCURACY: float(accuracy),
            keys.MODEL_CONFIG: model_config(model),
            keys.VERSIONS: library_versions(),
        }
        payload.update(additional_info or {})
        payload.setdefault(keys.GLOBAL_STEP, 0)
        return payload

    @staticmethod
    def serialize(payload: Dict[str, Any]) -> bytes:
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        return buffer.getvalue()

    def write_bytes(
        self,
        data: bytes,
        filepath: Path,
        epoch: int,
        step: int,
        digest: Optional[str] = None,
        accuracy: Optional[float] = None,
    ) -> Path:
        """Write serialized checkpoint bytes crash-safely with their manifest.

        Args:
            digest: the SHA-256 of ``data`` when the caller already has it.
            accuracy: the validation accuracy recorded in the manifest (best-model tracking).

        Raises:
            CheckpointSaveError: the write failed; the previous file is untouched.
        """
        if self.read_only:
            raise CheckpointSaveError(f"Refusing to write {filepath}: this checkpoint manager is read-only.")
        filepath = Path(filepath)
        digest = digest or hashlib.sha256(data).hexdigest()
        entry = {"sha256": digest, "size": len(data), "epoch": int(epoch), "step": int(step)}
        if accuracy is not None and math.isfinite(float(accuracy)):
            entry["accuracy"] = float(accuracy)
        previous = self._listed_entries(filepath)

        try:
            filepath.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(filepath, data, before_replace=lambda: write_manifest(filepath, previous + [entry]))
            write_manifest(filepath, [entry])
        except OSError as exc:
            raise CheckpointSaveError(
                f"Could not save checkpoint {filepath}: {exc.strerror or exc}; the previous checkpoints are intact. "
                "Free disk space or fix the directory's permissions, then resume the run."
            ) from exc
        return filepath

    @staticmethod
    def _listed_entries(path: Path) -> List[Dict[str, Any]]:
        """The entries the manifest of ``path`` lists now, to carry into the transitional
        manifest. Not re-verified (hashing the old file would cost a full read): a damaged
        file matches none of them anyway, so listing them cannot make it pass. All are
        kept, up to 4, because after a crash inside a save the file in place may be the
        one before the newest entry."""
        entries = read_manifest(path)[0] if path.exists() else None
        return list(entries)[-4:] if entries else []

    def save_checkpoint(self, model, optimizer, epoch, loss, accuracy, filepath, additional_info=None) -> Path:
        """Save a checkpoint to ``filepath`` (crash-safe, with a manifest beside it)."""
        payload = self.build_payload(model, optimizer, epoch, loss, accuracy, additional_info)
        self._refuse_non_finite(payload, filepath)
        return self.write_bytes(
            self.serialize(payload), Path(filepath), payload[keys.EPOCH], payload[keys.GLOBAL_STEP], accuracy=accuracy
        )

    @staticmethod
    def _refuse_non_finite(payload: Dict[str, Any], filepath) -> None:
        """No checkpoint ever holds a NaN or infinite model: the last good one stays."""
        bad = non_finite_tensors(payload[keys.MODEL])
        if bad:
            raise NonFiniteLossError(
                f"Refusing to save {filepath}: the model holds NaN or infinite values ({', '.join(bad[:3])}"
                + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
                + "); the previous checkpoints are kept."
            )

    def save_best_model(self, model, optimizer, epoch, loss, accuracy, additional_info=None) -> bool:
        """Save ``best_model.pt`` if ``accuracy`` beats the best so far; returns True if saved."""
        if not _finite(accuracy) or not is_improvement(accuracy, self.best_accuracy):
            return False
        self.save_checkpoint(model, optimizer, epoch, loss, accuracy, self.best_path, additional_info)
        self.best_accuracy = float(accuracy)
        return True

    def save_latest_checkpoint(self, model, optimizer, epoch, loss, accuracy, additional_info=None) -> Path:
        """Save ``latest_checkpoint.pt`` (overwrites the previous one)."""
        return self.save_checkpoint(model, optimizer, epoch, loss, accuracy, self.latest_path, additional_info)

    def save_epoch_checkpoint(self, model, optimizer, epoch, loss, accuracy, additional_info=None) -> Path:
        """Save ``epoch_{epoch}.pt`` and apply the ``keep_last`` retention."""
        path = self.save_checkpoint(model, optimizer, epoch, loss, accuracy, self.epoch_path(epoch), additional_info)
        self.prune_epoch_checkpoints()
        return path

    def save_epoch_end(self, model, optimizer, epoch, loss, accuracy, additional_info=None) -> Dict[str, bool]:
        """The end-of-epoch save: latest always, best when improved, ``epoch_N`` every
        ``save_frequency`` epochs; serializes once. Returns which files were written."""
        payload = self.build_payload(model, optimizer, epoch, loss, accuracy, additional_info)
        self._refuse_non_finite(payload, self.latest_path)
        is_best = _finite(accuracy) and is_improvement(accuracy, self.best_accuracy)
        if is_best and isinstance(payload.get(keys.CHECKPOINT_MANAGER), dict):
            # The state was captured before this save: record this epoch's best in it, or a
            # resume from this file would let a worse epoch replace best_model.pt.
            payload[keys.CHECKPOINT_MANAGER] = {**payload[keys.CHECKPOINT_MANAGER], "best_accuracy": float(accuracy)}
        data, step = self.serialize(payload), payload[keys.GLOBAL_STEP]
        digest = hashlib.sha256(data).hexdigest()  # one hash for every copy
        # Epoch and best files first: if the disk fills, "latest" still names the
        # previous, complete state.
        wrote_epoch = self.save_frequency > 0 and epoch % self.save_frequency == 0
        if wrote_epoch:
            self.write_bytes(data, self.epoch_path(epoch), epoch, step, digest, accuracy)
            self.prune_epoch_checkpoints()
        if is_best:
            self.write_bytes(data, self.best_path, epoch, step, digest, accuracy)
            self.best_accuracy = float(accuracy)
        self.write_bytes(data, self.latest_path, epoch, step, digest, accuracy)
        return {"latest": True, "best": is_best, "epoch": wrote_epoch}

    def prune_epoch_checkpoints(self) -> List[Path]:
        """Delete all but the newest ``keep_last`` epoch checkpoints (by recorded epoch)."""
        if not self.keep_last or self.read_only:
            return []
        epoch_files = sorted(
            (int(m.group(1)), p) for p in self.checkpoints_dir.iterdir() if (m := EPOCH_FILE.match(p.name))
        )
        doomed = [p for _, p in epoch_files[: max(0, len(epoch_files) - self.keep_last)]]
        for path in doomed:
            for victim in (path, manifest_path(path)):
                try:
                    victim.unlink()
                except OSError:  # gone already, or not removable now: retried after the next save
                    pass
        return doomed

    # -- verification and loading ---------------------------------------------------
    def verify(self, filepath: Path) -> Tuple[bool, str, Optional[Dict[str, Any]]]:
        """Check ``filepath`` against its manifest: ``(ok, reason, manifest entry)``."""
        filepath = Path(filepath)
        try:
            data = _read_bytes(filepath)
        except CheckpointError as exc:
            return False, str(exc), None
        return _match_manifest(filepath, data)

    def _load_verified(self, filepath: Path) -> Tuple[Dict[str, Any], Dict[str, Any]]:
        """Read ``filepath`` once, check the bytes against the manifest, unpickle those
        bytes safely and check the manifest's claims against the payload.

        Returns ``(payload, manifest entry)``. Raises ``CheckpointCorruptError``."""
        filepath = Path(filepath)
        for _ in range(3):  # a file replaced while it was read (the lock holder saving) is read again
            before = _identity(filepath)
            data = _read_bytes(filepath)
            ok, reason, entry = _match_manifest(filepath, data)
            if ok or _identity(filepath) == before:
                break  # a file that stayed in place and does not match is damaged
        if not ok:
            raise CheckpointCorruptError(f"Checkpoint {filepath} is corrupt ({reason}).")
        payload = _unpickle(filepath, data)
        claimed = (entry["epoch"], entry["step"])
        holds = (payload.get(keys.EPOCH), payload.get(keys.GLOBAL_STEP, 0))
        if claimed != holds:
            raise CheckpointCorruptError(
                f"Checkpoint {filepath} is inconsistent (its manifest claims epoch {claimed[0]}, step {claimed[1]}; "
                f"the file holds epoch {holds[0]}, step {holds[1]})."
            )
        return payload, entry

    def read(self, filepath: Path, verify: bool = True) -> Dict[str, Any]:
        """Load a checkpoint dict (on the CPU) after verifying it.

        A file without a manifest (saved by other code) is loaded unverified with a warning.

        Raises:
            CheckpointCorruptError: the file fails verification or cannot be unpickled
                safely (including a pickle that tries to run code).
        """
        filepath = Path(filepath)
        if verify and manifest_path(filepath).exists():
            return self._load_verified(filepath)[0]
        data = _read_bytes(filepath)
        if verify:
            warnings.warn(f"Checkpoint {filepath} has no manifest; loading it unverified.", stacklevel=2)
        return _unpickle(filepath, data)

    def candidates(self) -> List[Path]:
        """Every checkpoint file in the directory."""
        if not self.checkpoints_dir.is_dir():
            return []
        return sorted(p for p in self.checkpoints_dir.glob("*.pt") if not is_temp_file(p) and p.is_file())

    def find_latest_valid(self) -> Tuple[Optional[Path], Optional[Dict[str, Any]], List[str]]:
        """``(path, payload, warnings)`` of ``latest_valid()``."""
        found = self.latest_valid()
        return found.path, found.payload, found.problems

    def latest_valid(self) -> LoadedCheckpoint:
        """The newest valid checkpoint by recorded (epoch, step), its contents, its
        manifest entry, and one warning per bad file that was passed over.

        Files are hashed newest-claim first (claims come from the manifests) and the
        search stops once no remaining file can hold a newer state, so a resume does not
        read every old ``epoch_N.pt``. A file whose manifest disagrees with its payload is
        passed over like a damaged one. Path and payload are None when no checkpoint is valid.
        """
        preference = {LATEST_CHECKPOINT: 2, BEST_MODEL: 0}
        problems: List[str] = []
        claims: List[Tuple[Tuple[int, int, int], Path]] = []
        for path in self.candidates():
            entries, reason = read_manifest(path)
            if entries is None:
                if path.exists():  # not one pruned since it was listed
                    problems.append(f"{path.name}: {reason}")
                continue
            claims.append(((*newest_claim(entries), preference.get(path.name, 1)), path))
        best_key: Optional[Tuple[int, int, int]] = None
        best = LoadedCheckpoint(None, None, None, problems)
        for claim, path in sorted(claims, reverse=True):
            if best_key is not None and claim <= best_key:
                break  # this file and all after it claim nothing newer than what was found
            try:
                payload, entry = self._load_verified(path)
            except CheckpointError as exc:
                if path.exists():  # one removed meanwhile (pruned by the lock holder) is not damage
                    problems.append(f"{path.name}: {_reason(exc, path)}")
                continue
            # After a crash inside a save, a file may hold an older entry than it claims.
            key = (entry["epoch"], entry["step"], preference.get(path.name, 1))
            if best_key is not None and key <= best_key:
                continue
            best_key, best = key, LoadedCheckpoint(path, payload, entry, problems)
        return best

    def load_checkpoint(
        self, filepath, model: nn.Module, optimizer: Optional[torch.optim.Optimizer] = None, strict: bool = True
    ) -> Dict[str, Any]:
        """Load weights (and optimizer state) from ``filepath`` into ``model``.

        With ``strict=False`` the tensors whose name and shape match are loaded and the
        rest is reported; the optimizer state is only restored when every layer matched.

        Returns:
            ``{'epoch', 'loss', 'accuracy', 'fully_restored', 'loaded_layers',
            'total_layers', 'skipped'}``.

        Raises:
            CheckpointError: with ``strict=True``, if any key or shape differs (all are
                listed); nothing is loaded in that case.
        """
        payload = self.read(Path(filepath))
        report = load_model_state(model, payload[keys.MODEL], strict=strict, source=str(filepath))
        if optimizer is not None and report["fully_restored"] and payload.get(keys.OPTIMIZER):
            optimizer.load_state_dict(payload[keys.OPTIMIZER])
        return {
            "epoch": payload.get(keys.EPOCH, 0),
            "loss": payload.get(keys.LOSS),
            "accuracy": payload.get(keys.ACCURACY),
            **report,
        }

    # -- state ---------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        return {"best_accuracy": self.best_accuracy}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore the best accuracy so far; a better ``best_model.pt`` already on disk
        (the state restored is older than it) still wins, so it is never replaced by a worse one."""
        restored, on_disk = state.get("best_accuracy"), self._best_accuracy_on_disk()
        if _finite(on_disk) and not (_finite(restored) and restored >= on_disk):
            # The manifest's claim would win: only a best_model.pt that verifies, and holds
            # that accuracy, may keep a better restored state from replacing it.
            on_disk = self._best_accuracy_on_disk(verify=True)
        known = [v for v in (restored, on_disk) if _finite(v)]
        self.best_accuracy = float(max(known)) if known else None


__all__ = [
    "BEST_MODEL",
    "EPOCH_CHECKPOINT",
    "FORMAT_VERSION",
    "LATEST_CHECKPOINT",
    "CheckpointCorruptError",
    "CheckpointError",
    "CheckpointManager",
    "CheckpointSaveError",
    "LoadedCheckpoint",
    "library_versions",
    "load_model_state",
    "manifest_path",
    "non_finite_tensors",
    "sha256_file",
]

"""CheckpointManager: checkpoint file names, crash-safe writes, verification, loading.

Each checkpoint ``X.pt`` has a manifest ``X.pt.manifest.json`` listing the SHA-256, size,
epoch and global step of the content(s) that may legitimately be at ``X.pt``. A save:

1. writes the new bytes to a temporary file and fsyncs it;
2. writes the manifest listing both the current and the new content;
3. renames the temporary file over ``X.pt``;
4. writes the manifest listing only the new content.

A crash at any point leaves ``X.pt`` matching its manifest, so a truncated, empty or
bit-flipped file is always detected and never mistaken for a good one. "Latest" is
chosen by the recorded (epoch, step), never by file modification times.

Loading uses ``torch.load(weights_only=True)``: a checkpoint cannot run code.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import pickle
import re
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from ..utils.io import atomic_write_bytes, atomic_write_text, is_temp_file
from . import state_keys as keys
from .early_stopping import is_improvement

FORMAT_VERSION = 1
BEST_MODEL = "best_model.pt"
LATEST_CHECKPOINT = "latest_checkpoint.pt"
EPOCH_CHECKPOINT = "epoch_{}.pt"
MANIFEST_SUFFIX = ".manifest.json"
_EPOCH_FILE = re.compile(r"^epoch_(\d+)\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be saved, verified or loaded; the message says why."""


class CheckpointSaveError(CheckpointError):
    """A save failed (disk full, unwritable directory); older checkpoints are intact."""


class CheckpointCorruptError(CheckpointError):
    """A checkpoint file is damaged, does not match its manifest, or is not loadable."""


def manifest_path(path: Path) -> Path:
    return path.with_name(path.name + MANIFEST_SUFFIX)


def _read_manifest(path: Path) -> Optional[Dict[str, Any]]:
    try:
        return json.loads(manifest_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def library_versions() -> Dict[str, Optional[str]]:
    """Versions of this project, torch and numpy, and the git commit of the code (or None)."""
    import numpy

    from .. import __version__

    return {"exptrain": __version__, "torch": str(torch.__version__), "numpy": str(numpy.__version__),
            "git_commit": _git_commit()}


@functools.lru_cache(maxsize=1)
def _git_commit() -> Optional[str]:
    """The commit of the checkout this code runs from, "+dirty" when it has local changes."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5)
        return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


class CheckpointManager:
    """Owns the files in ``checkpoints_dir``.

    Args:
        checkpoints_dir: the directory (created if missing).
        save_frequency: ``save_epoch_checkpoint`` is written every this many epochs
            (0 disables epoch checkpoints).
        keep_last: keep only the newest this many ``epoch_N.pt`` files (0 keeps all);
            best and latest are always kept.
    """

    def __init__(self, checkpoints_dir: str, save_frequency: int = 10, keep_last: int = 0):
        if not isinstance(save_frequency, int) or save_frequency < 0:
            raise ValueError(f"save_frequency must be a non-negative integer, got {save_frequency!r}.")
        if not isinstance(keep_last, int) or keep_last < 0:
            raise ValueError(f"keep_last must be a non-negative integer, got {keep_last!r}.")
        self.checkpoints_dir = Path(checkpoints_dir)
        self.checkpoints_dir.mkdir(parents=True, exist_ok=True)
        self.save_frequency = save_frequency
        self.keep_last = keep_last
        self.best_accuracy: Optional[float] = None
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

    def remove_temporary_files(self) -> List[Path]:
        """Delete temporary files left by a save that was killed; returns them."""
        removed = [p for p in self.checkpoints_dir.iterdir() if is_temp_file(p)]
        for path in removed:
            try:
                path.unlink()
            except OSError:
                pass
        return removed

    # -- saving --------------------------------------------------------------------
    def build_payload(self, model: nn.Module, optimizer: Optional[torch.optim.Optimizer], epoch: int,
                      loss: float, accuracy: float, additional_info: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        payload: Dict[str, Any] = {
            keys.FORMAT_VERSION: FORMAT_VERSION,
            keys.EPOCH: int(epoch),
            keys.MODEL: model.state_dict(),
            keys.OPTIMIZER: optimizer.state_dict() if optimizer is not None else None,
            keys.LOSS: float(loss),
            keys.ACCURACY: float(accuracy),
            keys.MODEL_CONFIG: getattr(model, "model_config", None),
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

    def write_bytes(self, data: bytes, filepath: Path, epoch: int, step: int, digest: Optional[str] = None) -> Path:
        """Write serialized checkpoint bytes crash-safely with their manifest.

        Args:
            digest: the SHA-256 of ``data`` when the caller already has it.

        Raises:
            CheckpointSaveError: the write failed; the previous file is untouched.
        """
        filepath = Path(filepath)
        digest = digest or hashlib.sha256(data).hexdigest()
        entry = {"sha256": digest, "size": len(data), "epoch": int(epoch), "step": int(step)}
        previous = self._listed_entries(filepath)

        def write_manifest(entries: List[Dict[str, Any]]) -> None:
            atomic_write_text(manifest_path(filepath), json.dumps({"format_version": FORMAT_VERSION, "entries": entries}))

        try:
            filepath.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(filepath, data, before_replace=lambda: write_manifest(previous + [entry]))
            write_manifest([entry])
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
        manifest = _read_manifest(path) if path.exists() else None
        return list(manifest.get("entries", []))[-4:] if manifest else []

    def _current_entry(self, path: Path) -> Optional[Dict[str, Any]]:
        """The manifest entry matching the bytes at ``path`` now (size, then SHA-256)."""
        if not path.exists():
            return None
        manifest = _read_manifest(path)
        if not manifest:
            return None
        size = path.stat().st_size
        candidates = [e for e in manifest.get("entries", []) if e.get("size") == size]
        if not candidates:
            return None
        digest = sha256_file(path)
        return next((e for e in candidates if e["sha256"] == digest), None)

    def save_checkpoint(self, model, optimizer, epoch, loss, accuracy, filepath, additional_info=None) -> Path:
        """Save a checkpoint to ``filepath`` (crash-safe, with a manifest beside it)."""
        payload = self.build_payload(model, optimizer, epoch, loss, accuracy, additional_info)
        return self.write_bytes(self.serialize(payload), Path(filepath), payload[keys.EPOCH], payload[keys.GLOBAL_STEP])

    def save_best_model(self, model, optimizer, epoch, loss, accuracy, additional_info=None) -> bool:
        """Save ``best_model.pt`` if ``accuracy`` beats the best so far; returns True if saved."""
        if not is_improvement(accuracy, self.best_accuracy):
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
        data, step = self.serialize(payload), payload[keys.GLOBAL_STEP]
        digest = hashlib.sha256(data).hexdigest()  # one hash for every copy
        # Epoch and best files first: if the disk fills, "latest" still names the
        # previous, complete state.
        wrote_epoch = self.save_frequency > 0 and epoch % self.save_frequency == 0
        if wrote_epoch:
            self.write_bytes(data, self.epoch_path(epoch), epoch, step, digest)
            self.prune_epoch_checkpoints()
        is_best = is_improvement(accuracy, self.best_accuracy)
        if is_best:
            self.write_bytes(data, self.best_path, epoch, step, digest)
            self.best_accuracy = float(accuracy)
        self.write_bytes(data, self.latest_path, epoch, step, digest)
        return {"latest": True, "best": is_best, "epoch": wrote_epoch}

    def prune_epoch_checkpoints(self) -> List[Path]:
        """Delete all but the newest ``keep_last`` epoch checkpoints (by recorded epoch)."""
        if not self.keep_last:
            return []
        epoch_files = sorted(
            (int(m.group(1)), p) for p in self.checkpoints_dir.iterdir() if (m := _EPOCH_FILE.match(p.name))
        )
        doomed = [p for _, p in epoch_files[: max(0, len(epoch_files) - self.keep_last)]]
        for path in doomed:
            for victim in (path, manifest_path(path)):
                try:
                    victim.unlink()
                except FileNotFoundError:
                    pass
        return doomed

    # -- verification and loading ---------------------------------------------------
    def verify(self, filepath: Path) -> Tuple[bool, str, Optional[Dict[str, Any]]]:
        """Check ``filepath`` against its manifest: ``(ok, reason, manifest entry)``."""
        filepath = Path(filepath)
        if not filepath.exists():
            return False, "missing", None
        size = filepath.stat().st_size
        if size == 0:
            return False, "empty file", None
        manifest = _read_manifest(filepath)
        if manifest is None:
            return False, "no manifest (written by an interrupted save or by another tool)", None
        entry = self._current_entry(filepath)
        if entry is None:
            sizes = sorted({e.get("size") for e in manifest.get("entries", [])})
            reason = "checksum mismatch" if size in sizes else f"size {size} bytes, expected {' or '.join(map(str, sizes))}"
            return False, reason, None
        return True, "ok", entry

    def read(self, filepath: Path, verify: bool = True) -> Dict[str, Any]:
        """Load a checkpoint dict (on the CPU) after verifying it.

        A file without a manifest (saved by other code) is loaded unverified with a warning.

        Raises:
            CheckpointCorruptError: the file fails verification or cannot be unpickled
                safely (including a pickle that tries to run code).
        """
        filepath = Path(filepath)
        if not filepath.exists():
            raise CheckpointError(f"Checkpoint {filepath} does not exist.")
        if verify and manifest_path(filepath).exists():
            ok, reason, _ = self.verify(filepath)
            if not ok:
                raise CheckpointCorruptError(f"Checkpoint {filepath} is corrupt ({reason}).")
        elif verify:
            warnings.warn(f"Checkpoint {filepath} has no manifest; loading it unverified.", stacklevel=2)
        try:
            payload = torch.load(filepath, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            found = re.search(r"(?:Unsupported global: |unsupported )GLOBAL ([\w.]+)", str(exc))
            culprit = found.group(1) if found else str(exc).splitlines()[0]
            raise CheckpointCorruptError(
                f"Checkpoint {filepath} was refused: it holds a Python object that safe loading does not allow "
                f"({culprit}); it was not loaded and none of its code ran."
            ) from None
        except (RuntimeError, EOFError, OSError, ValueError) as exc:
            raise CheckpointCorruptError(f"Checkpoint {filepath} cannot be read ({exc}).") from None
        if not isinstance(payload, dict) or keys.MODEL not in payload:
            raise CheckpointCorruptError(f"{filepath} is not a checkpoint of this project (no model_state_dict).")
        return payload

    def candidates(self) -> List[Path]:
        """Every checkpoint file in the directory."""
        return sorted(p for p in self.checkpoints_dir.glob("*.pt") if not is_temp_file(p))

    def find_latest_valid(self) -> Tuple[Optional[Path], Optional[Dict[str, Any]], List[str]]:
        """The newest valid checkpoint by recorded (epoch, step), its contents, and one
        warning per bad file that was passed over.

        Files are hashed newest-claim first (claims come from the manifests) and the
        search stops once no remaining file can hold a newer state, so a resume does not
        read every old ``epoch_N.pt``. Returns ``(None, None, warnings)`` when no
        checkpoint is valid.
        """
        preference = {LATEST_CHECKPOINT: 2, BEST_MODEL: 0}
        problems: List[str] = []
        claims: List[Tuple[Tuple[int, int, int], Path]] = []
        for path in self.candidates():
            entries = (_read_manifest(path) or {}).get("entries") or []
            if not entries:
                problems.append(f"{path.name}: no manifest (written by an interrupted save or by another tool)")
                continue
            newest = max((e.get("epoch", 0), e.get("step", 0)) for e in entries)
            claims.append(((*newest, preference.get(path.name, 1)), path))
        best_key: Optional[Tuple[int, int, int]] = None
        best_path, best_payload = None, None
        for claim, path in sorted(claims, reverse=True):
            if best_key is not None and claim <= best_key:
                break  # this file and all after it claim nothing newer than what was found
            ok, reason, entry = self.verify(path)
            if not ok:
                problems.append(f"{path.name}: {reason}")
                continue
            # After a crash inside a save, a file may hold an older entry than it claims.
            key = (entry["epoch"], entry["step"], preference.get(path.name, 1))
            if best_key is not None and key <= best_key:
                continue
            try:
                payload = self.read(path, verify=False)  # just verified: no second hash
            except CheckpointCorruptError as exc:
                problems.append(f"{path.name}: {exc}")
                continue
            best_key, best_path, best_payload = key, path, payload
        return best_path, best_payload, problems

    def load_checkpoint(self, filepath, model: nn.Module, optimizer: Optional[torch.optim.Optimizer] = None,
                        strict: bool = True) -> Dict[str, Any]:
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
        self.best_accuracy = state.get("best_accuracy")


def load_model_state(model: nn.Module, state: Dict[str, torch.Tensor], strict: bool, source: str = "checkpoint") -> Dict[str, Any]:
    """Load the entries of ``state`` that match ``model`` in name and shape.

    Raises:
        CheckpointError: with ``strict=True`` and any mismatch (nothing is loaded).
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    reshaped = [
        f"{k} (checkpoint {tuple(state[k].shape)}, model {tuple(own[k].shape)})"
        for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    skipped = [f"{k} (missing in checkpoint)" for k in missing] + [f"{k} (not in model)" for k in unexpected] + reshaped
    if strict and skipped:
        shown = "; ".join(skipped[:10]) + (f"; and {len(skipped) - 10} more" if len(skipped) > 10 else "")
        raise CheckpointError(
            f"{source} does not match the model: {shown}. Build the same model or load with strict=False."
        )
    matching = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    model.load_state_dict(matching, strict=False)
    return {
        "fully_restored": not skipped,
        "loaded_layers": len(matching),
        "total_layers": len(own),
        "skipped": skipped,
    }


def sha256_file(path: Path) -> str:
    """SHA-256 of a file (manifests, and the record of a fork's parent checkpoint)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()

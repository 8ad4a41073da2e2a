"""Checkpoint files: reading and verifying their bytes, and what a payload records.

``checkpoint.py``'s ``CheckpointManager`` decides what to save and which file to trust;
this module holds the parts that do not depend on that policy: reading a file's bytes
once (again if it was replaced while read), matching them against the manifest,
unpickling exactly those bytes with ``weights_only=True``, loading a model's state with
clear errors, the non-finite check every save makes, and the library versions a payload
records.
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
import os
import pickle
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from ..errors import CheckpointCorruptError, CheckpointError, CheckpointSaveError  # noqa: F401 (re-exported)
from . import state_keys as keys
from .. import __version__
from ..layout import LOCK_FILE, holds_lock, lock_is_free
from .manifest import read_manifest


def non_finite_tensors(state: Dict[str, Any]) -> List[str]:
    """Names of the floating-point tensors in ``state`` holding NaN or infinity."""
    bad = []
    for name, value in state.items():
        if torch.is_tensor(value) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad.append(name)
    return bad


def library_versions() -> Dict[str, Optional[str]]:
    """Versions of this project, torch and numpy, and the git commit of the code (or None)."""
    import numpy  # noqa: PLC0415 (only when a checkpoint is written; numpy comes with torch anyway)

    return {
        "exptrain": __version__,
        "torch": str(torch.__version__),
        "numpy": str(numpy.__version__),
        "git_commit": _git_commit(),
    }


@functools.lru_cache(maxsize=1)
def _git_commit() -> Optional[str]:
    """The commit of the checkout this code runs from, "+dirty" when it has local changes."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def load_model_state(
    model: nn.Module, state: Dict[str, torch.Tensor], strict: bool, source: str = "checkpoint"
) -> Dict[str, Any]:
    """Load the entries of ``state`` that match ``model`` in name and shape.

    Raises:
        CheckpointError: with ``strict=True`` and any mismatch (nothing is loaded).
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    reshaped = [
        f"{k} (checkpoint {tuple(state[k].shape)}, model {tuple(own[k].shape)})"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
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


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _may_clean(directory: Path) -> bool:
    """Temporary files in ``directory`` may be deleted by this process: it holds the
    experiment's lock, or no live process holds a lock on the directory above."""
    parent = directory.parent
    return holds_lock(parent) or lock_is_free(parent / LOCK_FILE)


def _identity(path: Path) -> Optional[Tuple[int, int, int]]:
    """Inode, size and modification time of ``path`` (None if it is gone): a change means it was replaced."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _read_bytes(filepath: Path) -> bytes:
    try:
        return filepath.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"Checkpoint {filepath} does not exist.") from None
    except OSError as exc:
        raise CheckpointCorruptError(f"Checkpoint {filepath} cannot be read ({exc.strerror or exc}).") from None


def _match_manifest(filepath: Path, data: bytes) -> Tuple[bool, str, Optional[Dict[str, Any]]]:
    """Check ``data`` (the bytes read from ``filepath``) against the manifest entries."""
    if not data:
        return False, "empty file", None
    entries, reason = read_manifest(filepath)
    if entries is None:
        return False, reason, None
    candidates = [e for e in entries if e["size"] == len(data)]
    if not candidates:
        sizes = sorted({e["size"] for e in entries})
        return False, f"size {len(data)} bytes, expected {' or '.join(map(str, sizes))}", None
    digest = hashlib.sha256(data).hexdigest()
    entry = next((e for e in candidates if e["sha256"] == digest), None)
    if entry is None:
        return False, "checksum mismatch", None
    return True, "ok", entry


def _unpickle(filepath: Path, data: bytes) -> Dict[str, Any]:
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"(?:Unsupported global: |unsupported )GLOBAL ([\w.]+)", str(exc))
        culprit = found.group(1) if found else str(exc).splitlines()[0]
        raise CheckpointCorruptError(
            f"Checkpoint {filepath} was refused: it holds a Python object that safe loading does not allow "
            f"({culprit}); it was not loaded and none of its code ran."
        ) from None
    except Exception as exc:  # torch raises many kinds for damaged archives
        raise CheckpointCorruptError(f"Checkpoint {filepath} cannot be read ({type(exc).__name__}: {exc}).") from None
    if not isinstance(payload, dict) or keys.MODEL not in payload or not isinstance(payload[keys.MODEL], dict):
        raise CheckpointCorruptError(f"{filepath} is not a checkpoint of this project (no model_state_dict).")
    epoch, step = payload.get(keys.EPOCH, 0), payload.get(keys.GLOBAL_STEP, 0)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (epoch, step)):
        raise CheckpointCorruptError(f"{filepath} records no valid epoch and step ({epoch!r}, {step!r}).")
    return payload


def _reason(exc: Exception, path: Path) -> str:
    """The part of a checkpoint error after the file name, for a one-line warning."""
    text = str(exc)
    for prefix in (f"Checkpoint {path} is corrupt (",):
        if text.startswith(prefix) and text.endswith(")."):
            return text[len(prefix) : -2]
    return text

"""Checkpoint manifests: ``X.pt.manifest.json`` beside each checkpoint ``X.pt``.

A manifest lists the content(s) that may legitimately be at ``X.pt``: SHA-256, size,
epoch and global step (and the validation accuracy, so the best model so far is known
without loading it). Reading is defensive: a manifest of the wrong shape (valid JSON that
is not the documented object, an entry with a string where a number belongs) is reported
as damaged, never trusted and never a traceback.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ..layout import MANIFEST_SUFFIX
from ..utils.io import atomic_write_text

MANIFEST_VERSION = 1
_HEX = set("0123456789abcdef")


def manifest_path(path: Path) -> Path:
    return Path(path).with_name(Path(path).name + MANIFEST_SUFFIX)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _valid_entry(entry: Any) -> bool:
    if not isinstance(entry, dict):
        return False
    digest = entry.get("sha256")
    accuracy = entry.get("accuracy")
    return (
        isinstance(digest, str)
        and len(digest) == 64
        and set(digest) <= _HEX
        and all(_is_int(entry.get(k)) for k in ("size", "epoch", "step"))
        and (
            accuracy is None
            or (isinstance(accuracy, (int, float)) and not isinstance(accuracy, bool) and math.isfinite(accuracy))
        )
    )


def read_manifest(path: Path) -> Tuple[Optional[List[Dict[str, Any]]], str]:
    """The entries of the manifest of checkpoint ``path``: ``(entries, "")``, or
    ``(None, reason)`` when it is missing, unreadable or of the wrong shape."""
    target = manifest_path(path)
    try:
        data = json.loads(target.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, "no manifest (written by an interrupted save or by another tool)"
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        return None, f"unreadable manifest {target.name} ({type(exc).__name__})"
    entries = data.get("entries") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries or not all(_valid_entry(e) for e in entries):
        return None, f"damaged manifest {target.name} (not a list of sha256/size/epoch/step entries)"
    return entries, ""


def write_manifest(path: Path, entries: List[Dict[str, Any]]) -> None:
    """Write the manifest of checkpoint ``path`` atomically (raises ``OSError``)."""
    atomic_write_text(manifest_path(path), json.dumps({"format_version": MANIFEST_VERSION, "entries": entries}))


def newest_claim(entries: List[Dict[str, Any]]) -> Tuple[int, int]:
    """The newest (epoch, step) a manifest claims."""
    return max((e["epoch"], e["step"]) for e in entries)
